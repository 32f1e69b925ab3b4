"""Layer norm between layers (`gf.layer_norm_gaussian`): the derived delta method against the
Isserlis formulas written by hand, the exact moments against Monte Carlo, and the delta method's
error against the exact moments (falls with d and with the order)."""

import numpy as np
import pytest

import gaussflow as gf
from gaussflow.layernorm import derivation, layer_norm, ln_moments, ln_moments_exact, taylor_coefficients


def _state(d, seed=None):
    rng = np.random.default_rng(d if seed is None else seed)
    a = 0.5 + rng.normal(size=d)
    G = rng.normal(size=(d, d)) / np.sqrt(d)
    return a, G @ np.diag(rng.uniform(0.2, 2, d)) @ G.T + 0.1 * np.eye(d), rng


def test_moment_identities_by_monte_carlo():
    """E[y delta], E[y delta^2], E[y y^T delta], E[y y^T delta^2] of the module docstring, for
    y ~ N(a, S), delta = |y|^2/d - E|y|^2/d, each entry within 5 standard errors."""
    d = 5
    a, S, rng = _state(d, seed=3)
    y = a + rng.normal(size=(400_000, d)) @ np.linalg.cholesky(S).T
    v0 = (np.trace(S) + a @ a) / d
    dl = (y * y).sum(1) / d - v0
    Sa, S2, c, s2 = S @ a, S @ S, a @ S @ a, np.sum(S * S)
    aaT = np.outer(a, a)
    var_v = (2 * s2 + 4 * c) / d ** 2
    claims = [
        (y * dl[:, None], 2 / d * Sa),
        (y * dl[:, None] ** 2, a * var_v + 8 / d ** 2 * S @ Sa),
        (np.einsum("ni,nj->nij", y, y) * dl[:, None, None], 2 / d * (aaT @ S + S @ aaT + S2)),
        (np.einsum("ni,nj->nij", y, y) * dl[:, None, None] ** 2,
         (aaT * (4 * c + 2 * s2) + 8 * (aaT @ S2 + S2 @ aaT) + 8 * np.outer(Sa, Sa)
          + (4 * c + 2 * s2) * S + 8 * S2 @ S) / d ** 2),
    ]
    assert abs(dl.var() - var_v) < 5 * dl.var() * np.sqrt(2 / len(dl))
    for samples, formula in claims:
        m, se = samples.mean(0), samples.std(0) / np.sqrt(len(samples))
        assert np.all(np.abs(m - formula) <= 5 * se), (m - formula) / se


def test_taylor_coefficients():
    (f0, f1, f2), (g0, g1, g2) = taylor_coefficients(2.0, 0.5)
    assert np.allclose([f0, f1, f2], [2.5 ** -0.5, -0.5 * 2.5 ** -1.5, 0.75 * 2.5 ** -2.5])
    assert np.allclose([g0, g1, g2], [1 / 2.5, -1 / 2.5 ** 2, 2 / 2.5 ** 3])


def _hand_order2(a, S, eps=1e-12):
    """The order-2 moments from the Isserlis formulas above, written by hand (a reference)."""
    d = a.shape[0]
    v0 = (np.trace(S) + a @ a) / d
    (f0, f1, f2), (g0, g1, g2) = taylor_coefficients(v0, eps)
    Sa, S2, c, s2 = S @ a, S @ S, a @ S @ a, np.sum(S * S)
    aaT = np.outer(a, a)
    var_v = (2 * s2 + 4 * c) / d ** 2
    mean = f0 * a + f1 * 2 / d * Sa + 0.5 * f2 * (a * var_v + 8 / d ** 2 * S @ Sa)
    second = (g0 * (aaT + S) + g1 * 2 / d * (aaT @ S + S @ aaT + S2)
              + 0.5 * g2 * (aaT * (4 * c + 2 * s2) + 8 * (aaT @ S2 + S2 @ aaT)
                            + 8 * np.outer(Sa, Sa) + (4 * c + 2 * s2) * S + 8 * S2 @ S) / d ** 2)
    return mean, second - np.outer(mean, mean)


def test_derived_order2_equals_hand_formulas():
    """The engine's derivation (Wick's theorem + SymPy's Taylor coefficients, generated JAX)
    gives the hand-written second-order formulas to round-off; order 0 is the affine map."""
    for d in (5, 24):
        al, Sig, _ = _state(d)
        P = np.eye(d) - 1.0 / d
        a, S = P @ al, P @ Sig @ P
        m, C = ln_moments(a, S, 2)
        mh, Ch = _hand_order2(a, S)
        assert np.max(np.abs(m - mh)) < 1e-13 and np.max(np.abs(C - Ch)) < 1e-13
        m0, C0 = ln_moments(a, S, 0)
        f0 = 1 / np.sqrt((np.trace(S) + a @ a) / d + 1e-12)
        assert np.allclose(m0, f0 * a, atol=1e-14) and np.allclose(C0, f0 ** 2 * S, atol=1e-14)


