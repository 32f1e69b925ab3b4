"""The mean-field limit from non-Gaussian data: samplers, W2, rate fits, and a small run."""

import numpy as np
import pytest

import gaussflow as gf
from gaussflow.particles import convergence as cv


def test_samplers_have_their_support_and_law():
    X = cv.uniform_sphere(3, radius=2.0).sample(2000, seed=1)
    assert X.shape == (2000, 3) and np.allclose(np.linalg.norm(X, axis=1), 2.0)
    assert np.abs(X.mean(0)).max() < 0.15
    B = cv.uniform_ball(3).sample(20000, seed=2)
    r = np.linalg.norm(B, axis=1)
    assert r.max() <= 1.0 and np.mean(r < 0.5) == pytest.approx(0.125, abs=0.01)  # volume r^d
    M = cv.gaussian_mixture([[-2.0, 0.0], [2.0, 0.0]], scale=0.1).sample(4000, seed=3)
    assert np.mean(M[:, 0] > 0) == pytest.approx(0.5, abs=0.03)
    assert np.allclose(cv.uniform_ball(2).sample(5, seed=4), cv.uniform_ball(2).sample(5, seed=4))


def test_wasserstein2_exact_and_sinkhorn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    shift = np.array([0.3, -0.4])
    assert cv.wasserstein2(X, X + shift) == pytest.approx(0.5, rel=1e-9)  # a translation
    Y = rng.normal(size=(400, 2)) * 1.5
    exact = cv.wasserstein2(X, Y, method="exact")
    assert cv.wasserstein2(X, Y, method="sinkhorn") == pytest.approx(exact, rel=0.1)
    with pytest.raises(ValueError, match="method"):
        cv.wasserstein2(X, Y, method="l1")
    with pytest.raises(ValueError, match="dimension"):
        cv.wasserstein2(X, rng.normal(size=(5, 3)))


def test_fit_rate_recovers_and_distinguishes_rates():
    ns = np.array([100, 200, 400, 800, 1600])
    rng = np.random.default_rng(1)
    noise = np.exp(0.05 * rng.normal(size=(5, 4)))
    p, spread = cv.fit_rate(ns, 3.0 * ns[:, None] ** -0.5 * noise)
    assert p == pytest.approx(0.5, abs=0.05) and 0 < spread < 0.1
    p_slow, _ = cv.fit_rate(ns, 3.0 * ns[:, None] ** -0.25 * noise)
    assert abs(p_slow - 0.25) < 0.05 and abs(p_slow - p) > 0.2  # a wrong rate is detected


@pytest.fixture(scope="module")
def small_report():
    rng = np.random.default_rng(0)
    Q = rng.normal(size=(2, 2)) / np.sqrt(2)
    f = gf.Softmax(Q, -Q, np.eye(2))
    return cv.mean_field_convergence(f, cv.uniform_ball(2), [32, 128, 512], 0.5, n_ref=2048,
                                     n_times=2, repeats=2)


def test_small_run_converges_in_n(small_report):
    rep = small_report
    assert rep.w2.shape == (3, 2, 2) and rep.closure_status == "completed"
    w = rep.w2.mean(axis=1)
    assert np.all(np.diff(w, axis=0) < 0)  # closer to the reference as N grows, at every time
    assert np.all(rep.rate > 0.15)
    # at t = 0 the closure starts from the reference moments: equal up to round-off
    assert rep.closure_cov_error[0] < 1e-13 and rep.closure_mean_error[0] < 1e-13
    # a uniform disk is not Gaussian: farther from its Gaussian than two Gaussian samples
    assert rep.gaussian_distance[0] > 1.3 * rep.gaussian_floor[0]
    assert "rate" in rep.table()


def test_bad_inputs_are_refused_before_work():
    f = gf.Softmax(np.eye(2), -np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match="dimension"):
        cv.mean_field_convergence(f, cv.uniform_ball(3), [8, 16], 1.0, n_ref=64)
    with pytest.raises(ValueError, match="ns must"):
        cv.mean_field_convergence(f, cv.uniform_ball(2), [16, 8], 1.0, n_ref=64)
    with pytest.raises(ValueError, match="ns must"):
        cv.mean_field_convergence(f, cv.uniform_ball(2), [8, 128], 1.0, n_ref=64)
