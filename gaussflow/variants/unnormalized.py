"""Unnormalised exponential attention: weights ``exp(beta <Q x, K y>)``, not normalised over y.

``Gamma[mu](x) = int exp(s(x, y)) W_O V y dmu(y)``, ``s(x, y) = beta <Q x, K y> = beta y^T A x``,
``A = K^T Q``. Completing the square in y gives ``Gamma(x) = Z(x) W_O V m(x)`` with
``m(x) = alpha + beta Sigma A x`` and ``log Z(x) = beta alpha^T A x + beta^2/2 x^T A^T Sigma A x``:
not affine in x. The closure is the Gaussian moment projection (``exact = False``) in closed form.
It exists only while ``Sigma^{-1} - beta^2 A^T Sigma A`` is positive definite
(``integrability_margin`` > 0); past that ``gf.solve`` stops with status ``"not_integrable"``.
"""

from ..attention import Attention, NoNormalisation
from ..attention.symbols import dot_score


class Unnormalized(Attention):
    """Unnormalised attention ``E_{Y ~ mu}[exp(beta <Q x, K Y>) W_O V Y]`` (approximate closure).

    ``Unnormalized(Q, K, V, W_O=None, *, beta=1.0)``; :meth:`integrability_margin` and
    :meth:`log_mass` describe the domain (see the module docstring).
    """

    name = "unnormalized"
    score = dot_score
    normalisation = NoNormalisation("exp")
    defaults = {"W_O": "identity"}
    example_scales = {"beta": 0.3}
