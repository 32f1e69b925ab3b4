"""Softmax self-attention: weights ``exp(beta <Q x, K y>)`` normalised over ``y ~ mu``."""

from ..attention import Attention, SoftmaxNormalisation
from ..attention.symbols import dot_score


class Softmax(Attention):
    """Softmax attention ``Gamma[mu](x) = int exp(s(x,y)) W_O V y dmu(y) / int exp(s(x,y)) dmu(y)``.

    ``Softmax(Q, K, V, W_O=None, *, beta=1.0)``: score ``s(x, y) = beta <Q x, K y>`` (``Q, K`` of
    shape (k, d); ``beta`` explicit, any finite real), value map ``y -> W_O V y`` (``V`` (k_v, d),
    ``W_O`` (d, k_v), identity by default when ``k_v = d``). Exact Gaussian closure (derived):
    ``Gamma(x) = W_O V (alpha + beta Sigma A x)``, ``A = K^T Q``.
    """

    name = "softmax"
    score = dot_score
    normalisation = SoftmaxNormalisation()
    defaults = {"W_O": "identity"}