def test_exact_moments_against_monte_carlo():
    """`ln_moments_exact` (Laplace integrals) against 200 000 draws with a control variate:
    within 5 standard errors entry by entry, at d = 6 (where the delta method is poor)."""
    d, n = 6, 200_000
    al, Sig, rng = _state(d, seed=11)
    P = np.eye(d) - 1.0 / d
    a, S = P @ al, P @ Sig @ P
    m, C = ln_moments_exact(a, S)
    X = al + rng.normal(size=(n, d)) @ np.linalg.cholesky(Sig).T
    Y = layer_norm(X, 1.0, 0.0)
    se_m = Y.std(0) / np.sqrt(n)
    assert np.all(np.abs(Y.mean(0) - m) < 5 * se_m)
    Yc = Y - m
    prods = np.einsum("ni,nj->nij", Yc, Yc)
    se_C = prods.std(0) / np.sqrt(n)
    assert np.all(np.abs(prods.mean(0) - C) < 5 * se_C + 1e-15)
    # the delta method is far off here (d = 6): the check above can tell them apart
    m2, C2 = ln_moments(a, S, 2)
    assert np.max(np.abs(C2 - C) / se_C) > 20


def _errors(d):
    al, Sig, _ = _state(d)
    P = np.eye(d) - 1.0 / d
    a, S = P @ al, P @ Sig @ P
    m_ex, C_ex = ln_moments_exact(a, S)
    out = {}
    for order in (0, 2, 4):
        m, C = ln_moments(a, S, order)
        out[order] = (np.linalg.norm(m - m_ex) / np.linalg.norm(m_ex),
                      np.linalg.norm(C - C_ex) / np.linalg.norm(C_ex))
    return out


def test_error_falls_with_d_and_order():
    """Against the exact moments: the leading-order mean error falls like 1/d (slope in
    [-1.3, -0.7] from d = 32 to 128); order 2 is at least 4 times better than order 0 at d = 128
    (both mean and covariance) and order 4 at least 3 times better than order 2 there."""
    e32, e128 = _errors(32), _errors(128)
    slope = np.log(e128[0][0] / e32[0][0]) / np.log(4)
    assert -1.3 < slope < -0.7, slope
    assert e128[2][0] < e128[0][0] / 4 and e128[2][1] < e128[0][1] / 4, e128
    assert e128[4][0] < e128[2][0] / 3 and e128[4][1] < e128[2][1] / 3, e128


def test_derivation_document():
    """The derivation is the engine's (Wick steps, generated source) and its document is the
    committed `derivations/layernorm.md`."""
    import pathlib
    D = derivation(2)
    assert not D.exact and "layer_norm_moments" in D.jax_source
    md = D.markdown()
    assert "Wick" in md and "Delta method" in md
    path = pathlib.Path(__file__).resolve().parents[1] / "derivations" / "layernorm.md"
    assert path.read_text() == md


def test_layer_norm_gaussian_api():
    d = 8
    a, S, rng = _state(d)
    gamma, beta = rng.uniform(0.5, 1.5, d), rng.normal(size=d)
    g = gf.layer_norm_gaussian(gf.Gaussian(a, S), gamma, beta)
    assert isinstance(g, gf.Gaussian)
    # LN removes the feature mean: the covariance annihilates gamma^{-1}, the mean is
    # beta + gamma * (something orthogonal to 1)
    assert np.max(np.abs(np.asarray(g.cov) @ (1 / gamma))) < 1e-12
    assert abs(np.sum((np.asarray(g.mean) - beta) / gamma)) < 1e-12
    for order in (4, "exact"):
        go = gf.layer_norm_gaussian(gf.Gaussian(a, S), gamma, beta, order=order)
        assert np.max(np.abs(np.asarray(go.cov) @ (1 / gamma))) < 1e-10
        assert abs(np.sum((np.asarray(go.mean) - beta) / gamma)) < 1e-10
    g0 = gf.layer_norm_gaussian(gf.Gaussian(a, S), order=0)
    assert np.allclose(np.sum(np.asarray(g0.mean)), 0, atol=1e-12)


def test_layer_norm_gaussian_bad_input():
    g = gf.Gaussian(np.zeros(4), np.eye(4))
    with pytest.raises(TypeError, match="g must be"):
        gf.layer_norm_gaussian(np.zeros(4))
    with pytest.raises(ValueError, match="gamma"):
        gf.layer_norm_gaussian(g, np.ones(3))
    with pytest.raises(ValueError, match="beta_ln"):
        gf.layer_norm_gaussian(g, None, np.ones(5))
    with pytest.raises(ValueError, match="eps"):
        gf.layer_norm_gaussian(g, eps=0.0)
    with pytest.raises(ValueError, match="order"):
        gf.layer_norm_gaussian(g, order=5)
    with pytest.raises(ValueError, match="order"):
        gf.layer_norm_gaussian(g, order="exakt")
    with pytest.raises(ValueError, match="d >= 2"):
        gf.layer_norm_gaussian(gf.Gaussian(np.zeros(1), np.eye(1)))
