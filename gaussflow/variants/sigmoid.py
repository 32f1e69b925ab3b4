"""Sigmoid attention: weights ``sigma(beta <Q x, K y> + b)``, not normalised (Ramapuram et al. 2024).

``Gamma[mu](x) = E_{Y ~ mu}[sigma(beta <Q x, K Y> + b) W_O V Y]``, ``sigma(z) = 1 / (1 + e^{-z})``.

**Relation to the bias ``-log n``.** A sigmoid-attention layer over ``n`` tokens computes
``sum_j sigma(s_ij + b) W_O V x_j = n * (1/n) sum_j ...``, i.e. ``n`` times this mean-field
velocity (a time rescaling by ``n``). Ramapuram et al. set ``b = -log n``; then
``n sigma(s - log n) = e^s / (1 + e^s / n) -> e^s`` as ``n -> infinity``, so
``n * Sigmoid(bias=-log n)`` tends to :class:`~gaussflow.Unnormalized` (pointwise in x, error
``O(e^{2 s} / n)``).

**Closure (approximate, ``exact = False``).** For fixed ``x``, ``w = beta A x`` (``A = K^T Q``) and
``Z = w^T Y + b ~ N(w^T alpha + b, w^T Sigma w)``; Stein's lemma gives
``Gamma(x) = W_O V (alpha E[sigma(Z)] + Sigma w E[sigma'(Z)])``, whose one-dimensional expectations
are computed by Gauss–Hermite quadrature of order ``gh_order`` (error below ``1e-10`` for
``sd(Z) <= 3`` at the default 192; ``3e-10`` at ``sd(Z) = 4``). The moment projection ``d alpha/dt = E[Gamma(X)]``,
``d Sigma/dt = J Sigma + Sigma J^T``, ``J = E[grad Gamma(X)]`` (``grad Gamma`` derived by the chain
rule and Stein's lemma) takes a d-dimensional expectation over ``X ~ N(alpha, Sigma)`` by the
cubature rule ``cubature`` (:class:`~gaussflow.quadrature.Cubature`: ``"gauss-hermite"`` tensor rule
with ``cubature_order`` points per axis, ``"degree5"`` symmetric rule, ``"qmc"`` Sobol with
``cubature_points`` points).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import sympy as sp

from .._checks import as_scalar, positive_int
from ..codegen import generate_function
from ..derive import symbols as S
from ..derive.calculus import jacobian_weighted, simplify_matrix, stein_linear_index
from ..derive.derivation import Step, order_params, signature
from ..derive.engine import build, value_map
from ..derive.special import (
    GaussianExpectation,
    GaussianExpectationJacobian,
    LogisticGauss,
    Scalar,
)
from ..quadrature import Cubature
from .attention import DotProductAttention

#: Symbols of the numerical rules (parameters of the generated functions).
N_GH = sp.Symbol("n_GH", integer=True, positive=True)
CUBATURE = sp.Symbol("cubature")

#: Default points per axis of the tensor Gauss-Hermite rule, by dimension (``cubature="auto"``
#: uses it for d <= 3 and 4096 scrambled Sobol points above).
AUTO_ORDER = {1: 16, 2: 10, 3: 6}


class Sigmoid(DotProductAttention):
    """Sigmoid attention ``Gamma[mu](x) = E_{Y ~ mu}[sigma(beta <Q x, K Y> + bias) W_O V Y]`` (approximate closure).

    Parameters: ``Q, K`` (k, d), ``V`` (k_v, d), ``beta`` (score scale, default 1), ``bias``
    (finite; ``-log n`` mimics n tokens, see the module docstring), ``W_O`` (d, k_v), ``gh_order``
    (Gauss–Hermite points of the 1-D expectations, default 192), ``cubature`` (``"auto"``: tensor
    Gauss–Hermite with :data:`AUTO_ORDER` points per axis for d <= 3, else ``"qmc"``;
    ``"gauss-hermite"``, ``"degree5"`` or ``"qmc"``), ``cubature_order`` (points per axis of the
    tensor rule), ``cubature_points`` and ``seed`` (QMC, default 4096 points).
    """

    bias: jax.Array
    gh_order: int = eqx.field(static=True)
    cubature: Cubature = eqx.field(static=True)

    name = "sigmoid"
    exact = False
    normalisation = "none"
    weight = "sigmoid"

    def __init__(self, Q, K, V, beta=1.0, bias=0.0, W_O=None, *, gh_order=192,
                 cubature="auto", cubature_order=None, cubature_points=4096, seed=0):
        super().__init__(Q, K, V, beta=beta, W_O=W_O)
        self.bias = jax.numpy.asarray(as_scalar("bias", bias), dtype=jax.numpy.float64)
        self.gh_order = positive_int("gh_order", gh_order)
        if not isinstance(cubature, str):
            raise TypeError("cubature must be one of 'auto', 'gauss-hermite', 'degree5', 'qmc'; "
                            f"got {type(cubature).__name__}")
        d = self.dim
        if cubature == "auto":
            cubature = "gauss-hermite" if d <= 3 else "qmc"
        order = AUTO_ORDER.get(d, 4) if cubature_order is None else cubature_order
        self.cubature = Cubature(cubature, positive_int("cubature_order", order),
                                 positive_int("cubature_points", cubature_points),
                                 int(as_scalar("seed", seed)))

    @classmethod
    def log_kernel(cls):
        """The score ``beta (Q x)^T (K y) + b``; the weight is ``sigmoid`` of it (``weight = "sigmoid"``)."""
        return S.beta * (S.Q * S.x).T * (S.K * S.y) + S.bias * sp.OneMatrix(1, 1)

    score = log_kernel

    @classmethod
    def _derive(cls):
        return derive_sigmoid(cls.name)

    def _param_values(self) -> dict:
        vals = super()._param_values()
        vals.update({"bias": self.bias, "n_GH": self.gh_order, "cubature": self.cubature})
        return vals

    def velocity_jacobian(self, g, x):
        """``grad Gamma(x)`` (the derived per-token Jacobian), x of shape ``(d,)``."""
        self._check_state(g)
        f = self.derivation().functions["velocity_jacobian"]
        return f(jax.numpy.asarray(x, dtype=float)[:, None], g.mean[:, None], g.cov, *self._args())


def derive_sigmoid(name):
    """Moment closure of sigmoid attention: Stein's lemma in y, chain rule in x, cubature over X."""
    value = value_map()
    sym = (S.Sigma,)
    w = S.beta * S.K.T * S.Q * S.x
    st = stein_linear_index(w, S.bias, S.alpha, S.Sigma)
    mu, s = Scalar(st.z_mean), sp.sqrt(Scalar(st.z_var))
    E0, E1 = LogisticGauss(0, mu, s, N_GH), LogisticGauss(1, mu, s, N_GH)
    terms = [(E0, simplify_matrix(value * st.coef_f, sym)),
             (E1, simplify_matrix(value * st.coef_fprime, sym))]
    velocity = sp.MatAdd(*[c * F for c, F in terms])
    vel_jac = jacobian_weighted(terms, S.x, Scalar)
    params = order_params([velocity, CUBATURE])
    mean_rhs = GaussianExpectation(sp.Symbol("velocity"), CUBATURE, S.alpha, S.Sigma, *params)
    J = GaussianExpectationJacobian(sp.Symbol("velocity_jacobian"), CUBATURE, S.alpha, S.Sigma,
                                    *params)
    cov_rhs = J * S.Sigma + S.Sigma * J.T
    steps = [
        Step("Kernel", "Weight of key $y$ seen from query $x$: $\\sigma(s(x, y))$ with "
             "$\\sigma(z) = 1/(1 + e^{-z})$, not normalised, score:",
             ((r"s(x, y)", cls_score()),)),
        Step("Stein's lemma (expectation over keys)",
             "For fixed $x$ the score is a linear index $Z = w^\\top Y + b$ of $Y \\sim "
             "\\mathcal N(\\alpha, \\Sigma)$; Gaussian integration by parts gives "
             "$E[\\sigma(Z) Y] = \\alpha E[\\sigma(Z)] + \\Sigma w E[\\sigma'(Z)]$ with one-dimensional "
             "expectations over $Z \\sim \\mathcal N(\\mu_Z, s_Z^2)$, computed by Gauss–Hermite "
             "quadrature with $n_{GH}$ points:",
             (("w", w), (r"\mu_Z", st.z_mean), (r"s_Z^2", st.z_var),
              (r"\Gamma(x)", velocity))),
        Step("Jacobian (chain rule + Stein)",
             "$\\partial_\\mu E[\\sigma^{(k)}(\\mu + s\\xi)] = E[\\sigma^{(k+1)}]$ and, by Stein's lemma, "
             "$\\partial_s E[\\sigma^{(k)}(\\mu + s\\xi)] = s\\,E[\\sigma^{(k+2)}]$; so the $1/s$ of "
             "$\\nabla s_Z$ cancels:",
             ((r"\nabla\Gamma(x)", vel_jac),)),
        Step("Moment projection (cubature over queries)",
             "Project on Gaussians by matching moments: $\\dot\\alpha = E[\\Gamma(X)]$, "
             "$\\dot\\Sigma = J\\Sigma + \\Sigma J^\\top$, $J = E[\\nabla\\Gamma(X)]$, "
             "$X \\sim \\mathcal N(\\alpha, \\Sigma)$. These $d$-dimensional expectations have no "
             "closed form: a cubature rule (parameter `cubature`) is applied to the generated "
             "per-token functions `velocity` and `velocity_jacobian` at "
             "$x_i = \\alpha + \\Sigma^{1/2} u_i$.",
             (("J", J),)),
    ]
    notes = (
        "Approximation: Gaussian moment projection (the Gaussian family is not invariant).",
        "Numerical rules: 1-D Gauss-Hermite with n_GH points for E[sigma^(k)(Z)] (error < 1e-10 "
        "for sd(Z) <= 3 at n_GH = 192, 3e-10 at sd(Z) = 4); d-dimensional cubature for the outer expectations "
        "(tensor Gauss-Hermite, degree-5 symmetric rule or scrambled Sobol QMC).",
        "Bias: a layer over n tokens is n times this field; with b = -log n, "
        "n sigma(s - log n) -> e^s as n grows (the unnormalised field).",
    )
    D = build(name, False, velocity, mean_rhs, J, cov_rhs, steps, (), notes)
    vel_args, _ = signature(D.params)
    extra = generate_function("velocity_jacobian", vel_args, [vel_jac],
                              doc="grad_x Gamma(x) (numerator layout), by the chain rule and Stein.")
    return dataclasses.replace(D, jax_source=D.jax_source + "\n" + extra)


def cls_score():
    return Sigmoid.log_kernel()
