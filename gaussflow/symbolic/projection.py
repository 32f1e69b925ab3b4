r"""Rules for attention without normalisation:
$\Gamma(x) = E_{Y \sim \mu}[w(s(x, Y))\, v(Y)]$, with $v$ the value map.

One rule per weight function $w$ of the score $s$:

- $w(s) = s$ (linear attention), `derive_linear`: $E[s(x, Y)\, v(Y)]$ is a product of two
  affine functions of a Gaussian (`gaussflow.symbolic.calculus.gaussian_affine_product`); with a
  score affine in $x$ too, the velocity is affine and the closure exact.
- $w(s) = e^s$, `derive_unnormalised_exp`: completing the square in $y$ gives
  $\Gamma(x) = Z(x)\, v(m(x))$ with $\log Z$ quadratic in $x$: not affine, so the Gaussian
  moment projection $d\alpha/dt = E[\Gamma(X)]$, $J = E[\nabla\Gamma(X)]$ is taken in closed
  form by the same rule in $x$ (`gaussflow.symbolic.calculus.expect_exp_quadratic_affine`).
- $w(s) = \sigma(s)$ (sigmoid), `derive_sigmoid`: Stein's lemma in $y$ (one-dimensional
  Gauss–Hermite expectations), chain rule in $x$, a cubature rule for the projection.

Each returns a `gaussflow.symbolic.Derivation`; exactness is decided by
`gaussflow.symbolic.engine.finish` (affine velocity) or stated with the projection's name.
"""

from __future__ import annotations

from typing import Sequence

import sympy as sp
from sympy import Identity, MatrixExpr

from . import symbols as S
from .calculus import (
    NotAffineError,
    expect_exp_quadratic_affine,
    gaussian_affine_product,
    is_zero_matrix,
    jacobian_weighted,
    quadratic_coefficients,
    simplify_matrix,
    stein_linear_index,
)
from .derivation import Derivation, Step, order_params
from .engine import build, finish, kernel_step, value_map
from .special import GaussianExpectation, GaussianExpectationJacobian, LogisticGauss, Scalar

#: Symbols of the numerical rules of `derive_sigmoid` (parameters of its functions).
N_GH = sp.Symbol("n_GH", integer=True, positive=True)
CUBATURE = sp.Symbol("cubature")

MOMENT_PROJECTION = ("Gaussian moment projection: d alpha/dt = E[Gamma(X)], "
                     "J = E[grad Gamma(X)], X ~ N(alpha, Sigma)")


def derive_linear(name: str, score: MatrixExpr, value: MatrixExpr | None = None,
                  notes: Sequence[str] = ()) -> Derivation:
    r"""Attention with weights $s(x, y)$ themselves (no exponential, no normalisation).

    $\Gamma(x) = E[v(Y)\, s(x, Y)]$ with $s$ affine in $y$ and $v(y) = M y$ the value map: the
    expectation of a product of affine maps of $Y \sim \mathcal N(\alpha, \Sigma)$ is
    $v(\alpha)\, s(x, \alpha) + M \Sigma\, \nabla_y s$. For $s = \beta \langle Q x, K y\rangle$:
    $\Gamma(x) = \beta W_O V (\Sigma + \alpha\alpha^\top) K^\top Q x$.

    Parameters
    ----------
    name : str
        The variant's name (the derivation's title).
    score : MatrixExpr
        $s(x, y)$, a `(1, 1)` expression affine in the key $y$.
    value : MatrixExpr, optional
        The value matrix $M$ of the value map $y \mapsto M y$ (default $W_O V$).
    notes : sequence of str
        Remarks appended to the derivation's notes.

    Returns
    -------
    Derivation
        The symbolic derivation (exact when the velocity is affine in $x$).

    Raises
    ------
    NotAffineError
        When the score is not affine in $y$.
    """
    value = value_map() if value is None else value
    try:
        mom = gaussian_affine_product(value * S.y, score, S.y, S.alpha, S.Sigma, (S.Sigma,))
    except NotAffineError:
        raise NotAffineError(f"{name}: linear weights need a score affine in the key y; got "
                             f"s(x, y) = {score}") from None
    velocity = simplify_matrix(mom, (S.Sigma,))
    steps = [
        Step("Kernel", "Weight of key $y$ seen from query $x$: the score itself, not normalised:",
             ((r"s(x, y)", score),)),
        Step("Gaussian moments",
             "Both the score and the value are affine in $y$, so "
             "$E[v(Y) s(x, Y)] = v(\\alpha) s(x, \\alpha) + \\nabla v\\, \\Sigma\\, \\nabla_y s^\\top$:",
             ((r"\Gamma(x)", velocity),)),
    ]
    return finish(name, velocity, steps, notes)


