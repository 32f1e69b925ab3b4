"""Multi-head softmax attention: the sum of $H$ softmax heads, each normalised separately."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .._checks import as_array, as_scalar
from ..field import as_weight
from .softmax import Softmax
from .. import registry
from .superposition import Sum

if TYPE_CHECKING:
    from ..gaussian import Gaussian


class MultiHead(Sum):
    r"""Multi-head softmax attention, $\Gamma[\mu](x) = \sum_h \Gamma_h[\mu](x)$.

    Each head $h$ is a `Softmax` field (own $Q_h, K_h$ of shape $(k, d)$, $V_h$ of shape
    $(k_v, d)$, $W_O^h$ of shape $(d, k_v)$ and $\beta_h$).

    Exact: the closure is the sum of the heads' closures ($\mathrm{d}\alpha/\mathrm{d}t$ and $J$
    add). Build it from heads, `MultiHead([h1, h2])`, or from stacked Transformer weights with
    `split`. `gf.derive("multihead")` shows a two-head example; `gf.derive(field)` the field's
    own $H$.

    Parameters
    ----------
    heads : Sequence of Softmax
        The heads (at least one), all acting on the same token dimension $d$.

    Raises
    ------
    TypeError
        If `heads` is not a list or tuple of `gf.Softmax` fields.
    ValueError
        For no heads, or heads of different token dimensions.
    """

    name = "multihead"
    exact = True
    normalisation = "softmax"  # per head

    def __init__(self, heads: Sequence[Softmax]) -> None:
        if isinstance(heads, Softmax) or not isinstance(heads, (list, tuple)):
            raise TypeError("heads must be a list of gf.Softmax fields, e.g. "
                            "gf.MultiHead([gf.Softmax(Q1, K1, V1), gf.Softmax(Q2, K2, V2)])")
        if len(heads) == 0:
            raise ValueError("heads must hold at least one gf.Softmax head")
        for i, h in enumerate(heads):
            if not isinstance(h, Softmax):
                raise TypeError(f"heads[{i}] must be a gf.Softmax field, got {type(h).__name__}")
        dims = [h.dim for h in heads]
        if len(set(dims)) != 1:
            raise ValueError(f"heads act on different token dimensions {dims}; all must match")
        super().__init__(heads)

    @property
    def heads(self) -> tuple:
        """The `Softmax` heads."""
        return self.parts

    @property
    def n_heads(self) -> int:
        """The number of heads $H$."""
        return len(self.parts)

    @classmethod
    def input_keys(cls) -> tuple:
        """`(required, optional)` keys of `gaussflow solve --input` (stacked weights)."""
        return ("Q", "K", "V", "heads"), ("W_O", "beta")

    @classmethod
    def from_inputs(cls, Q: ArrayLike, K: ArrayLike, V: ArrayLike, heads: int,
                    W_O: ArrayLike | None = None,
                    beta: float | ArrayLike | None = None) -> MultiHead:
        """The field from the named inputs of `gaussflow solve --input`: `split` of stacked weights.

        `heads` is the number of heads $H$; see `split` for the other arguments.
        """
        return cls.split(Q, K, V, W_O, heads, beta=beta)

    @classmethod
    def scalar_keys(cls) -> tuple:
        """Keys of the scalar inputs (`beta`)."""
        return ("beta",)

    @classmethod
    def example(cls, d: int = 3, seed: int = 0) -> tuple[MultiHead, Gaussian, float]:
        """Two softmax heads ($W_O = I / 2$ each) with the weights of `Softmax.example`.

        Returns `(field, g0, t1)`: the state and end time of `Softmax.example(d, seed)`.
        """
        (h1, g0, t1), (h2, _, _) = Softmax.example(d, seed), Softmax.example(d, seed + 1)
        half = np.eye(d) / 2
        heads = [Softmax(h.Q, h.K, h.V, half, beta=h.beta) for h in (h1, h2)]
        return cls(heads), g0, t1

    @classmethod
    def _example_parts(cls):
        return (Softmax.derivation(), Softmax.derivation())

    @classmethod
    def _derivation_notes(cls, n_parts) -> tuple:
        return (f"Shown for H = {n_parts} heads, head h with weights indexed by h; an H-head "
                "field is the sum of H softmax heads, each normalised separately "
                "(`gf.derive(field)` gives a field's own H).",)

    @classmethod
    def split(cls, Q: ArrayLike, K: ArrayLike, V: ArrayLike, W_O: ArrayLike | None, n_heads: int,
              beta: float | ArrayLike | None = None) -> MultiHead:
        r"""Split stacked weights the way Transformer layers store them.

        Parameters
        ----------
        Q, K : ArrayLike
            Shape $(H k, d)$, split by rows into $H$ blocks of $k$ rows.
        V : ArrayLike
            Shape $(H k_v, d)$, split by rows into $H$ blocks of $k_v$ rows.
        W_O : ArrayLike or None
            Shape $(d, H k_v)$, split by columns; `None`: identity, allowed when $H k_v = d$.
        n_heads : int
            The number of heads $H$ (positive).
        beta : float or ArrayLike, optional
            One scale for every head, or a sequence of $H$; default $1/\sqrt{k}$ per head.

        Returns
        -------
        MultiHead
            The $H$ softmax heads.

        Raises
        ------
        ValueError
            For a non-positive `n_heads`, row counts not divisible by $H$, a missing `W_O` when
            $H k_v \ne d$, or a `beta` of another length than $H$.
        """
        if isinstance(n_heads, bool) or not isinstance(n_heads, (int, np.integer)) or n_heads < 1:
            raise ValueError(f"n_heads must be a positive integer, got {n_heads!r}")
        H = int(n_heads)
        Q = as_weight("Q", Q)
        Hk, d = Q.shape
        K = as_weight("K", K, shape=(Hk, d))
        V = as_weight("V", V, shape=(None, d))
        if Hk % H:
            raise ValueError(f"Q and K have {Hk} rows, not divisible by n_heads={H}; stack H "
                             "blocks of k rows each")
        if V.shape[0] % H:
            raise ValueError(f"V has {V.shape[0]} rows, not divisible by n_heads={H}; stack H "
                             "blocks of k_v rows each")
        k, kv = Hk // H, V.shape[0] // H
        if W_O is None:
            if H * kv != d:
                raise ValueError(f"W_O is required when H k_v = {H * kv} differs from d = {d}; "
                                 f"pass W_O of shape ({d}, {H * kv})")
            W_O = np.eye(d)
        W_O = as_weight("W_O", W_O, shape=(d, H * kv))
        if beta is None:
            betas = [1.0 / math.sqrt(k)] * H
        elif np.ndim(beta) == 0:
            betas = [as_scalar("beta", beta)] * H
        else:
            betas = np.asarray(as_array("beta", beta, ndim=1))
            if betas.shape[0] != H:
                raise ValueError(f"beta has {betas.shape[0]} entries but n_heads={H}; pass one "
                                 "scale or one per head")
            betas = list(betas)
        heads = [Softmax(Q[h * k:(h + 1) * k], K[h * k:(h + 1) * k], V[h * kv:(h + 1) * kv],
                         W_O[:, h * kv:(h + 1) * kv], beta=betas[h]) for h in range(H)]
        return cls(heads)


registry.register(MultiHead)
