"""Affine layer: the velocity ``W x + b`` (a feed-forward layer without nonlinearity)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import as_array
from ..gaussian import example_state
from ..symbolic import symbols as S
from ..symbolic.engine import derive_affine
from .. import registry
from ..field import DerivedField, as_weight


class Affine(DerivedField):
    """The field ``Gamma(x) = W x + b``, independent of the token distribution.

    ``W`` is (d, d), ``b`` (d,) (default zero). Exact: ``d alpha/dt = W alpha + b``,
    ``d Sigma/dt = W Sigma + Sigma W^T``. Not an attention variant: its velocity is declared
    directly (no score, no normalisation). In the derivation ``b`` is a (d, 1) column.
    """

    W: jax.Array
    b: jax.Array

    name = "affine"
    exact = True

    def __init__(self, W, b=None):
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
        """``(required, optional)`` keys of ``gaussflow solve --input``."""
        return ("W",), ("b",)

    @classmethod
    def from_inputs(cls, W, b=None):
        return cls(W, b)

    @classmethod
    def example(cls, d: int = 3, seed: int = 0):
        """A validation problem: ``W = 0.5 G / sqrt(d)``, ``b ~ 0.5 N(0, I)``, ``t1 = 1`` (see
        :meth:`gaussflow.Attention.example` for the initial state)."""
        rng = np.random.default_rng(seed)
        g0 = example_state(rng, d)
        return cls(0.5 * rng.normal(size=(d, d)) / np.sqrt(d), 0.5 * rng.normal(size=d)), g0, 1.0

    @classmethod
    def _derive(cls):
        return derive_affine(cls.name, S.W * S.x + S.b)

    def _param_values(self) -> dict:
        return {"W": self.W, "b": self.b[:, None]}


registry.register(Affine)
