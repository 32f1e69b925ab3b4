r"""The real forward pass of a BERT-style encoder in NumPy, on a cloud of tokens.

`forward(model, X)` runs the tokens `X` ($N \times d$, one sequence of $N$ tokens: every token
attends to every other) through every layer of a `gaussflow.blocks.Model` exactly as the network
computes it (see `gaussflow.blocks`): per head the scores
$\beta \langle Q_h x + b_{q,h}, K_h y + b_{k,h}\rangle$, a softmax over the $N$ keys
(max-subtracted), the weighted mean of $V_h y + b_{v,h}$; $W_O \cdot + b_O$; the residual sums;
the layer norms with the checkpoint's $\epsilon$; the MLP with the erf GELU (or ReLU). No dropout
(inference). float64 throughout.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import sympy as sp

from .blocks import Block, Model
from .layernorm import layer_norm
from .symbolic.stein import activation_of, z

__all__ = ["activation", "attention_forward", "mlp_forward", "forward_halves", "layer_forward",
           "forward"]


@functools.cache
def activation(name: str) -> tuple[Callable, Callable]:
    r"""`(s, s')`: the activation `name` of `gaussflow.symbolic.stein.ACTIVATIONS` and its
    derivative, as NumPy functions (lambdified with SciPy's `erf`)."""
    e = activation_of(name)
    mods = ["scipy", "numpy"]
    return sp.lambdify(z, e, modules=mods), sp.lambdify(z, sp.diff(e, z), modules=mods)


def _tokens(X: np.ndarray, d: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != d or X.shape[0] < 1:
        raise ValueError(f"X must have shape (N, {d}) with N >= 1, got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X must be finite")
    return X


def attention_forward(block: Block, X: np.ndarray) -> np.ndarray:
    r"""$\mathrm{Attn}(x_i)$ for every token (row) of `X` `(N, d)`, the keys being the rows of `X`.

    Parameters
    ----------
    block : Block
        The layer's weights.
    X : np.ndarray
        Tokens, shape `(N, d)`.

    Returns
    -------
    np.ndarray
        `(N, d)`: $W_O\, \mathrm{concat}_h(\mathrm{softmax}(S_h) (X V_h^\top + b_{v,h})) + b_O$.
    """
    X = _tokens(X, block.d)
    out = np.empty((X.shape[0], block.V.shape[0]))
    for h in range(block.heads):
        Qh, Kh, Vh, bq, bk, bv, _ = block.head(h)
        s = block.beta * (X @ Qh.T + bq) @ (X @ Kh.T + bk).T
        s -= s.max(axis=1, keepdims=True)
        w = np.exp(s)
        w /= w.sum(axis=1, keepdims=True)
        out[:, h * block.k_v:(h + 1) * block.k_v] = w @ (X @ Vh.T + bv)
    return out @ block.W_O.T + block.bo


def mlp_forward(block: Block, X: np.ndarray) -> np.ndarray:
    r"""$W_2\, s(W_1 x + b_1) + b_2$ for every row of `X` `(N, d)`."""
    X = _tokens(X, block.d)
    s, _ = activation(block.activation)
    return s(X @ block.W1.T + block.b1) @ block.W2.T + block.b2


def forward_halves(block: Block, X: np.ndarray, placement: str = "post"
                   ) -> tuple[np.ndarray, np.ndarray]:
    r"""One encoder layer on the tokens `X` `(N, d)`, with its midpoint: `(h, out)`.

    `"post"`: $h = \mathrm{LN}_1(x + \mathrm{Attn}\,x)$, $\mathrm{LN}_2(h + \mathrm{MLP}\,h)$;
    `"pre"`: $h = x + \mathrm{Attn}(\mathrm{LN}_1 x)$, $h + \mathrm{MLP}(\mathrm{LN}_2 h)$.
    """
    ln1 = functools.partial(layer_norm, gamma=block.ln1_gamma, beta=block.ln1_beta, eps=block.eps)
    ln2 = functools.partial(layer_norm, gamma=block.ln2_gamma, beta=block.ln2_beta, eps=block.eps)
    if placement == "post":
        h = ln1(X + attention_forward(block, X))
        return h, ln2(h + mlp_forward(block, h))
    if placement == "pre":
        h = X + attention_forward(block, ln1(X))
        return h, h + mlp_forward(block, ln2(h))
    raise ValueError(f"placement must be 'post' or 'pre', got {placement!r}")


def layer_forward(block: Block, X: np.ndarray, placement: str = "post") -> np.ndarray:
    r"""One encoder layer on the tokens `X` `(N, d)` (`forward_halves`' second output)."""
    return forward_halves(block, X, placement)[1]


def forward(model: Model, X: np.ndarray) -> list[np.ndarray]:
    r"""The tokens after every layer: `[X, layer_0(X), layer_1(layer_0(X)), ...]`.

    Parameters
    ----------
    model : Model
        The layers and the layer-norm placement (`gf.load_model`).
    X : np.ndarray
        The input tokens, shape `(N, d)` (one sequence; finite).

    Returns
    -------
    list of np.ndarray
        $L + 1$ arrays of shape `(N, d)`.

    Raises
    ------
    TypeError
        If `model` is not a `Model`.
    ValueError
        For tokens of the wrong shape or not finite.
    FloatingPointError
        If the tokens stop being finite (named layer).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a gaussflow Model (gf.load_model), got "
                        f"{type(model).__name__}")
    X = _tokens(X, model.d)
    out = [X]
    for b in model.blocks:
        with np.errstate(over="ignore", invalid="ignore"):
            X = layer_forward(b, X, model.placement)
        if not np.all(np.isfinite(X)):
            raise FloatingPointError(f"the tokens stopped being finite at layer {b.layer}")
        out.append(X)
    return out
