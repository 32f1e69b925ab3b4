"""Sinkhorn self-attention: the kernel ``exp(beta <Q x, K y> / eps)`` made doubly stochastic."""

from ..attention import Attention, SinkhornNormalisation
from ..attention.symbols import dot_score, eps


class Sinkhorn(Attention):
    """Sinkhorn attention (Sinkformers): weights ``pi(x, y) / mu(x)`` where
    ``pi = a(x) b(y) exp(beta <Q x, K y> / eps) mu(x) mu(y)`` has both marginals equal to ``mu``.

    ``Sinkhorn(Q, K, V, W_O=None, *, beta=1.0, eps=1.0)``: score ``beta <Q x, K y>`` (``A = K^T Q``),
    entropic regularisation ``eps > 0`` (only ``beta / eps`` matters), value map ``y -> W_O V y``.
    Exact Gaussian closure: the coupling of ``N(alpha, Sigma)`` is Gaussian with cross-covariance
    ``C = Cov(X, Y)`` solving the Schrödinger system in closed form with symmetric PSD square
    roots; ``Gamma(x) = W_O V (alpha + C^T Sigma^{-1} (x - alpha))``, written without
    ``Sigma^{-1}``; ``d alpha/dt = W_O V alpha``, ``d Sigma/dt = W_O V C^T + C (W_O V)^T``.
    As ``beta/eps -> 0`` it tends to softmax at score scale ``beta/eps`` (up to the mean term).
    """

    name = "sinkhorn"
    score = dot_score / eps
    normalisation = SinkhornNormalisation()
    defaults = {"W_O": "identity", "epsilon": 1.0}
    keywords = {"epsilon": "eps"}
