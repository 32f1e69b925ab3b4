r"""Softmax self-attention: weights $e^{\beta\langle Q x, K y\rangle}$ normalised over $y \sim \mu$."""

from ..attention import Attention, SoftmaxNormalisation
from ..attention.symbols import dot_score


class Softmax(Attention):
    r"""Softmax attention: the softmax-weighted mean of the values,

    $$\Gamma[\mu](x) = \frac{\int e^{s(x, y)}\, W_O V y \,\mathrm{d}\mu(y)}
                             {\int e^{s(x, y)} \,\mathrm{d}\mu(y)}.$$

    `Softmax(Q, K, V, W_O=None, *, beta=1.0)`: score $s(x, y) = \beta \langle Q x, K y\rangle$
    (`Q`, `K` of shape `(k, d)`; $\beta$ explicit, any finite real), value map
    $y \mapsto W_O V y$ (`V` of shape `(k_v, d)`, `W_O` of shape `(d, k_v)`, identity by default
    when $k_v = d$). Exact Gaussian closure (derived):
    $\Gamma(x) = W_O V (\alpha + \beta \Sigma A x)$, $A = K^\top Q$.
    """

    name = "softmax"
    score = dot_score
    normalisation = SoftmaxNormalisation()
    defaults = {"W_O": "identity"}
