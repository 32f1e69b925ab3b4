"""gf.load_attention on small checkpoints the tests write with known weights."""

import json
import math

import numpy as np
import pytest
from safetensors.numpy import save_file

import gaussflow as gf
from gaussflow.weights import read_attention

D, H, K = 6, 3, 2  # hidden size, heads, head size (H K = D)


def _weights(seed, prefix="bert.", layers=2, biases=True):
    rng = np.random.default_rng(seed)
    t = {}
    for n in range(layers):
        base = f"{prefix}encoder.layer.{n}.attention."
        for nm in ("query", "key", "value"):
            t[f"{base}self.{nm}.weight"] = rng.normal(size=(H * K, D))
            if biases:
                t[f"{base}self.{nm}.bias"] = rng.normal(size=H * K)
        t[f"{base}output.dense.weight"] = rng.normal(size=(D, H * K))
        if biases:
            t[f"{base}output.dense.bias"] = rng.normal(size=D)
    return t


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    t = _weights(0)
    save_file({k: v.astype(np.float32) for k, v in t.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": H}))
    return folder, {k: v.astype(np.float32).astype(np.float64) for k, v in t.items()}


def test_every_head_matches_the_checkpoint(ckpt):
    folder, t = ckpt
    f = gf.load_attention(folder, layer=1)  # heads from config.json
    assert isinstance(f, gf.MultiHead) and f.n_heads == H and f.dim == D
    p = "bert.encoder.layer.1.attention."
    for h, head in enumerate(f.heads):
        rows = slice(h * K, (h + 1) * K)
        np.testing.assert_array_equal(head.Q, t[p + "self.query.weight"][rows])
        np.testing.assert_array_equal(head.K, t[p + "self.key.weight"][rows])
        np.testing.assert_array_equal(head.V, t[p + "self.value.weight"][rows])
        np.testing.assert_array_equal(head.W_O, t[p + "output.dense.weight"][:, rows])
        assert float(head.beta) == pytest.approx(1 / math.sqrt(K), rel=1e-15)


def test_velocity_is_the_softmax_attention_of_the_layer(ckpt):
    """Mean-field velocity vs the layer computed directly on a large sample (biases dropped)."""
    folder, t = ckpt
    f = gf.load_attention(folder / "model.safetensors", layer=0, heads=H)
    p = "bert.encoder.layer.0.attention."
    Wq, Wk, Wv, Wo = (t[p + n] for n in ("self.query.weight", "self.key.weight",
                                         "self.value.weight", "output.dense.weight"))
    g = gf.Gaussian(np.zeros(D), 0.05 * np.eye(D))
    x = np.linspace(-0.3, 0.3, D)
    # exact Gaussian formula per head: W_O^h V_h (alpha + beta Sigma K_h^T Q_h x)
    expect = sum(Wo[:, s] @ Wv[s] @ (g.mean + np.asarray(g.cov) @ Wk[s].T @ Wq[s] @ x / math.sqrt(K))
                 for s in (slice(h * K, (h + 1) * K) for h in range(H)))
    np.testing.assert_allclose(np.asarray(f.velocity(g, x)), expect, rtol=1e-10, atol=1e-12)


def test_with_bias_adds_the_constant_velocity(ckpt):
    folder, t = ckpt
    rec = read_attention(folder, layer=0, with_bias=True)
    p = "bert.encoder.layer.0.attention."
    b = t[p + "output.dense.bias"] + t[p + "output.dense.weight"] @ t[p + "self.value.bias"]
    g = gf.Gaussian(np.ones(D), np.eye(D))
    plain = gf.load_attention(folder, layer=0)
    diff = np.asarray(rec.field.velocity(g, np.zeros(D))) - np.asarray(plain.velocity(g, np.zeros(D)))
    np.testing.assert_allclose(diff, b, rtol=1e-12)
    text = " ".join(rec.dropped)
    assert "query bias" in text and "key bias" in text and "MLP" in text
    assert "value and output biases" not in text  # kept
    assert "value and output biases" in " ".join(read_attention(folder, layer=0).dropped)


def test_unprefixed_keys_without_biases(tmp_path):
    t = _weights(1, prefix="", layers=1, biases=False)
    save_file(t, str(tmp_path / "m.safetensors"))
    rec = read_attention(tmp_path / "m.safetensors", heads=2)
    assert rec.info["prefix"] == "" and rec.info["k"] == 3
    assert rec.field.n_heads == 2
    assert float(rec.field.heads[0].beta) == pytest.approx(1 / math.sqrt(3))
    assert not any("bias" in s for s in rec.dropped)


def test_errors_name_the_problem(ckpt, tmp_path):
    folder, _ = ckpt
    with pytest.raises(ValueError, match="layer 7 is not in .*layers 0..1"):
        gf.load_attention(folder, layer=7)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gf.load_attention(tmp_path / "missing.safetensors", heads=2)
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        gf.load_attention(tmp_path, heads=2)
    with pytest.raises(ValueError, match="not divisible by heads=4"):
        gf.load_attention(folder, heads=4)
    t = _weights(2, layers=1)
    del t["bert.encoder.layer.0.attention.self.key.weight"]
    save_file(t, str(tmp_path / "nokey.safetensors"))
    with pytest.raises(ValueError, match="lacks 'bert.encoder.layer.0.attention.self.key.weight'"):
        gf.load_attention(tmp_path / "nokey.safetensors", heads=3)
    save_file(_weights(2, layers=1), str(tmp_path / "full.safetensors"))  # no config.json here
    with pytest.raises(ValueError, match="number of heads is unknown"):
        gf.load_attention(tmp_path / "full.safetensors")
    save_file({"embeddings.weight": np.zeros((2, 2))}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="no BERT attention weights"):
        gf.load_attention(tmp_path / "other.safetensors", heads=1)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        gf.load_attention(tmp_path / "junk.safetensors", heads=1)