def derive_unnormalised_exp(name: str, log_kernel: MatrixExpr, value: MatrixExpr | None = None,
                            notes: Sequence[str] = ()) -> Derivation:
    r"""Moment closure of attention with weights $\exp(\mathtt{log\_kernel})$ and no normalisation.

    Two applications of `gaussflow.symbolic.calculus.expect_exp_quadratic_affine`: in the key $y$
    (the velocity $Z(x)\, v(m(x))$; the kernel may be quadratic in $y$ with an $x$-free
    quadratic part $P$, whose $\det(I + \Sigma P)^{-1/2}$ is a constant factor), then in the
    query $x$ with log-weight $\log Z(x)$ (the expectations $E[\Gamma(X)]$ and
    $E[\nabla\Gamma(X)]$). The integrals exist while $I + \Sigma^{1/2} P_x \Sigma^{1/2}$ is
    positive definite (generated as `integrability`; `log_mass` is $\log E[Z(X)]$).

    Parameters
    ----------
    name : str
        The variant's name (the derivation's title).
    log_kernel : MatrixExpr
        $\log k(x, y)$, e.g. the score $s(x, y)$: a `(1, 1)` expression quadratic in $y$ (with
        an $x$-free quadratic part) and, after the first rule, in $x$.
    value : MatrixExpr, optional
        The value matrix $M$ of the value map $v(y) = M y$ (default $W_O V$).
    notes : sequence of str
        Remarks appended to the derivation's notes.

    Returns
    -------
    Derivation
        The approximate (closed-form moment projection) derivation, with the extra programs
        `integrability` and `log_mass`.

    Raises
    ------
    NotAffineError
        When the quadratic part in $y$ of the log-kernel depends on $x$.
    """
    value = value_map() if value is None else value
    sym = (S.Sigma,)
    inner = expect_exp_quadratic_affine(log_kernel, value * S.y, S.y, S.alpha, S.Sigma, Scalar)
    B = inner.precision_factor
    if B.has(S.x):
        raise NotAffineError(f"{name}: the quadratic part in y of the log-kernel depends on x")
    const = sp.Integer(1) if B == Identity(S.d) else 1 / sp.sqrt(sp.Determinant(B))
    log_Z = inner.log_mass
    m_x = simplify_matrix(inner.mean, sym)
    velocity = inner.mass * (value * m_x)
    outer = expect_exp_quadratic_affine(log_Z, value * m_x, S.x, S.alpha, S.Sigma, Scalar)
    mean_rhs = const * outer.mass * outer.value
    J = const * outer.mass * outer.jacobian
    cov_rhs = J * S.Sigma + S.Sigma * J.T
    steps = [
        kernel_step(log_kernel, "Attention weights of key $y$ seen from query $x$, not "
                    "normalised:"),
        Step("Expectation over keys (exp-quadratic times affine)",
             "Tilting $\\mathcal N(\\alpha, \\Sigma)$ by $k(x, \\cdot)$ (completing the square in $y$, "
             "precision factor $B_y$) gives the mass $Z(x) = E[k(x, Y)]$ and the tilted mean $m(x)$; "
             "$\\Gamma(x) = Z(x)\\, v(m(x))$, not affine in $x$:",
             ((r"B_y", B), (r"\log Z(x) + \tfrac12 \log\det B_y", log_Z), ("m(x)", inner.mean),
              (r"\Gamma(x)", velocity))),
        Step("Moment projection",
             "The Gaussian family is not invariant; project on it by matching the first two "
             "moments: $\\dot\\alpha = E[\\Gamma(X)]$, $\\dot\\Sigma = J\\Sigma + \\Sigma J^\\top$ with "
             "$J = E[\\nabla\\Gamma(X)]$, $X \\sim \\mathcal N(\\alpha, \\Sigma)$.", ()),
        Step("Expectation over queries (exp-quadratic times affine again)",
             "$\\Gamma(x) = e^{\\log Z(x)} v(m(x))$ with $\\log Z$ quadratic and $m$ affine: "
             "centre at $\\alpha$ and complete the square in $x$ (precision factor $B$). Then "
             "$E[\\Gamma(X)] = \\bar Z\\, v(m(\\bar\\mu))$ and $E[\\nabla\\Gamma(X)] = \\bar Z\\,"
             "(\\nabla(v \\circ m) + E_{\\bar\\mu, \\bar\\Sigma}[v(m(X))\\nabla\\log Z(X)^\\top])$ with "
             "$\\bar Z = E[Z(X)]$ and the tilted law $\\mathcal N(\\bar\\mu, \\bar\\Sigma)$:",
             ((r"\bar Z", const * outer.mass), ("B", outer.precision_factor),
              (r"\bar\mu", outer.mean), (r"\bar\Sigma", outer.cov))),
        Step("Domain",
             "The integrals exist iff the tilted precision $\\Sigma^{-1}B$ is positive definite, "
             "i.e. iff this matrix is (checked at every step; `not_integrable` otherwise):",
             (("I + \\Sigma^{1/2} P \\Sigma^{1/2}", outer.integrability),)),
    ]
    log_mass = Scalar(outer.log_mass) - sp.log(sp.Determinant(outer.precision_factor)) / 2
    if const != 1:
        log_mass = log_mass - sp.log(sp.Determinant(B)) / 2
    extras = (
        ("integrability", "state", (outer.integrability,),
         "I + Sigma^{1/2} P Sigma^{1/2}: positive definite iff the closure's integrals exist."),
        ("log_mass", "state", (log_mass,), "log E[Z(X)] = log E[exp(s(X, Y))], X, Y iid."),
    )
    return build(name, False, velocity, mean_rhs, J, cov_rhs, steps, (),
                 (f"Approximation: {MOMENT_PROJECTION}, in closed form.", *notes),
                 extras=extras, projection=MOMENT_PROJECTION + " (closed form)")


