"""Mirrored (antithetic) clouds, the effective number of keys per query, and the clustering gap."""

import warnings

import numpy as np
import pytest

import gaussflow as gf
from gaussflow import particles as P
from gaussflow.reproduce_clustering import clustering_schedule, spectrum_gap


# ----------------------------------------------------------------------------- sampler
@pytest.mark.parametrize("n", [1, 2, 7, 8, 1001])
def test_antithetic_mean_exact_and_pairs_mirrored(n):
    g = gf.Gaussian([3.0, -1.0, 100.0], [[2.0, 0.3, 0.0], [0.3, 1.0, 0.1], [0.0, 0.1, 0.5]])
    X = P.sample(g, n, seed=4, method="antithetic")
    assert X.shape == (n, 3)
    scale = np.abs(X).max()
    np.testing.assert_allclose(X.mean(axis=0), g.mean, rtol=0, atol=4 * np.finfo(float).eps * scale)
    body = X[n % 2:]  # odd n: the first row is the mean itself
    assert len(body) == 2 * (n // 2)
    if n > 1:
        pair_sums = body[0::2] + body[1::2]
        np.testing.assert_allclose(pair_sums, np.broadcast_to(2 * g.mean, pair_sums.shape), rtol=0,
                                   atol=4 * np.finfo(float).eps * scale)
    if n % 2:
        np.testing.assert_array_equal(X[0], g.mean)
    np.testing.assert_array_equal(X, P.sample(g, n, seed=4, method="antithetic"))


def test_antithetic_covariance_tends_to_target():
    g = gf.Gaussian([1.0, 2.0], [[2.0, 0.5], [0.5, 1.0]])
    _, S = P.empirical_moments(P.sample(g, 20000, seed=0, method="antithetic"))
    # 10000 independent pairs: relative error ~ sqrt(2 / 10000) = 0.014 per entry
    np.testing.assert_allclose(np.asarray(S), g.cov, atol=0.06)
    assert "antithetic" in P.SAMPLERS
    with pytest.raises(ValueError, match="method must be one of"):
        P.sample(g, 4, method="mirror")


def test_masked_sample_antithetic_blocks_exact():
    d = 2
    f = gf.Masked(gf.Softmax(np.eye(d), -np.eye(d), np.eye(d)), n_blocks=2)
    pg = gf.PositionalGaussians([[0.5, -1.0], [2.0, 0.0]], [np.eye(d), 2 * np.eye(d)])
    X, pos = f.sample(pg, 6, seed=1, method="antithetic")
    np.testing.assert_allclose(X.reshape(2, 6, d).mean(axis=1), pg.means, atol=1e-14)
    assert np.all(np.diff(pos) > 0)


def test_antithetic_mean_stays_put_while_independent_mean_grows():
    """The mean mode: ``K = -Q``, ``V = I`` expands the mean like ``e^t`` off the range of ``Q``.
    An independent cloud's ``O(N^{-1/2})`` mean error grows; a mirrored cloud about 0 stays
    symmetric (the field is odd), so its mean stays at 0 to round-off."""
    d = 3
    Q = np.array([[1.0, 0.5, -0.2]])
    f = gf.Softmax(Q, -Q, np.eye(d), beta=1.0)
    g0 = gf.Gaussian(np.zeros(d), np.eye(d))
    ts = np.linspace(0.0, 2.0, 5)
    mi, _ = P.simulate(f, P.sample(g0, 64, seed=0), ts).moments()
    ma, _ = P.simulate(f, P.sample(g0, 64, seed=0, method="antithetic"), ts).moments()
    grow = np.linalg.norm(mi, axis=1)
    assert grow[-1] > 3 * grow[0] > 0  # e^2 = 7.4 along ker Q
    assert np.max(np.abs(ma)) < 1e-12


# ---------------------------------------------------------------------- effective keys
def _dense_keys(scores):
    w = np.exp(scores - scores.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return 1.0 / np.sum(w**2, axis=1)


def test_effective_keys_uniform_one_dominant_and_dense():
    d, n = 3, 40
    X = np.random.default_rng(0).normal(size=(n, d))
    zero = gf.Softmax(np.zeros((d, d)), np.zeros((d, d)), np.eye(d))
    np.testing.assert_allclose(P.effective_keys(zero, X), n, rtol=1e-12)  # uniform: N keys
    # every query on one key: scores beta <x, y> with beta = 1e3 peak at y = argmax <x, y>
    sharp = gf.Softmax(np.eye(d), np.eye(d), np.eye(d), beta=1e3)
    e = P.effective_keys(sharp, X)
    np.testing.assert_allclose(e, _dense_keys(1e3 * X @ X.T), rtol=1e-10)
    assert np.all((e >= 1.0) & (e < 1.001))
    mid = gf.Softmax(np.eye(d), np.eye(d), np.eye(d), beta=0.3)
    ref = _dense_keys(0.3 * X @ X.T)
    np.testing.assert_allclose(P.effective_keys(mid, X), ref, rtol=1e-12)
    np.testing.assert_allclose(P.effective_keys(mid, X, block=7), ref, rtol=1e-12)
    out = P.effective_keys(mid, np.stack([X, 2 * X]))
    assert out.shape == (2, n)
    np.testing.assert_allclose(out[1], _dense_keys(1.2 * X @ X.T), rtol=1e-12)
    # causal: query i sees keys j <= i; the first sees only itself
    pos = np.arange(n) / n
    causal = P.effective_keys(mid, X, positions=pos)
    s = np.where(np.tril(np.ones((n, n))) > 0, 0.3 * X @ X.T, -np.inf)
    np.testing.assert_allclose(causal, _dense_keys(s), rtol=1e-12)
    assert causal[0] == pytest.approx(1.0)


def test_effective_keys_sums_and_sinkhorn():
    d, n = 2, 30
    X = np.random.default_rng(1).normal(size=(n, d))
    a = gf.Softmax(np.eye(d), np.eye(d), np.eye(d), beta=0.2)
    b = gf.Softmax(np.eye(d), np.eye(d), np.eye(d), beta=2.0)
    np.testing.assert_allclose(P.effective_keys(a + b, X),
                               np.minimum(P.effective_keys(a, X), P.effective_keys(b, X)))
    sk = gf.Sinkhorn(np.zeros((d, d)), np.zeros((d, d)), np.eye(d))
    np.testing.assert_allclose(P.effective_keys(sk, X), n, rtol=1e-10)
    sk = gf.Sinkhorn(np.eye(d), np.eye(d), np.eye(d), beta=1.0, eps=1.0)
    e = P.effective_keys(sk, X)
    assert np.all((e >= 1 - 1e-9) & (e <= n + 1e-9))


def test_effective_keys_refuses_clearly():
    d = 2
    X = np.zeros((5, d))
    un = gf.Unnormalized(np.eye(d), np.eye(d), np.eye(d))
    with pytest.raises(TypeError, match="unnormalised"):
        P.effective_keys(un, X)
    sm = gf.Softmax(np.eye(d), np.eye(d), np.eye(d))
    with pytest.raises(TypeError, match="layer schedule"):
        P.effective_keys(gf.Layers([(sm, 1.0), (sm, 1.0)]), X)
    with pytest.raises(ValueError, match="dimension"):
        P.effective_keys(sm, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        P.effective_keys(sm, np.full((5, d), np.nan))
    sk = gf.Sinkhorn(np.eye(d), np.eye(d), np.eye(d))
    with pytest.raises(ValueError, match="causal mask"):
        P.effective_keys(sk, X, positions=np.arange(5) / 5)
    with pytest.raises(TypeError, match="inner field"):
        P.effective_keys(gf.Masked(sm, n_blocks=2), X)


# ------------------------------------------------------------------------- validation
def test_validate_reports_effective_keys_and_warns_when_few():
    d = 2
    g0 = gf.Gaussian(np.zeros(d), np.eye(d))
    mild = gf.Softmax(np.eye(d), -np.eye(d), np.eye(d), beta=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        rep = gf.validate(mild, g0, 0.5, n_particles=(32, 64), seeds=(0,), sampler="antithetic")
    keys = rep.info["effective_keys"]
    assert keys["threshold"] == P.EFFECTIVE_KEYS_WARN == 3
    assert set(keys["summary"]) == {"32", "64"}
    assert len(keys["min"]["64"][0]) == len(rep.ts)
    assert keys["summary"]["64"]["median"] > 10
    assert "effective keys 1/sum_j w_ij^2" in str(rep)
    assert rep.info["sampler"] == "antithetic"
    sharp = gf.Softmax(np.eye(d), -np.eye(d), np.eye(d), beta=50.0)
    with pytest.warns(RuntimeWarning, match="far from its mean-field limit"):
        rep = gf.validate(sharp, g0, 0.02, n_particles=(32, 64), seeds=(0,))
    assert rep.info["effective_keys"]["summary"]["32"]["median"] < 3
    assert any("far from its mean-field limit" in r for r in rep.reasons)
    assert rep.to_dict()["info"]["effective_keys"]["threshold"] == 3


def test_validate_refuses_unknown_sampler_before_work():
    d = 2
    f = gf.Softmax(np.eye(d), -np.eye(d), np.eye(d))
    with pytest.raises(ValueError, match="antithetic"):
        gf.validate(f, gf.Gaussian(np.zeros(d), np.eye(d)), 1.0, sampler="mirror")


# ---------------------------------------------------------------------- clustering gap
def test_mirrored_clouds_close_the_clustering_gap():
    """Three random layers (K = -Q, V = I + 0.1 G) in d = 4, N = 64: independent clouds part
    from the closure (gap 0.17-0.23 over seeds 0-3, median query on ~1 key), mirrored ones
    follow it (gap 0.005-0.010, 17-35 keys)."""
    d = 4
    sched = clustering_schedule(d=d, n_layers=3, seed=0)
    g0 = gf.Gaussian(np.zeros(d), np.eye(d))
    ind = spectrum_gap(sched, P.sample(g0, 64, seed=0))
    mir = spectrum_gap(sched, P.sample(g0, 64, seed=0, method="antithetic"))
    assert ind["statuses"] == mir["statuses"] == ("completed", "completed")
    assert mir["gap"] < 0.2 * ind["gap"]
    assert ind["keys_median"] < P.EFFECTIVE_KEYS_WARN < mir["keys_median"]
    assert mir["mean_spreads"] < 1e-10 < 1.0 < ind["mean_spreads"]


def test_gap_plot_and_cli_choices(tmp_path):
    from gaussflow import plots, plots_regimes
    from gaussflow.cli import build_parser

    rows = {"gap": [[0.1, 0.12], [0.11, 0.1]], "keys_median": [], "mean_spreads": [],
            "statuses": []}
    summary = {"n_particles": [64, 128],
               "cases": {"1 layer": {"random": rows, "antithetic": rows}}}
    assert plots.save(plots_regimes.gap_against_n(summary), str(tmp_path / "gap")).endswith(".png")
    ap = build_parser()
    assert ap.parse_args(["reproduce", "--only", "clustering_gap"]).only == ["clustering_gap"]
    assert ap.parse_args(["validate", "softmax", "--sampler", "antithetic"]).sampler == "antithetic"
    with pytest.raises(SystemExit):
        ap.parse_args(["validate", "softmax", "--sampler", "mirror"])
