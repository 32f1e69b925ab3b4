"""Unnormalised exponential attention: weights ``exp(beta <Q x, K y>)``, not normalised over y.

``Gamma[mu](x) = int exp(s(x, y)) W_O V y dmu(y)`` with ``s(x, y) = beta <Q x, K y> = beta y^T A x``,
``A = K^T Q``. For ``mu = N(alpha, Sigma)``, completing the square in y gives
``Gamma(x) = Z(x) W_O V m(x)`` with ``m(x) = alpha + beta Sigma A x`` and
``log Z(x) = beta alpha^T A x + beta^2/2 x^T A^T Sigma A x``: not affine in x, so the Gaussian family
is not invariant. The closure is the Gaussian moment projection
``d alpha/dt = E[Gamma(X)]``, ``d Sigma/dt = J Sigma + Sigma J^T``, ``J = E[grad Gamma(X)]``,
``X ~ N(alpha, Sigma)`` (``exact = False``); both expectations are Gaussian integrals of
exp-quadratic times affine, in closed form. They exist only while
``Sigma^{-1} - beta^2 A^T Sigma A`` is positive definite (``I - beta^2 Sigma^{1/2} A^T Sigma A
Sigma^{1/2} > 0``); past that ``gf.solve`` stops with status ``"not_integrable"``.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..derive import symbols as S
from ..derive.calculus import expect_exp_quadratic_affine, simplify_matrix
from ..derive.derivation import Step
from ..derive.engine import build, value_map
from ..derive.special import Scalar
from ..codegen import generate_function
from .attention import DotProductAttention

#: ``_domain_ok`` is False once the smallest eigenvalue of the integrability matrix
#: ``I - beta^2 Sigma^{1/2} A^T Sigma A Sigma^{1/2}`` falls below this margin ...
INTEGRABILITY_MARGIN = 1e-6
#: ... or once the closure's rate ``max |J_ij|`` exceeds this (time scale below ``1e-8``). Near the
#: boundary the integrals grow like ``exp(c / margin) margin^{-k}`` (c > 0 when alpha is not 0):
#: the trajectory then is within solver resolution of the divergence time.
RATE_MAX = 1e8


class Unnormalized(DotProductAttention):
    """Unnormalised attention ``Gamma[mu](x) = E_{Y ~ mu}[exp(beta <Q x, K Y>) W_O V Y]`` (approximate closure).

    Parameters: ``Q, K`` (k, d), ``V`` (k_v, d), ``beta`` (explicit score scale, default 1),
    ``W_O`` (d, k_v; identity by default when ``k_v = d``). See the module docstring for the
    closure and its domain; :meth:`integrability_margin` gives the smallest eigenvalue of
    ``I - beta^2 Sigma^{1/2} A^T Sigma A Sigma^{1/2}`` (the integrals exist while it is > 0).
    """

    name = "unnormalized"
    exact = False
    normalisation = "none"
    weight = "exp"

    @classmethod
    def log_kernel(cls):
        """``log k(x, y) = beta (Q x)^T (K y)`` (the weights are ``exp`` of it, not normalised)."""
        return S.beta * (S.Q * S.x).T * (S.K * S.y)

    @classmethod
    def _derive(cls):
        return derive_unnormalised_exp(cls.name, cls.log_kernel())

    def _domain_ok(self, mean, cov):
        ok = self._margin(mean, cov) > INTEGRABILITY_MARGIN
        _, J = super()._closure(mean, cov)
        return ok & (jnp.max(jnp.abs(jnp.where(ok, J, jnp.inf))) < RATE_MAX)

    def log_mass(self, g):
        """``log E[exp(s(X, Y))]`` for ``X, Y`` iid ``~ N(g.mean, g.cov)`` (inf outside the domain)."""
        self._check_state(g)
        if self._margin(g.mean, g.cov) <= 0:
            return float("inf")
        return float(self.derivation().functions["log_mass"](g.mean[:, None], g.cov, *self._args()))

    def _margin(self, mean, cov):
        M = self.derivation().functions["integrability"](mean[:, None], cov, *self._args())
        return jnp.linalg.eigvalsh((M + M.T) / 2)[0]

    def integrability_margin(self, g):
        """Smallest eigenvalue of ``I + Sigma^{1/2} P Sigma^{1/2}`` (``P = -beta^2 A^T Sigma A``)."""
        self._check_state(g)
        return float(self._margin(g.mean, g.cov))

    def _closure(self, mean, cov):
        # Outside the domain the integrals diverge: return NaN so that a solver step crossing
        # the boundary is rejected (gf.solve reports "not_integrable" from _domain_ok).
        dm, J = super()._closure(mean, cov)
        ok = self._margin(mean, cov) > 0
        return jnp.where(ok, dm, jnp.nan), jnp.where(ok, J, jnp.nan)

    def _moment_rhs(self, mean, cov):
        dm, J = self._closure(mean, cov)
        JS = J @ cov
        return dm, JS + JS.T


def derive_unnormalised_exp(name, log_kernel, value=None):
    """Moment closure of attention with weights ``exp(log_kernel)`` and no normalisation.

    Two applications of :func:`~gaussflow.derive.calculus.expect_exp_quadratic_affine`: in the key
    ``y`` (the velocity ``Z(x) W_O V m(x)``), then in the query ``x`` with log-weight ``log Z(x)``
    (the expectations ``E[Gamma(X)]`` and ``E[grad Gamma(X)]``).
    """
    value = value_map() if value is None else value
    sym = (S.Sigma,)
    inner = expect_exp_quadratic_affine(log_kernel, value * S.y, S.y, S.alpha, S.Sigma, Scalar)
    if inner.precision_factor != sp_identity():
        raise ValueError("derive_unnormalised_exp needs a log-kernel linear in y")
    log_Z = inner.log_mass
    m_x = simplify_matrix(inner.mean, sym)
    velocity = inner.mass * (value * m_x)
    outer = expect_exp_quadratic_affine(log_Z, value * m_x, S.x, S.alpha, S.Sigma, Scalar)
    mean_rhs = outer.mass * outer.value
    J = outer.mass * outer.jacobian
    cov_rhs = J * S.Sigma + S.Sigma * J.T
    steps = [
        Step("Kernel", "Attention weights of key $y$ seen from query $x$, not normalised:",
             ((r"\log k(x, y)", log_kernel),)),
        Step("Expectation over keys (exp-quadratic times affine)",
             "Tilting $\\mathcal N(\\alpha, \\Sigma)$ by $k(x, \\cdot)$ (completing the square in $y$) "
             "gives the mass $Z(x) = E[k(x, Y)]$ and the tilted mean $m(x)$; "
             "$\\Gamma(x) = Z(x)\\, W_O V m(x)$, not affine in $x$:",
             ((r"\log Z(x)", log_Z), ("m(x)", inner.mean), (r"\Gamma(x)", velocity))),
        Step("Moment projection",
             "The Gaussian family is not invariant; project on it by matching the first two "
             "moments: $\\dot\\alpha = E[\\Gamma(X)]$, $\\dot\\Sigma = J\\Sigma + \\Sigma J^\\top$ with "
             "$J = E[\\nabla\\Gamma(X)]$, $X \\sim \\mathcal N(\\alpha, \\Sigma)$.", ()),
        Step("Expectation over queries (exp-quadratic times affine again)",
             "$\\Gamma(x) = e^{\\log Z(x)} W_O V m(x)$ with $\\log Z$ quadratic and $m$ affine: "
             "centre at $\\alpha$ and complete the square in $x$ (precision factor $B$). Then "
             "$E[\\Gamma(X)] = \\bar Z\\, W_O V m(\\bar\\mu)$ and $E[\\nabla\\Gamma(X)] = \\bar Z\\, W_O V"
             "\\,(J_m + E_{\\bar\\mu, \\bar\\Sigma}[m(X)\\nabla\\log Z(X)^\\top])$ with "
             "$\\bar Z = E[Z(X)]$ and the tilted law $\\mathcal N(\\bar\\mu, \\bar\\Sigma)$:",
             ((r"\bar Z", outer.mass), ("B", outer.precision_factor), (r"\bar\mu", outer.mean),
              (r"\bar\Sigma", outer.cov))),
        Step("Domain",
             "The integrals exist iff the tilted precision $\\Sigma^{-1}B$ is positive definite, "
             "i.e. iff this matrix is (checked at every step; `not_integrable` otherwise):",
             (("I + \\Sigma^{1/2} P \\Sigma^{1/2}", outer.integrability),)),
    ]
    notes = (
        "Approximation: Gaussian moment projection (the Gaussian family is not invariant).",
        "The integrals diverge once Sigma^{-1} - beta^2 A^T Sigma A (A = K^T Q) loses positive "
        "definiteness; gf.solve stops there with status 'not_integrable' (margin "
        f"{INTEGRABILITY_MARGIN:g} on the smallest eigenvalue of the integrability matrix, or "
        f"closure rate max|J_ij| > {RATE_MAX:g}: near the boundary the integrals grow like "
        "exp(c / margin) margin^-k, so the trajectory is then within solver resolution of the "
        "divergence time).",
    )
    D = build(name, False, velocity, mean_rhs, J, cov_rhs, steps, (), notes)
    from ..derive.derivation import signature

    _, mom_args = signature(D.params)
    import sympy as sp

    log_mass = Scalar(outer.log_mass) - sp.log(sp.Determinant(outer.precision_factor)) / 2
    extra = generate_function("integrability", mom_args, [outer.integrability],
                              doc="I + Sigma^{1/2} P Sigma^{1/2}: positive definite iff the "
                                  "closure's integrals exist.")
    extra += "\n" + generate_function("log_mass", mom_args, [log_mass],
                                      doc="log E[Z(X)] = log E[exp(s(X, Y))], X, Y iid.")
    import dataclasses

    return dataclasses.replace(D, jax_source=D.jax_source + "\n" + extra)


def sp_identity():
    from sympy import Identity

    return Identity(S.d)
