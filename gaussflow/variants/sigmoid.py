"""Sigmoid attention: weights ``sigma(beta <Q x, K y> + bias)``, not normalised.

``Gamma[mu](x) = E_{Y ~ mu}[sigma(beta <Q x, K Y> + bias) W_O V Y]``, ``sigma(z) = 1 / (1 + e^{-z})``.

**Relation to the bias ``-log n``.** A sigmoid-attention layer over ``n`` tokens computes
``sum_j sigma(s_ij + b) W_O V x_j = n * (1/n) sum_j ...``, i.e. ``n`` times this mean-field
velocity (a time rescaling by ``n``). With ``b = -log n``,
``n sigma(s - log n) = e^s / (1 + e^s / n) -> e^s`` as ``n -> infinity``, so
``n * Sigmoid(bias=-log n)`` tends to :class:`~gaussflow.Unnormalized` (pointwise in x, error
``O(e^{2 s} / n)``).

**Closure (approximate, ``exact = False``).** Stein's lemma in the key (1-D Gauss–Hermite with
``gh_order`` points: error below ``1e-10`` for ``sd(Z) <= 3`` at the default 192), chain rule in
the query, and a cubature rule for the moment projection (``cubature``: ``"auto"`` = tensor
Gauss–Hermite for d <= 3 with ``cubature_order`` points per axis, else ``"qmc"`` Sobol with
``cubature_points`` points; also ``"gauss-hermite"``, ``"degree5"``).
"""

import sympy as sp

from ..attention import Attention, NoNormalisation
from ..attention.symbols import dot_score
from ..symbolic.symbols import bias


class Sigmoid(Attention):
    """Sigmoid attention ``E_{Y ~ mu}[sigma(beta <Q x, K Y> + bias) W_O V Y]`` (approximate closure).

    ``Sigmoid(Q, K, V, W_O=None, *, beta=1.0, bias=0.0, gh_order=192, cubature="auto",
    cubature_order=None, cubature_points=4096, seed=0)``; see the module docstring.
    """

    name = "sigmoid"
    score = dot_score + bias * sp.OneMatrix(1, 1)
    normalisation = NoNormalisation("sigmoid")
    defaults = {"W_O": "identity", bias.name: 0.0}
    keywords = {bias.name: "bias"}
    notes = ("Bias: a layer over n tokens is n times this field; with b = -log n, "
             "n sigma(s - log n) -> e^s as n grows (the unnormalised field).",)
    example_scales = {bias.name: -1.0}
