r"""Whole encoder layers of BERT-style checkpoints: attention with its biases, MLP, layer norms.

A BERT encoder layer maps the tokens $x$ (rows of `X`, $d$ = hidden size) by

$$h = \mathrm{LN}_1(x + \mathrm{Attn}(x)), \qquad
\mathrm{out} = \mathrm{LN}_2\big(h + W_2\, s(W_1 h + b_1) + b_2\big)$$

(**post-norm**, BERT's placement; **pre-norm** is $h = x + \mathrm{Attn}(\mathrm{LN}_1 x)$,
$\mathrm{out} = h + W_2 s(W_1 \mathrm{LN}_2 h + b_1) + b_2$). Head $h$ of the attention scores a
query $x$ against a key $y$ by $\beta \langle Q_h x + b_{q,h}, K_h y + b_{k,h}\rangle$,
$\beta = 1/\sqrt{k}$, normalises over the keys by a softmax, averages the values
$V_h y + b_{v,h}$, and the heads' outputs are concatenated and mapped by $W_O \cdot + b_O$.
PyTorch `Linear` layers store `weight` as `(out, in)`; the keys are

- `encoder.layer.N.attention.self.{query,key,value}.{weight,bias}`,
  `encoder.layer.N.attention.output.dense.{weight,bias}` (attention),
- `encoder.layer.N.intermediate.dense.{weight,bias}` ($W_1$, $b_1$) and
  `encoder.layer.N.output.dense.{weight,bias}` ($W_2$, $b_2$) (MLP),
- `encoder.layer.N.attention.output.LayerNorm.{weight,bias}` ($\mathrm{LN}_1$) and
  `encoder.layer.N.output.LayerNorm.{weight,bias}` ($\mathrm{LN}_2$),

optionally prefixed by `bert.` (or `model.`, `roberta.`). `config.json` beside the checkpoint gives
`num_attention_heads`, `layer_norm_eps` (default $10^{-12}$) and `hidden_act` (`"gelu"`, the erf
form, or `"relu"`). Nothing is dropped: `gaussflow.network` runs these weights exactly, and
`gaussflow.propagate` carries a Gaussian through them.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field as dc_field, replace
from typing import Any

import numpy as np

from .weights import PREFIXES, checkpoint_file, read_tensors

__all__ = ["Block", "Model", "load_block", "load_model", "PLACEMENTS", "HIDDEN_ACTS"]

#: Layer-norm placements: `"post"` (BERT: LN after each residual sum) or `"pre"` (LN before each
#: sub-block, inside the residual branch).
PLACEMENTS = ("post", "pre")
#: `hidden_act` values of `config.json` and the activation (of `gaussflow.symbolic.stein`) they
#: name. BERT's `"gelu"` is the erf form; the tanh approximations are refused.
HIDDEN_ACTS = {"gelu": "gelu", "relu": "relu"}

_ATT = "encoder.layer.{n}.attention.self.{name}.{kind}"
_PARTS = {  # field name -> key (after the prefix), for one layer
    "bo": "encoder.layer.{n}.attention.output.dense.bias",
    "W_O": "encoder.layer.{n}.attention.output.dense.weight",
    "W1": "encoder.layer.{n}.intermediate.dense.weight",
    "b1": "encoder.layer.{n}.intermediate.dense.bias",
    "W2": "encoder.layer.{n}.output.dense.weight",
    "b2": "encoder.layer.{n}.output.dense.bias",
    "ln1_gamma": "encoder.layer.{n}.attention.output.LayerNorm.weight",
    "ln1_beta": "encoder.layer.{n}.attention.output.LayerNorm.bias",
    "ln2_gamma": "encoder.layer.{n}.output.LayerNorm.weight",
    "ln2_beta": "encoder.layer.{n}.output.LayerNorm.bias",
}
for _nm, _w, _b in (("query", "Q", "bq"), ("key", "K", "bk"), ("value", "V", "bv")):
    _PARTS[_w] = _ATT.format(n="{n}", name=_nm, kind="weight")
    _PARTS[_b] = _ATT.format(n="{n}", name=_nm, kind="bias")


@dataclass(frozen=True)
class Block:
    r"""The weights of one encoder layer (float64 NumPy arrays; shapes as stored).

    `Q`, `K` $(Hk, d)$, `V` $(Hk_v, d)$, `bq`, `bk` $(Hk,)$, `bv` $(Hk_v,)$, `W_O` $(d, Hk_v)$,
    `bo` $(d,)$; `W1` $(m, d)$, `b1` $(m,)$, `W2` $(d, m)$, `b2` $(d,)$; `ln1_gamma`,
    `ln1_beta`, `ln2_gamma`, `ln2_beta` $(d,)$; `heads` $H$, `eps` (layer norm), `activation`
    (`"gelu"` or `"relu"`), `layer` (its index in the checkpoint).
    """

    Q: np.ndarray
    K: np.ndarray
    V: np.ndarray
    bq: np.ndarray
    bk: np.ndarray
    bv: np.ndarray
    W_O: np.ndarray
    bo: np.ndarray
    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray
    ln1_gamma: np.ndarray
    ln1_beta: np.ndarray
    ln2_gamma: np.ndarray
    ln2_beta: np.ndarray
    heads: int
    eps: float = 1e-12
    activation: str = "gelu"
    layer: int = 0

    @property
    def d(self) -> int:
        """The hidden size $d$."""
        return self.Q.shape[1]

    @property
    def k(self) -> int:
        """The head size $k$ of queries and keys."""
        return self.Q.shape[0] // self.heads

    @property
    def k_v(self) -> int:
        """The head size $k_v$ of values."""
        return self.V.shape[0] // self.heads

    @property
    def beta(self) -> float:
        r"""The score scale $\beta = 1/\sqrt{k}$."""
        return 1.0 / math.sqrt(self.k)

    @property
    def width(self) -> int:
        """The MLP width $m$."""
        return self.W1.shape[0]

    def head(self, h: int) -> tuple[np.ndarray, ...]:
        r"""$(Q_h, K_h, V_h, b_{q,h}, b_{k,h}, b_{v,h}, W_O^h)$ of head `h` (row blocks of the
        stacked weights; column block of $W_O$)."""
        q, v = slice(h * self.k, (h + 1) * self.k), slice(h * self.k_v, (h + 1) * self.k_v)
        return (self.Q[q], self.K[q], self.V[v], self.bq[q], self.bk[q], self.bv[v],
                self.W_O[:, v])


@dataclass(frozen=True)
class Model:
    """A stack of encoder layers (`blocks`) and the layer-norm placement (`"post"`: BERT).

    `info` records the file, the key prefix, the layers and the configuration read.
    `with_placement(p)` returns the same weights with another placement.
    """

    blocks: tuple[Block, ...]
    placement: str = "post"
    info: dict[str, Any] = dc_field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if not self.blocks:
            raise ValueError("blocks must hold at least one Block")

    @property
    def d(self) -> int:
        """The hidden size $d$."""
        return self.blocks[0].d

    def __len__(self) -> int:
        return len(self.blocks)

    def with_placement(self, placement: str) -> Model:
        """The same layers with layer norms placed `"post"` or `"pre"`."""
        return replace(self, placement=placement)


def _config(folder: str) -> dict:
    cfg = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg):
        return {}
    try:
        with open(cfg) as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {cfg!r} ({e}); fix it or pass heads=") from None


def _index(layer: Any, name: str = "layer") -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {layer!r}")
    return int(layer)


class _Checkpoint:
    """The tensors, prefix, layers present and configuration of one checkpoint."""

    def __init__(self, path, heads):
        self.file, folder = checkpoint_file(path)
        self.tensors = read_tensors(self.file)
        self.prefix = next((p for p in PREFIXES
                            if any(k.startswith(p + "encoder.layer.") for k in self.tensors)), None)
        if self.prefix is None:
            raise ValueError(f"{self.file!r} holds no BERT encoder weights (no key "
                             "'encoder.layer.N...', optionally prefixed by 'bert.'); pass a "
                             "BERT-style checkpoint")
        pat = re.compile(re.escape(self.prefix) + r"encoder\.layer\.(\d+)\.")
        self.layers = sorted({int(m.group(1)) for k in self.tensors for m in [pat.match(k)] if m})
        cfg = _config(folder)
        self.heads = cfg.get("num_attention_heads") if heads is None else heads
        if self.heads is None:
            raise ValueError("the number of heads is unknown: pass heads= or put a config.json "
                             "with num_attention_heads beside the checkpoint")
        if isinstance(self.heads, bool) or not isinstance(self.heads, (int, np.integer)) \
                or self.heads < 1:
            raise ValueError(f"heads must be a positive integer, got {self.heads!r}")
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"layer_norm_eps of config.json must be positive, got {self.eps!r}")
        act = cfg.get("hidden_act", "gelu")
        if act not in HIDDEN_ACTS:
            raise ValueError(f"hidden_act {act!r} of config.json is not supported; supported: "
                             f"{sorted(HIDDEN_ACTS)} ('gelu' is the erf form)")
        self.activation = HIDDEN_ACTS[act]
        self.config = cfg

    def block(self, n: int) -> Block:
        if n not in self.layers:
            span = f"; it holds layers {self.layers[0]}..{self.layers[-1]}" if self.layers else ""
            raise ValueError(f"layer {n} is not in {self.file!r}{span}")
        arr = {}
        for name, key in _PARTS.items():
            k = self.prefix + key.format(n=n)
            if k not in self.tensors:
                raise ValueError(f"{self.file!r} lacks {k!r}: a whole BERT layer needs the "
                                 "attention, the MLP (intermediate/output dense) and both layer "
                                 "norms (gf.load_attention reads attention-only checkpoints)")
            arr[name] = np.asarray(self.tensors[k], dtype=np.float64)
        H = int(self.heads)
        Hk, d = arr["Q"].shape
        if Hk % H or arr["V"].shape[0] % H:
            raise ValueError(f"query/value rows ({Hk}, {arr['V'].shape[0]}) are not divisible by "
                             f"heads={H}; pass the checkpoint's number of attention heads")
        m = arr["W1"].shape[0]
        want = {"K": (Hk, d), "V": (arr["V"].shape[0], d), "bq": (Hk,), "bk": (Hk,),
                "bv": (arr["V"].shape[0],), "W_O": (d, arr["V"].shape[0]), "bo": (d,),
                "W1": (m, d), "b1": (m,), "W2": (d, m), "b2": (d,), "ln1_gamma": (d,),
                "ln1_beta": (d,), "ln2_gamma": (d,), "ln2_beta": (d,)}
        for name, shape in want.items():
            if arr[name].shape != shape:
                raise ValueError(f"{self.prefix + _PARTS[name].format(n=n)!r} has shape "
                                 f"{arr[name].shape}, expected {shape} (hidden size {d})")
            if not np.all(np.isfinite(arr[name])):
                raise ValueError(f"{self.prefix + _PARTS[name].format(n=n)!r} is not finite")
        return Block(**arr, heads=H, eps=self.eps, activation=self.activation, layer=n)


def load_block(path: str | os.PathLike, layer: int = 0, heads: int | None = None) -> Block:
    r"""One whole encoder layer of a BERT-style safetensors checkpoint.

    Parameters
    ----------
    path : str or os.PathLike
        A `.safetensors` file or a folder holding `model.safetensors` (and `config.json`).
    layer : int
        The layer index `N` (non-negative).
    heads : int, optional
        The number of heads (default: `num_attention_heads` of `config.json`).

    Returns
    -------
    Block
        Attention (every bias), MLP and both layer norms, float64.

    Raises
    ------
    TypeError
        If `path` is not a file or folder name.
    FileNotFoundError
        If the checkpoint does not exist.
    ValueError
        For a non-BERT checkpoint, a missing layer or key (named), a shape that does not match,
        an unknown number of heads, or an unsupported `hidden_act`.
    """
    n = _index(layer)
    return _Checkpoint(path, heads).block(n)


def load_model(path: str | os.PathLike, placement: str = "post", heads: int | None = None
               ) -> Model:
    r"""Every encoder layer of a BERT-style safetensors checkpoint, in order.

    Parameters
    ----------
    path : str or os.PathLike
        A `.safetensors` file or a folder holding `model.safetensors` (and `config.json`).
    placement : str
        `"post"` (BERT: $\mathrm{LN}(x + F(x))$) or `"pre"` ($x + F(\mathrm{LN}\,x)$).
    heads : int, optional
        The number of heads (default: `num_attention_heads` of `config.json`).

    Returns
    -------
    Model
        The layers (`Block`s) and the placement; `info` holds the file, prefix and config.

    Raises
    ------
    TypeError
        If `path` is not a file or folder name.
    FileNotFoundError
        If the checkpoint does not exist.
    ValueError
        For an unknown `placement` (raised before reading), and as `load_block`.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    ck = _Checkpoint(path, heads)
    if ck.layers != list(range(len(ck.layers))):
        raise ValueError(f"{ck.file!r} holds layers {ck.layers}, not 0..L-1; load them one by "
                         "one with gf.load_block")
    blocks = tuple(ck.block(n) for n in ck.layers)
    info = {"file": ck.file, "prefix": ck.prefix, "layers": len(blocks), "heads": ck.heads,
            "d": blocks[0].d, "width": blocks[0].width, "eps": ck.eps,
            "activation": ck.activation}
    return Model(blocks, placement, info)