def derive_sigmoid(name: str, score: MatrixExpr, value: MatrixExpr | None = None,
                   notes: Sequence[str] = ()) -> Derivation:
    r"""Moment closure of attention with weights $\sigma(s(x, y))$, not normalised.

    For fixed $x$ the score must be an affine index $Z = w(x)^\top Y + b(x)$ of the key
    (read off by `gaussflow.symbolic.calculus.quadratic_coefficients`); Stein's lemma gives
    $E[\sigma(Z)\, Y] = \alpha E[\sigma(Z)] + \Sigma w\, E[\sigma'(Z)]$ with one-dimensional
    expectations (Gauss–Hermite with `n_GH` points). The projection's $d$-dimensional
    expectations use a cubature rule (parameter `cubature`) on the generated per-token
    functions `velocity` and `velocity_jacobian`.

    Parameters
    ----------
    name : str
        The variant's name (the derivation's title).
    score : MatrixExpr
        $s(x, y)$, a `(1, 1)` expression affine in the key $y$.
    value : MatrixExpr, optional
        The value matrix $M$ of the value map $y \mapsto M y$ (default $W_O V$).
    notes : sequence of str
        Remarks appended to the derivation's notes.

    Returns
    -------
    Derivation
        The approximate (cubature moment projection) derivation, with the extra program
        `velocity_jacobian` and the parameters `n_GH` and `cubature`.

    Raises
    ------
    NotAffineError
        When the score is not affine in $y$.
    """
    value = value_map() if value is None else value
    sym = (S.Sigma,)
    q = quadratic_coefficients(score, S.y, sym)
    if not is_zero_matrix(q.P):
        raise NotAffineError(f"{name}: sigmoid weights need a score affine in the key y "
                             f"(Stein's lemma on a linear index); got s(x, y) = {score}")
    w = q.h
    st = stein_linear_index(w, 0, S.alpha, S.Sigma)
    z_mean = simplify_matrix(st.z_mean + q.c0, sym) if not is_zero_matrix(q.c0) else st.z_mean
    mu, s = Scalar(z_mean), sp.sqrt(Scalar(st.z_var))
    E0, E1 = LogisticGauss(0, mu, s, N_GH), LogisticGauss(1, mu, s, N_GH)
    terms = [(E0, simplify_matrix(value * st.coef_f, sym)),
             (E1, simplify_matrix(value * st.coef_fprime, sym))]
    velocity = sp.MatAdd(*[c * F for c, F in terms])
    vel_jac = jacobian_weighted(terms, S.x, Scalar)
    params = order_params([velocity, CUBATURE])
    mean_rhs = GaussianExpectation(sp.Symbol("velocity"), CUBATURE, S.t, S.alpha, S.Sigma, *params)
    J = GaussianExpectationJacobian(sp.Symbol("velocity_jacobian"), CUBATURE, S.t, S.alpha,
                                    S.Sigma, *params)
    cov_rhs = J * S.Sigma + S.Sigma * J.T
    steps = [
        Step("Kernel", "Weight of key $y$ seen from query $x$: $\\sigma(s(x, y))$ with "
             "$\\sigma(z) = 1/(1 + e^{-z})$, not normalised, score:", ((r"s(x, y)", score),)),
        Step("Stein's lemma (expectation over keys)",
             "For fixed $x$ the score is a linear index $Z = w^\\top Y + b$ of $Y \\sim "
             "\\mathcal N(\\alpha, \\Sigma)$; Gaussian integration by parts gives "
             "$E[\\sigma(Z) Y] = \\alpha E[\\sigma(Z)] + \\Sigma w E[\\sigma'(Z)]$ with one-dimensional "
             "expectations over $Z \\sim \\mathcal N(\\mu_Z, s_Z^2)$, computed by Gauss–Hermite "
             "quadrature with $n_{GH}$ points:",
             (("w", w), (r"\mu_Z", z_mean), (r"s_Z^2", st.z_var), (r"\Gamma(x)", velocity))),
        Step("Jacobian (chain rule + Stein)",
             "$\\partial_\\mu E[\\sigma^{(k)}(\\mu + s\\xi)] = E[\\sigma^{(k+1)}]$ and, by Stein's lemma, "
             "$\\partial_s E[\\sigma^{(k)}(\\mu + s\\xi)] = s\\,E[\\sigma^{(k+2)}]$; so the $1/s$ of "
             "$\\nabla s_Z$ cancels:", ((r"\nabla\Gamma(x)", vel_jac),)),
        Step("Moment projection (cubature over queries)",
             "Project on Gaussians by matching moments: $\\dot\\alpha = E[\\Gamma(X)]$, "
             "$\\dot\\Sigma = J\\Sigma + \\Sigma J^\\top$, $J = E[\\nabla\\Gamma(X)]$, "
             "$X \\sim \\mathcal N(\\alpha, \\Sigma)$. These $d$-dimensional expectations have no "
             "closed form: a cubature rule (parameter `cubature`) is applied to the generated "
             "per-token functions `velocity` and `velocity_jacobian` at "
             "$x_i = \\alpha + \\Sigma^{1/2} u_i$.", (("J", J),)),
    ]
    notes = (
        f"Approximation: {MOMENT_PROJECTION}, by cubature.",
        "Numerical rules: 1-D Gauss-Hermite with n_GH points for E[sigma^(k)(Z)] (error < 1e-10 "
        "for sd(Z) <= 3 at n_GH = 192, 3e-10 at sd(Z) = 4); d-dimensional cubature for the outer "
        "expectations (tensor Gauss-Hermite, degree-5 symmetric rule or scrambled Sobol QMC).",
        *notes,
    )
    extras = (("velocity_jacobian", "token", (vel_jac,),
               "grad_x Gamma(x) (numerator layout), by the chain rule and Stein."),)
    return build(name, False, velocity, mean_rhs, J, cov_rhs, steps, (), notes,
                 extras=extras, projection=MOMENT_PROJECTION + " (cubature)",
                 extra_params=(CUBATURE,))
