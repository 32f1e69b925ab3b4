"""The derivation engine: from a variant's kernel declaration to ODEs and JAX source.

A normalised exponential kernel ``k(x, y) = exp(f(x, y))`` with ``f`` quadratic in ``y`` is handled
by :func:`derive_normalised_exp`:

1. read off ``f = c0(x) + h(x)^T y - 1/2 y^T P y`` (:func:`~.calculus.quadratic_coefficients`);
2. tilt ``N(alpha, Sigma)`` by ``k(x, .)`` and complete the square (tilted mean ``m(x)``);
3. velocity ``Gamma(x) = (value map) m(x)``;
4. if ``Gamma`` is affine in ``x``, apply the affine closure rule (exact);
5. generate JAX source for the velocity, the closure ``(d alpha/dt, J)`` and ``(d alpha/dt, d Sigma/dt)``.

Other normalisations (Sinkhorn, none) plug their own rule in before step 3/4 and reuse
:func:`finish_affine` / :func:`build`.
"""

from __future__ import annotations

import sympy as sp
from sympy import Identity, ZeroMatrix

from . import symbols as S
from .calculus import (
    affine_closure,
    complete_the_square,
    inverse_rhs,
    quadratic_coefficients,
    simplify_matrix,
)
from .derivation import Derivation, Step, order_params, signature
from ..codegen import generate_function


def value_map():
    """The value map ``y -> W_O V y`` as a matrix expression acting on column vectors."""
    return S.W_O * S.V


def build(name, exact, velocity, mean_rhs, jacobian, cov_rhs, steps, closed_forms=(), notes=(),
          runtime=None, extra_params=()):
    """Assemble a :class:`Derivation`: order the parameters and generate the JAX source."""
    params = order_params([velocity, mean_rhs, jacobian, cov_rhs, *extra_params])
    vel_args, mom_args = signature(params)
    src = "\n".join([
        f"# gaussflow generated code: {name} closure. Vectors are (n, 1) columns.\n",
        generate_function("velocity", vel_args, [velocity],
                          doc=f"Gamma[N(alpha, Sigma)](x) for the {name} field."),
        generate_function("closure", mom_args, [mean_rhs, jacobian],
                          doc="(d alpha/dt, J) with d Sigma/dt = J Sigma + Sigma J^T."),
        generate_function("moment_rhs", mom_args, [mean_rhs, cov_rhs],
                          doc="(d alpha/dt, d Sigma/dt)."),
    ])
    return Derivation(name=name, exact=exact, params=params, velocity=velocity, mean_rhs=mean_rhs,
                      jacobian=jacobian, cov_rhs=cov_rhs, steps=tuple(steps),
                      closed_forms=tuple(closed_forms), notes=tuple(notes), jax_source=src,
                      runtime=dict(runtime or {}))


def identity_value_closed_form(cov_rhs):
    """With ``W_O = V = I``: ``d Sigma^{-1}/dt``; a closed form when it does not involve Sigma."""
    subs = {S.W_O: Identity(S.d), S.V: Identity(S.d)}
    if not cov_rhs.has(S.W_O) or not cov_rhs.has(S.V):
        return ()
    rhs = inverse_rhs(cov_rhs.xreplace(subs), S.Sigma)
    if rhs.has(S.Sigma):
        return ((r"\frac{d\Sigma^{-1}}{dt}\Big|_{W_O V = I}", rhs),)
    return (
        (r"\frac{d\Sigma^{-1}}{dt}\Big|_{W_O V = I}", rhs),
        (r"\Sigma(t)^{-1}\Big|_{W_O V = I}", simplify_matrix(
            sp.MatAdd(sp.MatrixSymbol("Sigma_0", S.d, S.d).inv(), sp.Symbol("t") * rhs))),
    )


def finish_affine(name, velocity, steps, notes=(), runtime=None):
    """Steps 4-5 for an affine velocity: the closure rule, closed forms, code generation."""
    cl = affine_closure(velocity, S.x, S.alpha, S.Sigma)
    steps = list(steps) + [
        Step(
            "Affine closure",
            "The velocity is affine in $x$ with Jacobian $J$; a Gaussian pushed by an affine field "
            "stays Gaussian, with $\\dot\\alpha = \\Gamma(\\alpha)$ and "
            "$\\dot\\Sigma = J\\Sigma + \\Sigma J^\\top$.",
            (("J", cl.jacobian), (r"\frac{d\alpha}{dt}", cl.mean_rhs),
             (r"\frac{d\Sigma}{dt}", cl.cov_rhs)),
        )
    ]
    closed = identity_value_closed_form(cl.cov_rhs)
    return build(name, True, velocity, cl.mean_rhs, cl.jacobian, cl.cov_rhs, steps, closed,
                 notes, runtime)


def derive_normalised_exp(name, log_kernel, value=None, notes=()):
    """Derive the closure of attention with weights ``exp(log_kernel(x, y))`` normalised over y."""
    value = value_map() if value is None else value
    quad = quadratic_coefficients(log_kernel, S.y, (S.Sigma,))
    tilt = complete_the_square(log_kernel, S.y, S.alpha, S.Sigma)
    velocity = simplify_matrix(value * tilt.mean, (S.Sigma,))
    steps = [
        Step("Kernel", "Attention weights of key $y$ seen from query $x$, normalised over "
             "$y \\sim \\mu$:", ((r"\log k(x, y)", log_kernel),)),
        Step("Canonical form in y",
             "Read off $\\log k = c_0(x) + h(x)^\\top y - \\tfrac12 y^\\top P y$:",
             (("h(x)", quad.h), ("P", quad.P))),
        Step("Tilted Gaussian (completing the square)",
             "$\\mathcal N(\\alpha,\\Sigma)(dy)\\,k(x,y)/Z(x)$ is Gaussian with precision "
             "$\\Sigma^{-1}B$, $B = I + \\Sigma P$:",
             (("m(x)", tilt.mean), (r"\Sigma_x", tilt.cov))),
        Step("Velocity", "$\\Gamma[\\mu](x) = W_O V\\, m(x)$:", ((r"\Gamma(x)", velocity),)),
    ]
    return finish_affine(name, velocity, steps, notes)


def zero_vector():
    return ZeroMatrix(S.d, 1)
