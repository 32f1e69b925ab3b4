r"""Attention weights of real Transformer checkpoints (Hugging Face BERT layout, safetensors).

A BERT self-attention layer maps a token $x$ ($d$ = hidden size) with PyTorch `Linear`
layers, which store `weight` as `(out, in)` and compute $W x + b$:

- `encoder.layer.N.attention.self.query.weight` ($H k \times d$) is the stacked $Q$, `key` the
  stacked $K$, `value` the stacked $V$ ($H k_v \times d$);
- `encoder.layer.N.attention.output.dense.weight` ($d \times H k_v$) is $W_O$.

Head $h$ uses rows $h k, \dots, (h+1) k - 1$ and score $\beta \langle Q_h x, K_h y\rangle$ with
$\beta = 1/\sqrt{k}$, so the layer is `gf.MultiHead.split(Q, K, V, W_O, H)`.

**What is kept and what is dropped.** With biases the head's score is
$\beta \langle Q_h x + b_q, K_h y + b_k\rangle$. Terms that depend on the query $x$ only
($x^\top Q_h^\top b_k$, $b_q^\top b_k$) cancel in the softmax normalisation over keys, so the
**key bias has no effect** (dropped exactly). The **query bias** adds $\beta\, b_q^\top K_h y$, a
key-only term that is not of the $\langle Q x, K y\rangle$ form: it is **dropped** (an
approximation; reported). Since the softmax weights sum to one, the **value bias** and the
**output bias** add the constant velocity $b_O + W_O b_V$: exact as a
`gf.Affine(0, b_O + W_O b_V)` summand (`with_bias=True`), dropped otherwise. Layer norm, the
feed-forward block (MLP), dropout and the residual scaling are not part of the attention field and
are always dropped.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field as dc_field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .field import Field

PREFIXES = ("", "bert.", "model.", "roberta.")
_SELF = "encoder.layer.{n}.attention.self.{name}.{kind}"
_OUT = "encoder.layer.{n}.attention.output.dense.{kind}"


@dataclass(frozen=True)
class AttentionLayer:
    """What `load_attention` read: the field and a record of what it dropped.

    `field`: `gf.MultiHead` (or `gf.MultiHead + gf.Affine` with `with_bias=True`);
    `dropped`: one sentence per dropped part; `info`: layer, heads, sizes, bias norms.
    """

    field: Field
    dropped: list[str]
    info: dict[str, Any] = dc_field(default_factory=dict)


def checkpoint_file(path: str | os.PathLike) -> tuple[str, str]:
    """`(file, folder)` of a checkpoint given as a `.safetensors` file or a folder holding
    `model.safetensors` (the folder is where `config.json` is looked for).

    Raises
    ------
    TypeError
        If `path` is not a file or folder name.
    FileNotFoundError
        If the file (or `model.safetensors` in the folder) does not exist.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file or folder name, got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.isdir(path):
        f = os.path.join(path, "model.safetensors")
        if not os.path.isfile(f):
            raise FileNotFoundError(f"no model.safetensors in folder {path!r}; pass the "
                                    ".safetensors file itself or a folder holding model.safetensors")
        return f, path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist; pass a .safetensors file or "
                                "a folder holding model.safetensors")
    return path, os.path.dirname(os.path.abspath(path))


