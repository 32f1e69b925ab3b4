"""Softmax self-attention: weights ``exp(beta <Q x, K y>)`` normalised over ``y ~ mu``."""

from __future__ import annotations

from ..derive import symbols as S
from ..derive.engine import derive_normalised_exp
from .attention import DotProductAttention


class Softmax(DotProductAttention):
    """Softmax attention field ``Gamma[mu](x) = int exp(s(x,y)) W_O V y dmu(y) / int exp(s(x,y)) dmu(y)``.

    Score ``s(x, y) = beta <Q x, K y>`` (``beta`` explicit, default 1), value map ``y -> W_O V y``.
    Exact Gaussian closure: ``Gamma(x) = W_O V (alpha + beta Sigma A x)``, ``A = K^T Q``.
    """

    name = "softmax"
    exact = True
    normalisation = "softmax"  # weights normalised over y ~ mu
    normalisation = "softmax"

    @classmethod
    def log_kernel(cls):
        """``log k(x, y) = beta (Q x)^T (K y)``."""
        return S.beta * (S.Q * S.x).T * (S.K * S.y)

    @classmethod
    def _derive(cls):
        return derive_normalised_exp(cls.name, cls.log_kernel())
