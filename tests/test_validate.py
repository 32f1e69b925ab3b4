"""Closure vs particles: exact closures are consistent (error ~ N^{-1/2}), a wrong closure is not."""

import importlib
import json

import numpy as np
import pytest

import gaussflow as gf
from gaussflow.validation import example
from gaussflow.validation_report import quantity_stats

V = importlib.import_module("gaussflow.validation")  # the module (gf.validate is the function)

D = 3
T1 = 0.5
NS = (32, 128, 512)
SEEDS = tuple(range(6))
BAND = (-0.75, -0.25)

_REPORTS = {}


def _report(name):
    """One validation per variant per test session (compiled once, shared by the tests)."""
    if name not in _REPORTS:
        field, g0, _ = example(name, d=D, seed=0)
        kw = {"n_particles": NS, "seeds": SEEDS}
        if name == "sinkhorn":
            # beta/eps = 1/2: fewer Sinkhorn iterations per evaluation (each is two N^2 passes).
            field = gf.Sinkhorn(field.Q, field.K, field.V, eps=2.0)
            kw = {"n_particles": NS, "seeds": (0, 1, 2, 3),
                  "particle_options": {"sinkhorn_tol": 1e-9}}
        _REPORTS[name] = (field, g0, gf.validate(field, g0, T1, rtol=1e-7, atol=1e-9, **kw))
    return _REPORTS[name]


@pytest.mark.parametrize("name", ["softmax", "multihead", "l2", "sinkhorn"])
def test_exact_closures_are_consistent(name):
    _, _, rep = _report(name)
    assert rep.exact and rep.verdict == "consistent", str(rep)
    assert rep.consistent is True
    tested = 0
    for q in ("mean", "cov"):
        st = rep.stats(q)
        if st.at_floor:
            continue
        tested += 1
        if name == "sinkhorn":
            # Measured: the Sinkhorn covariance error falls like 1/N, not N^{-1/2} (slope -0.79
            # over N = 32..512 with 6 seeds, -0.96 over 64..1024 with 4 seeds): the O(N^{-1/2})
            # fluctuation of the empirical coupling is below the O(1/N) finite-N term at these N.
            # Faster than Monte Carlo is no sign of a wrong closure; a bias would flatten it.
            assert st.slope <= BAND[1], str(rep)
        else:
            assert BAND[0] <= st.slope <= BAND[1], str(rep)
        assert st.band_ratio <= 2.0
    assert tested >= 1


def test_sinkhorn_mean_at_solver_accuracy():
    """Sinkhorn's particle mean obeys d m/dt = W_O V m exactly (column marginals), like the closure."""
    _, _, rep = _report("sinkhorn")
    assert rep.mean.at_floor and max(map(max, rep.mean.errors)) < 1e-6
    assert not rep.cov.at_floor
    assert rep.info["sinkhorn_converged"] and rep.info["sinkhorn_iterations_max"] > 1


def test_affine_closure_agrees_to_solver_accuracy():
    field, g0, _ = example("affine", d=D, seed=0)
    rep = gf.validate(field, g0, T1, n_particles=(8, 16), seeds=(0, 1))
    assert rep.verdict == "consistent"
    assert rep.mean.at_floor and rep.cov.at_floor
    assert max(map(max, rep.cov.errors)) < 1e-7


