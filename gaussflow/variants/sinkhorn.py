"""Sinkhorn self-attention: the kernel ``exp(beta <Q x, K y> / eps)`` made doubly stochastic."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._checks import as_scalar
from ..derive import symbols as S
from ..derive.engine import derive_sinkhorn
from .attention import DotProductAttention


class Sinkhorn(DotProductAttention):
    """Sinkhorn attention (Sinkformers): weights ``pi(x, y) / mu(x)`` where
    ``pi = a(x) b(y) exp(beta <Q x, K y> / eps) mu(x) mu(y)`` has both marginals equal to ``mu``.

    Score ``s(x, y) = beta <Q x, K y> = beta y^T A x`` (``A = K^T Q``), entropic regularisation
    ``eps > 0`` (only ``beta / eps`` matters), value map ``y -> W_O V y``. Exact Gaussian closure:
    the coupling of ``N(alpha, Sigma)`` is Gaussian with cross-covariance ``C = Cov(X, Y)``
    (query ``X``, key ``Y``) solving the Schrödinger system in closed form with symmetric PSD square
    roots; ``Gamma(x) = W_O V (alpha + C^T Sigma^{-1} (x - alpha))``, written without
    ``Sigma^{-1}``. ``d alpha/dt = W_O V alpha``; ``d Sigma/dt = W_O V C^T + C (W_O V)^T``.
    As ``beta/eps -> 0``, ``J = W_O V (beta/eps) Sigma A + O((beta/eps)^3)``: softmax at score scale
    ``beta/eps`` (up to the mean term, since Sinkhorn is translation-equivariant).
    """

    eps: jax.Array

    name = "sinkhorn"
    exact = True
    normalisation = "sinkhorn"  # doubly stochastic w.r.t. mu x mu

    def __init__(self, Q, K, V, eps=1.0, beta=1.0, W_O=None):
        super().__init__(Q, K, V, beta=beta, W_O=W_O)
        self.eps = jnp.asarray(as_scalar("eps", eps, positive=True), dtype=jnp.float64)

    @classmethod
    def log_kernel(cls):
        """``log k(x, y) = beta (Q x)^T (K y) / epsilon``."""
        return S.beta * (S.Q * S.x).T * (S.K * S.y) / S.eps

    @classmethod
    def _derive(cls):
        return derive_sinkhorn(cls.name, cls.log_kernel())

    def _param_values(self) -> dict:
        vals = super()._param_values()
        vals["epsilon"] = self.eps
        return vals
