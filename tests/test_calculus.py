"""The Gaussian-calculus rules against brute force: SymPy integration (d = 1), Monte Carlo (d = 3)."""

import numpy as np
import pytest
import sympy as sp

import gaussflow as gf
from gaussflow.symbolic import symbols as S
from gaussflow.symbolic.calculus import (
    NotAffineError,
    affine_closure,
    complete_the_square,
    quadratic_coefficients,
)


def _scalarise(expr, values):
    """Evaluate a matrix expression with 1x1 matrices substituted, as a scalar SymPy expression."""
    sub = {sym: sp.ImmutableMatrix([[val]]) for sym, val in values.items()}
    out = expr.xreplace(sub)
    out = out.subs({S.d: 1, S.k: 1, S.k_v: 1}).doit()
    if hasattr(out, "shape"):
        out = sp.Matrix(out)[0, 0]
    return sp.simplify(out)


def test_complete_the_square_matches_sympy_integration_d1():
    """Tilt of N(a, s) by exp(h y - p y^2 / 2): mean, variance and normaliser by direct integration."""
    yy = sp.Symbol("yy", real=True)
    a = sp.Symbol("a", real=True)
    s, hh, p = sp.symbols("s h p", positive=True)
    H = sp.MatrixSymbol("H", S.d, 1)
    Pm = sp.MatrixSymbol("P", S.d, S.d)
    log_kernel = H.T * S.y - sp.Rational(1, 2) * S.y.T * Pm * S.y
    tilt = complete_the_square(log_kernel, S.y, S.alpha, S.Sigma)
    vals = {S.alpha: a, S.Sigma: s, H: hh, Pm: p}
    density = sp.exp(-(yy - a) ** 2 / (2 * s)) / sp.sqrt(2 * sp.pi * s)
    weight = sp.exp(hh * yy - p * yy**2 / 2)
    Z = sp.simplify(sp.integrate(density * weight, (yy, -sp.oo, sp.oo)))
    m1 = sp.simplify(sp.integrate(yy * density * weight, (yy, -sp.oo, sp.oo)) / Z)
    m2 = sp.simplify(sp.integrate(yy**2 * density * weight, (yy, -sp.oo, sp.oo)) / Z)
    assert sp.simplify(_scalarise(tilt.mean, vals) - m1) == 0
    assert sp.simplify(_scalarise(tilt.cov, vals) - (m2 - m1**2)) == 0
    logZ = _scalarise(tilt.log_norm, vals) - sp.log(1 + s * p) / 2
    num = {a: 0.3, s: 0.7, hh: 1.1, p: 0.4}
    assert float(logZ.subs(num)) == pytest.approx(float(sp.log(Z).subs(num)), rel=1e-12)


def test_softmax_velocity_matches_sympy_integration_d1():
    yy = sp.Symbol("yy", real=True)
    a, xx, q, kk, v = sp.symbols("a xx q kk v", real=True)
    s, beta = sp.symbols("s beta", positive=True)
    D = gf.derive("softmax")
    vals = {S.alpha: a, S.Sigma: s, S.x: xx, S.Q: q, S.K: kk, S.V: v, S.W_O: 1}
    vel = _scalarise(D.velocity.xreplace({S.beta: beta}), vals)
    density = sp.exp(-(yy - a) ** 2 / (2 * s))
    weight = sp.exp(beta * (q * xx) * (kk * yy))
    num = sp.integrate(v * yy * density * weight, (yy, -sp.oo, sp.oo))
    den = sp.integrate(density * weight, (yy, -sp.oo, sp.oo))
    assert sp.simplify(vel - num / den) == 0


def test_quadratic_coefficients_reads_l2_kernel():
    f = -S.c * (S.Q * S.x - S.K * S.y).T * (S.Q * S.x - S.K * S.y)
    quad = quadratic_coefficients(f, S.y)
    assert quad.P == 2 * S.c * S.K.T * S.K
    assert quad.h == 2 * S.c * S.K.T * S.Q * S.x


def test_not_quadratic_is_rejected():
    f = (S.y.T * S.y) * (S.y.T * S.y)
    with pytest.raises(ValueError, match="not quadratic"):
        quadratic_coefficients(f, S.y)


def test_affine_rule_rejects_nonaffine_field():
    with pytest.raises(NotAffineError):
        affine_closure(S.x * (S.x.T * S.x), S.x, S.alpha, S.Sigma)


def test_softmax_velocity_matches_monte_carlo_d3():
    """Self-normalised Monte Carlo of the softmax field at several points, within 5 standard errors."""
    rng = np.random.default_rng(7)
    d, n = 3, 400_000
    Q, K = rng.normal(size=(2, 2, d)) * 0.5
    V = rng.normal(size=(d, d))
    L = rng.normal(size=(d, d)) * 0.5
    cov = L @ L.T + 0.2 * np.eye(d)
    mean = rng.normal(size=d)
    f = gf.Softmax(Q, K, V, beta=0.8)
    g = gf.Gaussian(mean, cov)
    xs = rng.normal(size=(4, d))
    closure = np.asarray(f.velocity(g, xs))
    ys = rng.multivariate_normal(mean, cov, size=n)
    for x, vel in zip(xs, closure):
        logw = 0.8 * (ys @ K.T) @ (Q @ x)
        w = np.exp(logw - logw.max())
        w /= w.sum()
        vals = ys @ V.T
        est = w @ vals
        # delta-method standard error of a self-normalised estimator
        se = np.sqrt(np.sum(w[:, None] ** 2 * (vals - est) ** 2, axis=0))
        assert np.all(np.abs(est - vel) < 5 * se + 1e-12), (est, vel, se)
        assert np.all(5 * se < 0.05 * np.maximum(np.abs(vel), 1.0))
