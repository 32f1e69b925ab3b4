r"""Unnormalised exponential attention: weights $e^{\beta \langle Q x, K y\rangle}$, not normalised.

The weights are not normalised over $y$:
$\Gamma[\mu](x) = \int e^{s(x, y)}\, W_O V y \,\mathrm{d}\mu(y)$ with
$s(x, y) = \beta \langle Q x, K y\rangle = \beta\, y^\top A x$, $A = K^\top Q$. Completing the
square in $y$ gives $\Gamma(x) = Z(x)\, W_O V m(x)$ with $m(x) = \alpha + \beta \Sigma A x$ and
$$\log Z(x) = \beta\, \alpha^\top A x + \frac{\beta^2}{2} x^\top A^\top \Sigma A x:$$
not affine in $x$. The closure is the Gaussian moment projection (`exact = False`) in closed
form. It exists only while $\Sigma^{-1} - \beta^2 A^\top \Sigma A$ is positive definite
(`integrability_margin` > 0); past that `gf.solve` stops with status `"not_integrable"`.
"""

from ..attention import Attention, NoNormalisation
from ..attention.symbols import dot_score


class Unnormalized(Attention):
    r"""Unnormalised attention $\mathbb{E}_{Y \sim \mu}[e^{\beta\langle Q x, K Y\rangle} W_O V Y]$.

    An approximate closure. `Unnormalized(Q, K, V, W_O=None, *, beta=1.0)`;
    `integrability_margin` and `log_mass` describe the domain (see the module docstring).
    """

    name = "unnormalized"
    score = dot_score
    normalisation = NoNormalisation("exp")
    defaults = {"W_O": "identity"}
    example_scales = {"beta": 0.3}
