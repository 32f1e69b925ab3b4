"""L2 self-attention: weights ``exp(-c ||Q x - K y||^2)`` normalised over ``y ~ mu``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._checks import as_scalar
from ..derive import symbols as S
from ..derive.engine import derive_normalised_exp
from .attention import check_attention_weights
from .base import DerivedField


class L2(DerivedField):
    """L2 attention field ``Gamma[mu](x) = int k(x,y) W_O V y dmu(y) / int k(x,y) dmu(y)``.

    Kernel ``k(x, y) = exp(-c ||Q x - K y||^2)`` with an explicit temperature ``c > 0`` (default 1;
    there is no separate ``beta``), value map ``y -> W_O V y``; ``Q, K`` (k, d), ``V`` (k_v, d),
    ``W_O`` (d, k_v; identity by default when ``k_v = d``). Exact Gaussian closure, derived by
    completing the square (the kernel has a quadratic part in y):
    ``Gamma(x) = W_O V (I + 2c Sigma K^T K)^{-1} (alpha + 2c Sigma K^T Q x)`` (a solve, no inverse).
    """

    Q: jax.Array
    K: jax.Array
    V: jax.Array
    W_O: jax.Array
    c: jax.Array

    name = "l2"
    exact = True
    normalisation = "softmax"  # weights normalised over y ~ mu

    def __init__(self, Q, K, V, c=1.0, W_O=None):
        self.Q, self.K, self.V, self.W_O = check_attention_weights(Q, K, V, W_O)
        self.c = jnp.asarray(as_scalar("c", c, positive=True), dtype=jnp.float64)

    @property
    def dim(self) -> int:
        return self.Q.shape[1]

    @classmethod
    def log_kernel(cls):
        """``log k(x, y) = -c (Q x - K y)^T (Q x - K y)``."""
        r = S.Q * S.x - S.K * S.y
        return -S.c * r.T * r

    @classmethod
    def _derive(cls):
        return derive_normalised_exp(cls.name, cls.log_kernel())

    def _param_values(self) -> dict:
        return {"Q": self.Q, "K": self.K, "V": self.V, "W_O": self.W_O, "c": self.c}
