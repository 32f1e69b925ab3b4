"""Affine layer: the velocity $W x + b$ (a feed-forward layer without nonlinearity)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._checks import as_array
from ..gaussian import example_state
from ..symbolic import symbols as S
from ..symbolic.engine import derive_affine
from .. import registry
from ..field import DerivedField, as_weight

if TYPE_CHECKING:
    from ..gaussian import Gaussian


class Affine(DerivedField):
    r"""The field $\Gamma(x) = W x + b$, independent of the token distribution.

    Exact: $\mathrm{d}\alpha/\mathrm{d}t = W \alpha + b$,
    $\mathrm{d}\Sigma/\mathrm{d}t = W \Sigma + \Sigma W^\top$. Not an attention variant: its
    velocity is declared directly (no score, no normalisation). In the derivation `b` is a
    `(d, 1)` column.

    Parameters
    ----------
    W : ArrayLike
        Shape `(d, d)`.
    b : ArrayLike, optional
        Shape `(d,)`; default zero.

    Raises
    ------
    ValueError
        If `W` is not square or `b` does not have shape `(d,)`.
    """

    W: jax.Array
    b: jax.Array

    name = "affine"
    exact = True

    def __init__(self, W: ArrayLike, b: ArrayLike | None = None) -> None:
        W = as_weight("W", W)
        d = W.shape[0]
        if W.shape != (d, d):
            raise ValueError(f"W must be square (d, d), got shape {tuple(W.shape)}")
        if b is None:
            b = jnp.zeros(d)
        b = as_array("b", b, ndim=1, shape=(d,))
        self.W = W
        self.b = jnp.asarray(b, dtype=jnp.float64)

    @property
    def dim(self) -> int:
        return self.W.shape[0]

    @classmethod
    def input_keys(cls) -> tuple:
        """`(required, optional)` keys of `gaussflow solve --input`."""
        return ("W",), ("b",)

    @classmethod
    def from_inputs(cls, W: ArrayLike, b: ArrayLike | None = None) -> Affine:
        """The field from the named inputs of `gaussflow solve --input`: `Affine(W, b)`."""
        return cls(W, b)

    @classmethod
    def example(cls, d: int = 3, seed: int = 0) -> tuple[Affine, Gaussian, float]:
        r"""A validation problem `(field, g0, t1)` with random weights from `seed`.

        $W = 0.5\, G / \sqrt{d}$ ($G$ with standard normal entries), $b \sim 0.5\, N(0, I)$,
        `t1 = 1`; see `gaussflow.Attention.example` for the initial state `g0`.
        """
        rng = np.random.default_rng(seed)
        g0 = example_state(rng, d)
        return cls(0.5 * rng.normal(size=(d, d)) / np.sqrt(d), 0.5 * rng.normal(size=d)), g0, 1.0

    @classmethod
    def _derive(cls):
        return derive_affine(cls.name, S.W * S.x + S.b)

    def _param_values(self) -> dict:
        return {"W": self.W, "b": self.b[:, None]}


registry.register(Affine)
