"""Shared weights of dot-product attention variants: ``Q, K`` (k x d), ``V`` (k_v x d), ``W_O``
(d x k_v, identity by default when ``k_v = d``) and the score scale ``beta``.

Score between query ``x`` and key ``y``: ``s(x, y) = beta <Q x, K y> = beta y^T A x`` with
``A = K^T Q``; value map ``y -> W_O V y``. ``beta`` is explicit (default 1; Transformers use
``1/sqrt(k)``) and may be any finite real: ``beta < 0`` is the same field with ``A -> -A`` (the
closures hold for either sign), ``beta = 0`` attends uniformly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._checks import as_scalar
from .base import DerivedField, as_weight


def check_attention_weights(Q, K, V, W_O):
    """Validate shapes: Q, K (k, d); V (k_v, d); W_O (d, k_v) or None (then k_v must equal d)."""
    Q = as_weight("Q", Q)
    k, d = Q.shape
    K = as_weight("K", K, shape=(k, d))
    V = as_weight("V", V, shape=(None, d))
    kv = V.shape[0]
    if W_O is None:
        if kv != d:
            raise ValueError(
                f"W_O is required when V is not square: V has shape {tuple(V.shape)} (k_v={kv}, "
                f"d={d}); pass W_O of shape ({d}, {kv})")
        W_O = jnp.eye(d)
    else:
        W_O = as_weight("W_O", W_O, shape=(d, kv))
    return Q, K, V, W_O


class DotProductAttention(DerivedField):
    """Base for attention fields whose score is ``beta <Q x, K y>``."""

    Q: jax.Array
    K: jax.Array
    V: jax.Array
    W_O: jax.Array
    beta: jax.Array

    def __init__(self, Q, K, V, beta=1.0, W_O=None):
        self.Q, self.K, self.V, self.W_O = check_attention_weights(Q, K, V, W_O)
        self.beta = jnp.asarray(as_scalar("beta", beta), dtype=jnp.float64)

    @property
    def dim(self) -> int:
        return self.Q.shape[1]

    @property
    def A(self):
        """``A = K^T Q`` so that the score is ``beta y^T A x``."""
        return self.K.T @ self.Q

    def _param_values(self) -> dict:
        return {"Q": self.Q, "K": self.K, "V": self.V, "W_O": self.W_O, "beta": self.beta}