def test_cli_validate_writes_and_prints_its_report(tmp_path, capsys):
    """The same validation as the test above (same arguments: its compiled functions are reused
    in this process) through `gaussflow validate`: the HTML report, its path in --json, --quiet."""
    from gaussflow.cli import main
    from test_report import assert_self_contained, embedded_pngs

    argv = ["validate", "affine", "--d", str(D), "--n", "8,16", "--seeds", "0,1", "--t1",
            str(T1), "--out", str(tmp_path)]
    assert main(argv + ["--json", "--quiet"]) == 0  # --quiet: no progress bars, JSON still printed
    printed = json.loads(capsys.readouterr().out)
    path = printed["files"]["report"]
    assert path == str(tmp_path / "validate-affine.html") and printed["verdict"] == "consistent"
    page = open(path, encoding="utf-8").read()
    assert_self_contained(page)
    assert embedded_pngs(page) == [open(tmp_path / "validate-affine.png", "rb").read()]
    assert " ".join(["gaussflow"] + argv + ["--json", "--quiet"]) in page
    assert "verdict</th><td>consistent<" in page
    assert main(argv + ["--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert main(argv) == 0
    assert f"report: {path}" in capsys.readouterr().out


class FlippedSoftmax(gf.Field):
    """Softmax particles, but the covariance ODE's sign flipped: a deliberately wrong closure."""

    inner: gf.Softmax
    name = "softmax-flipped"

    @property
    def dim(self):
        return self.inner.dim

    def _velocity(self, t, mean, cov, x):
        return self.inner._velocity(t, mean, cov, x)

    def _closure(self, t, mean, cov):
        dm, J = self.inner._closure(t, mean, cov)
        return dm, -J  # d Sigma/dt = -(J Sigma + Sigma J^T)

    def _particle_velocity(self, X, ctx, positions=None, log_a=None, t=0.0):
        from gaussflow.particles import particle_velocity

        return particle_velocity(self.inner, X, positions, ctx, log_a, t)


def test_wrong_closure_is_inconsistent():
    soft, g0, good = _report("softmax")
    wrong = FlippedSoftmax(soft)
    # particle_field=soft: the softmax particle runs above are reused, only the closure differs
    rep = gf.validate(wrong, g0, T1, n_particles=NS, seeds=SEEDS, rtol=1e-7, atol=1e-9,
                      particle_field=soft)
    assert rep.verdict == "inconsistent", str(rep)
    assert rep.consistent is False
    assert rep.cov.slope > BAND[1] and rep.cov.band_ratio > 2.0
    assert rep.cov.rms[-1] > 5 * good.cov.rms[-1]


def test_report_outputs(tmp_path):
    _, _, rep = _report("softmax")
    text = str(rep)
    assert "verdict: consistent" in text and "slope" in text and "512" in text
    data = json.loads(rep.to_json())
    assert data["verdict"] == "consistent" and data["n_particles"] == list(NS)
    assert len(data["cov"]["errors"]) == len(NS) and len(data["cov"]["errors"][0]) == len(SEEDS)
    png = rep.plot(tmp_path / "val")
    assert png.endswith(".png") and (tmp_path / "val.png").stat().st_size > 1000


# --------------------------------------------------------------- statistics (synthetic data)
def _synthetic(c, b, seed=0, ns=(256, 1024, 4096), seeds=5):
    rng = np.random.default_rng(seed)
    ns = np.asarray(ns, float)
    return ns, np.sqrt(b**2 + (c**2 / ns)[:, None] * rng.chisquare(6, size=(len(ns), seeds)) / 6)


def test_statistics_on_synthetic_errors():
    ns, E = _synthetic(0.5, 0.0)
    st = quantity_stats(ns, E, True, BAND, 2.0, 1e-6)
    assert st.ok and BAND[0] <= st.slope <= BAND[1] and st.bias < 0.005
    ns, E = _synthetic(0.5, 0.02)  # a bias of 2%: plateau
    st = quantity_stats(ns, E, True, BAND, 2.0, 1e-6)
    assert not st.ok and st.slope > BAND[1]
    assert abs(st.bias - 0.02) < 0.004 and abs(st.mc_constant - 0.5) < 0.15
    st = quantity_stats(ns, E, False, BAND, 2.0, 1e-6)  # approximate: reports, no pass/fail
    assert st.ok is None
    st = quantity_stats(ns, np.full((3, 2), 1e-9), True, BAND, 2.0, 1e-6)
    assert st.at_floor and st.ok


def test_validate_bad_input():
    soft, g0, _ = example("softmax", d=2)
    with pytest.raises(ValueError, match="at least two distinct sizes"):
        gf.validate(soft, g0, 1.0, n_particles=(64,))
    with pytest.raises(ValueError, match="must exceed d"):
        gf.validate(soft, g0, 1.0, n_particles=(2, 64))
    with pytest.raises(ValueError, match="seeds must be distinct"):
        gf.validate(soft, g0, 1.0, seeds=(1, 1))
    with pytest.raises(ValueError, match="dimension"):
        gf.validate(soft, gf.Gaussian.standard(3), 1.0)
    with pytest.raises(ValueError, match="t1 must be > 0"):
        gf.validate(soft, g0, -1.0)
    with pytest.raises(ValueError, match="no example for variant"):
        example("nope")


# ------------------------------------------------------------------- masked (causal) fields
def _masked_case():
    """B = 2 blocks, d = 2: softmax weights (Q, -K, -V) (contracting mean), blocks differ."""
    rng = np.random.default_rng(7)
    Q, K = rng.normal(size=(2, 2, 2)) / np.sqrt(2)
    Vm = np.eye(2) + 0.3 * rng.normal(size=(2, 2))
    f = gf.Masked(gf.Softmax(Q, -K, -Vm, beta=0.5), n_blocks=2)
    S = np.array([[0.6, 0.15], [0.15, 0.4]])
    return f, gf.PositionalGaussians([[0.5, -0.25], [0.8, -0.4]], [S, 1.25 * S])


def test_masked_validate_is_the_benchmark_protocol():
    """gf.validate on a gf.Masked field reproduces benchmarks/approx_error.masked_errors (the
    hand-written per-cloud protocol the masked table was first made with), block by block."""
    from benchmarks import approx_error as AE

    f, pg = _masked_case()
    ts = np.array([0.0, 0.5, 1.0])
    rep = gf.validate(f, pg, 1.0, n_particles=(32, 64), seeds=(0,), ts=ts, blocks=[1],
                      **AE.LOOSE)
    assert not rep.exact and rep.verdict == "approximate", str(rep)
    assert rep.info["n_blocks"] == 2 and rep.info["blocks"] == [1]
    assert "tokens per block" in str(rep)
    for i, n in enumerate((32, 64)):
        X, pos = f.sample(pg, n, seed=0)
        em, ec = AE.masked_errors(f, X, pos, ts, AE.LOOSE)
        assert em.shape == (3, 2) and em[1:].min() > 1e-4  # real errors, not a trivial match
        c = rep.curves[str(n)]
        np.testing.assert_allclose(c["block_mean"][0], em, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(c["block_cov"][0], ec, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(c["mean"][0], em[:, 1], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(rep.cov.errors[i][0], ec[:, 1].max(), rtol=1e-12)
    # default blocks: all of them (particle runs reused from the cache)
    rep_all = gf.validate(f, pg, 1.0, n_particles=(32, 64), seeds=(0,), ts=ts, **AE.LOOSE)
    assert rep_all.info["blocks"] == [0, 1]
    bm = np.asarray(rep_all.curves["64"]["block_mean"][0])
    np.testing.assert_allclose(rep_all.mean.errors[1][0], bm.max(), rtol=1e-12)


def test_masked_validate_bad_input():
    f, pg = _masked_case()
    soft = f.field
    with pytest.raises(TypeError, match=r"gf.Masked\(field, n_blocks=2\)"):
        gf.validate(soft, pg, 1.0)
    with pytest.raises(TypeError, match="must be a gf.PositionalGaussians with 2 blocks"):
        gf.validate(f, pg.block(0), 1.0)
    with pytest.raises(TypeError, match="particle_field"):
        gf.validate(f, pg, 1.0, particle_field=soft)
    with pytest.raises(ValueError, match=r"tokens per block in n_particles\) must exceed d"):
        gf.validate(f, pg, 1.0, n_particles=(2, 64))
    with pytest.raises(ValueError, match=r"blocks must be .* in \[0, 2\)"):
        gf.validate(f, pg, 1.0, blocks=[2])
    with pytest.raises(TypeError, match="blocks must be a sequence of block indices"):
        gf.validate(f, pg, 1.0, blocks=[0.5])
    with pytest.raises(ValueError, match="batch='padded' cannot hold causal clouds"):
        gf.validate(f, pg, 1.0, batch="padded")
    with pytest.raises(ValueError, match="leave it None"):
        gf.validate(soft, pg.block(0), 1.0, blocks=[0])


def test_closure_blowup_before_t1_is_inconclusive():
    """Softmax with A = 0.79 I, Sigma0 = I: T* = 1 / (2 * 0.79) = 0.633 < t1 = 1. Finite-N
    particles do not blow up, so the comparison near T* says nothing: inconclusive, with the
    blow-up time in the reasons (text and JSON). It said "inconsistent"."""
    f = gf.Softmax(0.79 * np.eye(2), np.eye(2), np.eye(2))
    g0 = gf.Gaussian.standard(2)
    assert gf.theory.blowup_time(f, g0) == pytest.approx(0.633, abs=1e-3)
    rep = gf.validate(f, g0, 1.0, n_particles=(32, 64), seeds=(0, 1))
    assert rep.verdict == "inconclusive", str(rep)
    assert set(sum(rep.statuses["closure"], [])) == {"blowup"}
    stops = rep.info["closure_stops"]
    assert len(stops) == 4 and all(0.4 < r["blowup_time"] < 0.9 for r in stops)
    assert "finite-time blow-up at t = 0." in str(rep) and "t1 = 1" in str(rep)
    data = json.loads(rep.to_json())
    assert data["verdict"] == "inconclusive"
    assert any("finite-time blow-up" in r for r in data["reasons"])


def test_unconverged_particle_sinkhorn_is_inconclusive_and_warns():
    """Two Sinkhorn iterations cannot reach sinkhorn_tol = 1e-10: the particle velocity is not the
    Sinkhorn field, so no verdict on the closure (it was reported without a word)."""
    field, g0, _ = example("sinkhorn", d=2, seed=0)
    with pytest.warns(RuntimeWarning, match="particle Sinkhorn did not converge"):
        rep = gf.validate(field, g0, 0.2, n_particles=(16, 32), seeds=(0, 1),
                          particle_options={"sinkhorn_max_iter": 2})
    assert rep.verdict == "inconclusive", str(rep)
    assert rep.info["sinkhorn_converged"] is False
    assert rep.info["sinkhorn_iterations_max"] == 2
    assert rep.info["sinkhorn_marginal_error_max"] > 1e-10
    assert any("did not converge" in r for r in rep.reasons)
