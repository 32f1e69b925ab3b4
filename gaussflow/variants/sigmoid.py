r"""Sigmoid attention: weights $\sigma(\beta \langle Q x, K y\rangle + b)$, not normalised.

$$\Gamma[\mu](x) = \mathbb{E}_{Y \sim \mu}\big[\sigma(\beta \langle Q x, K Y\rangle + b)\,
W_O V Y\big], \qquad \sigma(z) = \frac{1}{1 + e^{-z}},$$
with $b$ the keyword argument `bias`.

**Relation to the bias $-\log n$.** A sigmoid-attention layer over $n$ tokens computes
$\sum_j \sigma(s_{ij} + b)\, W_O V x_j = n \cdot \frac{1}{n} \sum_j \dots$, i.e. $n$ times this
mean-field velocity (a time rescaling by $n$). With $b = -\log n$,
$n\, \sigma(s - \log n) = e^s / (1 + e^s / n) \to e^s$ as $n \to \infty$, so
$n \cdot$ `Sigmoid(bias=-log n)` tends to `gaussflow.Unnormalized` (pointwise in $x$, error
$O(e^{2 s} / n)$).

**Closure (approximate, `exact = False`).** Stein's lemma in the key (1-D Gauss–Hermite with
`gh_order` points: error below $10^{-10}$ for $\operatorname{sd}(Z) \le 3$ at the default 192),
chain rule in the query, and a cubature rule for the moment projection (`cubature`: `"auto"` =
tensor Gauss–Hermite for $d \le 3$ with `cubature_order` points per axis, else `"qmc"` Sobol with
`cubature_points` points; also `"gauss-hermite"`, `"degree5"`).
"""

import sympy as sp

from ..attention import Attention, NoNormalisation
from ..attention.symbols import dot_score
from ..symbolic.symbols import bias


class Sigmoid(Attention):
    r"""Sigmoid attention $\mathbb{E}_{Y \sim \mu}[\sigma(\beta\langle Qx, KY\rangle + b) W_O V Y]$.

    An approximate closure. `Sigmoid(Q, K, V, W_O=None, *, beta=1.0, bias=0.0, gh_order=192,
    cubature="auto", cubature_order=None, cubature_points=4096, seed=0)`, with $b$ = `bias`; see
    the module docstring.
    """

    name = "sigmoid"
    score = dot_score + bias * sp.OneMatrix(1, 1)
    normalisation = NoNormalisation("sigmoid")
    defaults = {"W_O": "identity", bias.name: 0.0}
    keywords = {bias.name: "bias"}
    notes = ("Bias: a layer over n tokens is n times this field; with b = -log n, "
             "n sigma(s - log n) -> e^s as n grows (the unnormalised field).",)
    example_scales = {bias.name: -1.0}