def read_tensors(file: str) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, by key (NumPy arrays).

    Raises
    ------
    ImportError
        Without the safetensors package.
    ValueError
        If the file is not a readable safetensors file.
    """
    try:
        from safetensors.numpy import load_file
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("reading checkpoints needs the safetensors package: "
                          "pip install 'gaussflow[weights]'") from None
    try:
        return load_file(file)
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise ValueError(f"cannot read {file!r} as safetensors ({e}); pass a safetensors "
                         "checkpoint (model.safetensors)") from None


def _heads_from_config(folder):
    cfg = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg):
        return None
    try:
        with open(cfg) as fh:
            n = json.load(fh).get("num_attention_heads")
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {cfg!r} ({e}); fix it or pass heads=") from None
    return n


def _layers_present(tensors, prefix):
    pat = re.compile(re.escape(prefix) + r"encoder\.layer\.(\d+)\.attention\.")
    return sorted({int(m.group(1)) for k in tensors for m in [pat.match(k)] if m})


def read_attention(path: str | os.PathLike, layer: int = 0, heads: int | None = None,
                   with_bias: bool = False) -> AttentionLayer:
    """`load_attention` with the record of what was dropped (`AttentionLayer`).

    The arguments are those of `load_attention`.

    Returns
    -------
    AttentionLayer
        The field, one sentence per dropped part, and `info` (file, layer, heads, `d`, `k`,
        `k_v`, `beta`, key prefix, layers present, norm of the constant velocity, `with_bias`).

    Raises
    ------
    TypeError
        If `path` is not a file or folder name.
    FileNotFoundError
        If the checkpoint (or `model.safetensors` in the folder) does not exist.
    ValueError
        For an unreadable or non-BERT checkpoint, a layer it does not hold, or an unknown or
        invalid number of heads.
    """
    from .variants import Affine, MultiHead

    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
        raise ValueError(f"layer must be a non-negative integer, got {layer!r}")
    file, folder = checkpoint_file(path)
    tensors = read_tensors(file)
    prefix = next((p for p in PREFIXES if any(k.startswith(p + "encoder.layer.") for k in tensors)),
                  None)
    if prefix is None:
        raise ValueError(f"{file!r} holds no BERT attention weights (no key "
                         "'encoder.layer.N.attention...', optionally prefixed by 'bert.'); pass a "
                         "BERT-style checkpoint")
    present = _layers_present(tensors, prefix)
    if int(layer) not in present:
        raise ValueError(f"layer {layer} is not in {file!r}; it holds layers "
                         f"{present[0]}..{present[-1]}" if present else
                         f"layer {layer} is not in {file!r}")

    def get(key, required=True):
        k = prefix + key
        if k not in tensors:
            if required:
                raise ValueError(f"{file!r} lacks {k!r}; is it a BERT-style checkpoint?")
            return None
        return np.asarray(tensors[k], dtype=np.float64)

    n = int(layer)
    Q, K, V = (get(_SELF.format(n=n, name=nm, kind="weight")) for nm in ("query", "key", "value"))
    W_O = get(_OUT.format(n=n, kind="weight"))
    bq, bk, bv = (get(_SELF.format(n=n, name=nm, kind="bias"), False)
                  for nm in ("query", "key", "value"))
    bo = get(_OUT.format(n=n, kind="bias"), False)

    if heads is None:
        heads = _heads_from_config(folder)
        if heads is None:
            raise ValueError("the number of heads is unknown: pass heads= or put a config.json "
                             "with num_attention_heads beside the checkpoint")
    if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)) or heads < 1:
        raise ValueError(f"heads must be a positive integer, got {heads!r}")
    H = int(heads)
    if Q.shape[0] % H:
        raise ValueError(f"query.weight has {Q.shape[0]} rows, not divisible by heads={H}; pass "
                         "the checkpoint's number of attention heads")
    k = Q.shape[0] // H
    field = MultiHead.split(Q, K, V, W_O, H, beta=1.0 / math.sqrt(k))
    d = field.dim

    bias = np.zeros(d)
    if bv is not None:
        bias = bias + W_O @ bv
    if bo is not None:
        bias = bias + bo
    dropped = []
    if bq is not None and np.any(bq):
        dropped.append(f"query bias (norm {np.linalg.norm(bq):.3g}): adds beta b_q^T K_h y to each "
                       "head's score, not of the <Qx, Ky> form (approximation)")
    if bk is not None and np.any(bk):
        dropped.append("key bias: no effect (its score terms depend on the query only and cancel "
                       "in the softmax normalisation; exact)")
    if not with_bias and np.any(bias):
        dropped.append(f"value and output biases: the constant velocity b_O + W_O b_V (norm "
                       f"{np.linalg.norm(bias):.3g}); pass with_bias=True to keep it as gf.Affine")
    dropped.append("layer norm, feed-forward block (MLP), dropout: not part of the attention field")
    if with_bias:
        field = field + Affine(np.zeros((d, d)), bias)
    info = {"file": file, "layer": n, "heads": H, "d": d, "k": k, "k_v": V.shape[0] // H,
            "beta": 1.0 / math.sqrt(k), "prefix": prefix, "layers": present,
            "constant_velocity_norm": float(np.linalg.norm(bias)), "with_bias": bool(with_bias)}
    return AttentionLayer(field=field, dropped=dropped, info=info)


def load_attention(path: str | os.PathLike, layer: int = 0, heads: int | None = None,
                   with_bias: bool = False) -> Field:
    r"""The self-attention of layer `layer` of a BERT-style safetensors checkpoint as a field.

    Query biases, layer norm and the MLP are dropped (see the module docstring; `read_attention`
    returns the list). Prints nothing.

    Parameters
    ----------
    path : str or os.PathLike
        A `.safetensors` file or a folder holding `model.safetensors`; keys
        `[bert.]encoder.layer.N.attention.self.{query,key,value}.{weight,bias}` and
        `...attention.output.dense.{weight,bias}` (the prefix may also be `model.` or `roberta.`).
    layer : int
        The layer index `N` (non-negative).
    heads : int, optional
        The number of heads (default: the `num_attention_heads` of a `config.json` beside the
        checkpoint).
    with_bias : bool
        Keep the value and output biases as a constant velocity (see Returns).

    Returns
    -------
    Field
        The layer's `gf.MultiHead` (per-head $\beta = 1/\sqrt{k}$, output projection $W_O$), or
        with `with_bias=True` the sum `MultiHead + gf.Affine(0, b_O + W_O b_V)`.
    """
    return read_attention(path, layer=layer, heads=heads, with_bias=with_bias).field


def write_random_bert(path: str | os.PathLike, d: int = 8, heads: int = 2, layers: int = 1,
                      seed: int = 0, scale: float = 0.5, prefix: str = "bert.",
                      full: bool = False, width: int | None = None) -> str:
    r"""Write a small random BERT-like checkpoint for examples and tests.

    Weights are Gaussian with standard deviation $\mathrm{scale} / \sqrt{d}$, biases
    $0.1\,\mathrm{scale}$; the query, key and value matrices are $d \times d$ (so `heads` should
    divide `d`). With `full=True` every layer also gets its feed-forward block
    (`intermediate.dense`, $m \times d$, and `output.dense`, $d \times m$, standard deviation
    $\mathrm{scale}/\sqrt{d}$ and $\mathrm{scale}/\sqrt{m}$) and its two layer norms
    (`attention.output.LayerNorm`, `output.LayerNorm`: weight $1 + 0.1 G$, bias $0.1 G$, $G$
    standard normal), and `config.json` gets `intermediate_size`, `layer_norm_eps` ($10^{-12}$)
    and `hidden_act` (`"gelu"`).

    Parameters
    ----------
    path : str or os.PathLike
        A folder (created if missing); it receives `model.safetensors` and `config.json`.
    d : int
        The hidden size.
    heads : int
        `num_attention_heads` written to `config.json`.
    layers : int
        The number of attention layers.
    seed : int
        Seed of the random weights.
    scale : float
        Scale of the weights (see above).
    prefix : str
        Prefix of every key (`"bert."`, or `""` for a bare encoder).
    full : bool
        Also write the feed-forward blocks and the layer norms (a whole encoder).
    width : int, optional
        The feed-forward width $m$ (`full=True` only; default $4d$, BERT's ratio).

    Returns
    -------
    str
        The path of the safetensors file.
    """
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    t = {}
    for n in range(layers):
        for nm in ("query", "key", "value"):
            t[prefix + _SELF.format(n=n, name=nm, kind="weight")] = scale * rng.normal(size=(d, d)) / math.sqrt(d)
            t[prefix + _SELF.format(n=n, name=nm, kind="bias")] = 0.1 * scale * rng.normal(size=d)
        t[prefix + _OUT.format(n=n, kind="weight")] = scale * rng.normal(size=(d, d)) / math.sqrt(d)
        t[prefix + _OUT.format(n=n, kind="bias")] = 0.1 * scale * rng.normal(size=d)
        if full:
            m = 4 * d if width is None else int(width)
            L = f"encoder.layer.{n}."
            t[prefix + L + "intermediate.dense.weight"] = scale * rng.normal(size=(m, d)) / math.sqrt(d)
            t[prefix + L + "intermediate.dense.bias"] = 0.1 * scale * rng.normal(size=m)
            t[prefix + L + "output.dense.weight"] = scale * rng.normal(size=(d, m)) / math.sqrt(m)
            t[prefix + L + "output.dense.bias"] = 0.1 * scale * rng.normal(size=d)
            for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
                t[prefix + L + ln + ".weight"] = 1 + 0.1 * rng.normal(size=d)
                t[prefix + L + ln + ".bias"] = 0.1 * rng.normal(size=d)
    t = {k: v.astype(np.float32) for k, v in t.items()}
    file = os.path.join(path, "model.safetensors")
    save_file(t, file)
    with open(os.path.join(path, "config.json"), "w") as fh:
        cfg = {"model_type": "bert", "hidden_size": d, "num_attention_heads": heads,
               "num_hidden_layers": layers}
        if full:
            cfg.update(intermediate_size=4 * d if width is None else int(width),
                       layer_norm_eps=1e-12, hidden_act="gelu")
        json.dump(cfg, fh, indent=2)
    return file
