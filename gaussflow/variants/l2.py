r"""L2 self-attention: weights $\exp(-c \|Q x - K y\|^2)$ normalised over $y \sim \mu$."""

from ..attention import Attention, SoftmaxNormalisation
from ..attention.symbols import K, Q, c, x, y


class L2(Attention):
    r"""L2 attention: the kernel-weighted mean of the values,

    $$\Gamma[\mu](x) = \frac{\int k(x, y)\, W_O V y \,\mathrm{d}\mu(y)}
                             {\int k(x, y) \,\mathrm{d}\mu(y)}.$$

    `L2(Q, K, V, W_O=None, *, c=1.0)`: kernel $k(x, y) = \exp(-c \|Q x - K y\|^2)$ with an
    explicit temperature $c > 0$ (no separate $\beta$), value map $y \mapsto W_O V y$. Exact
    Gaussian closure, derived by completing the square (the kernel is quadratic in $y$):
    $$\Gamma(x) = W_O V (I + 2c\, \Sigma K^\top K)^{-1} (\alpha + 2c\, \Sigma K^\top Q x)$$
    (a solve, no inverse).
    """

    name = "l2"
    score = -c * (Q * x - K * y).T * (Q * x - K * y)
    normalisation = SoftmaxNormalisation()
    defaults = {"W_O": "identity", "c": 1.0}
    example_scales = {"c": 0.5}
