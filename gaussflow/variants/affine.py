"""Affine layer: the velocity ``W x + b`` (a feed-forward layer without nonlinearity)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._checks import as_array
from ..derive import symbols as S
from ..derive.engine import derive_affine
from .base import DerivedField, as_weight


class Affine(DerivedField):
    """The field ``Gamma(x) = W x + b``, independent of the token distribution.

    ``W`` is (d, d), ``b`` (d,) (default zero). Exact: ``d alpha/dt = W alpha + b``,
    ``d Sigma/dt = W Sigma + Sigma W^T``. Not an attention variant: it declares no log-kernel
    (``normalisation = None``). In the derivation ``b`` is a (d, 1) column.
    """

    W: jax.Array
    b: jax.Array

    name = "affine"
    exact = True
    normalisation = None  # not attention: no kernel, the velocity is evaluated directly

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
    def _derive(cls):
        return derive_affine(cls.name, S.W * S.x + S.b)

    def _param_values(self) -> dict:
        return {"W": self.W, "b": self.b[:, None]}
