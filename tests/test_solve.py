"""gf.solve for softmax: closed forms, blow-up times, invariants and statuses."""

import jax.numpy as jnp
import numpy as np
import pytest

import gaussflow as gf
from gaussflow.field import Field

from conftest import random_spd


def _sqrt_psd(S):
    w, U = np.linalg.eigh(S)
    return (U * np.sqrt(np.clip(w, 0, None))) @ U.T


def _blowup_case(seed, d):
    """Softmax with W_O V = I and A + A^T having a positive eigenvalue."""
    rng = np.random.default_rng(seed)
    k = max(1, d - 1)
    Q = rng.normal(size=(k, d))
    K = rng.normal(size=(k, d)) + 0.5 * Q  # bias towards A + A^T with positive directions
    beta = 1 / np.sqrt(k)
    S0 = random_spd(rng, d)
    A = K.T @ Q
    r = _sqrt_psd(S0)
    lam = np.linalg.eigvalsh(beta * r @ (A + A.T) @ r).max()
    assert lam > 0
    return gf.Softmax(Q, K, np.eye(d), beta=beta), gf.Gaussian(rng.normal(size=d), S0), 1 / lam, A


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_blowup_time_matches_closed_form(d):
    field, g0, T, _ = _blowup_case(100 + d, d)
    traj = gf.solve(field, g0, 3 * T)
    assert traj.status == "blowup"
    assert abs(traj.blowup_time - T) <= 1e-6 * T
    assert traj.t_stop <= T * (1 + 1e-6)
    assert np.all(np.isfinite(traj.covs))


def test_identity_value_closed_form_inverse_covariance():
    """Sigma(t)^{-1} = Sigma0^{-1} - t beta (A + A^T) when W_O V = I, to 1e-8 (rtol 1e-10)."""
    field, g0, T, A = _blowup_case(3, 3)
    beta = float(field.beta)
    ts = np.linspace(0, 0.9 * T, 12)
    traj = gf.solve(field, g0, 0.9 * T, ts=ts, rtol=1e-10, atol=1e-12)
    assert traj.status == "completed"
    S0inv = np.linalg.inv(np.asarray(g0.cov))
    for t, C in zip(traj.ts, traj.covs):
        exact = np.linalg.inv(S0inv - t * beta * (A + A.T))
        assert np.max(np.abs(C - exact)) <= 1e-8 * np.max(np.abs(exact))


def test_covariance_symmetric_psd_and_rank_preserved():
    rng = np.random.default_rng(4)
    d = 4
    Q = rng.normal(size=(2, d))
    M = rng.normal(size=(d, d))
    V = M @ M.T / d  # K = -Q, V = M M^T: the collapsing regime
    B = rng.normal(size=(d, 2))
    g0 = gf.Gaussian(rng.normal(size=d), B @ B.T)  # rank 2
    traj = gf.solve(gf.Softmax(Q, -Q, V, beta=0.5), g0, 2.0)
    assert traj.status == "completed"
    for C in traj.covs:
        assert np.array_equal(C, C.T)
        w = np.linalg.eigvalsh(C)
        assert w[0] >= -1e-12 * w[-1]
        assert np.sum(w > 1e-9 * w[-1]) == 2


def test_general_value_matches_design_covariance_ode():
    """A solve with W_O V != I agrees with an independent NumPy RK integration of the DESIGN ODE."""
    from scipy.integrate import solve_ivp

    rng = np.random.default_rng(8)
    d = 3
    Q, K = rng.normal(size=(2, d, d)) * 0.2
    V = rng.normal(size=(d, d)) * 0.5
    beta = 0.5
    A = K.T @ Q
    S0 = random_spd(rng, d)
    a0 = rng.normal(size=d)

    def rhs(t, z):
        a, S = z[:d], z[d:].reshape(d, d)
        da = V @ (np.eye(d) + beta * S @ A) @ a
        dS = beta * (V @ S @ A @ S + S @ A.T @ S @ V.T)
        return np.concatenate([da, dS.ravel()])

    ref = solve_ivp(rhs, (0, 1.0), np.concatenate([a0, S0.ravel()]), rtol=1e-12, atol=1e-14,
                    method="DOP853")
    traj = gf.solve(gf.Softmax(Q, K, V, beta=beta), gf.Gaussian(a0, S0), 1.0, rtol=1e-10,
                    atol=1e-12)
    assert traj.status == "completed"
    zf = ref.y[:, -1]
    assert np.allclose(traj.final.mean, zf[:d], rtol=1e-7, atol=1e-9)
    assert np.allclose(traj.final.cov, zf[d:].reshape(d, d), rtol=1e-7, atol=1e-9)


class _Scripted(Field):
    """Test field: expansion J = I, with a NaN or a domain edge once tr Sigma passes 2 tr Sigma0."""

    d: int
    mode: str

    name = "scripted"

    @property
    def dim(self):
        return self.d

    def _velocity(self, t, mean, cov, x):
        return x

    def _closure(self, t, mean, cov):
        J = jnp.eye(self.d)
        if self.mode == "nan":
            J = jnp.where(jnp.trace(cov) > 2.0 * self.d, jnp.nan, 1.0) * J
        return jnp.zeros_like(mean), J

    def _domain_ok(self, t, mean, cov):
        if self.mode == "domain":
            return jnp.trace(cov) < 2.0 * self.d
        return jnp.asarray(True)


@pytest.mark.parametrize("mode,status", [("nan", "nonfinite"), ("domain", "not_integrable"),
                                         ("ok", "completed")])
def test_statuses_without_exceptions(mode, status):
    g0 = gf.Gaussian.standard(2)
    traj = gf.solve(_Scripted(2, mode), g0, 2.0)
    assert traj.status == status
    assert np.all(np.isfinite(traj.covs)) and np.all(np.isfinite(traj.means))
    if status != "completed":
        # tr Sigma(t) = 2 e^{2t} crosses 4 at t = log(2)/2
        assert traj.t_stop == pytest.approx(np.log(2) / 2, rel=0.2)
        assert traj.t_stop < 2.0
    else:
        assert np.allclose(traj.final.cov, np.exp(4.0) * np.eye(2), rtol=1e-7)


def test_exponential_growth_is_not_blowup():
    # tr grows like e^{2t} (4.9e8 at t = 10: past the blow-up test's 1e8, below the escape at 1e9)
    # but never in finite time
    traj = gf.solve(_Scripted(2, "ok"), gf.Gaussian.standard(2), 10.0)
    assert traj.status == "completed"
    assert traj.blowup_time is None


def test_exponential_growth_escapes_at_the_escape_factor():
    # tr Sigma / tr Sigma0 = e^{2t} passes ESCAPE_FACTOR * 1e8 = 1e12 at t = log(1e12) / 2
    from gaussflow.stepping import ESCAPE_FACTOR
    traj = gf.solve(_Scripted(2, "ok"), gf.Gaussian.standard(2), 20.0)
    t_esc = np.log(ESCAPE_FACTOR * 1e8) / 2
    assert traj.status == "escaped" and traj.blowup_time is None
    assert t_esc <= traj.t_stop < t_esc + 0.5
    assert np.isclose(np.trace(traj.final.cov) / 2, np.exp(2 * traj.t_stop), rtol=1e-6)
    reg = gf.theory.classify(traj)
    assert reg.kind == "growth" and reg.rate == pytest.approx(2.0, rel=1e-3)


def test_growing_l2_runs_of_the_reproduction_are_all_classified():
    """The L2 'either' case of ``gaussflow reproduce`` at its horizon: growing runs stop as
    'escaped' (growth), slow ones converge; none is left undetermined."""
    from gaussflow.reproduce import regime_cases
    from gaussflow.study import trace_one_grid
    case = next(c for c in regime_cases(1) if c["name"] == "either")
    field, t1 = case["fields"]["l2"], case["t1"]["l2"]
    g0s = [gf.Gaussian(np.zeros(2), S) for S in trace_one_grid(3, 8)[::3]]
    kinds, statuses = [], []
    for g0 in g0s:
        traj = gf.solve(field, g0, t1, ts=np.linspace(0, t1, 201))
        statuses.append(traj.status)
        kinds.append(gf.theory.classify(traj).kind)
    assert set(statuses) <= {"completed", "escaped"} and "escaped" in statuses
    assert set(kinds) <= {"growth", "converge"} and "growth" in kinds
    res = gf.sweep(field, g0s, t1)  # the work queue stops the same members the same way
    assert list(res.status) == statuses


def test_max_steps_status():
    field, g0, T, _ = _blowup_case(11, 3)
    traj = gf.solve(field, g0, 0.99 * T, max_steps=3)
    assert traj.status == "max_steps"
    assert 0 < traj.t_stop < 0.99 * T
    assert np.all(np.isfinite(traj.covs))


def test_bad_solve_arguments():
    field, g0, _, _ = _blowup_case(11, 3)
    with pytest.raises(ValueError, match="t1 must be greater than t0"):
        gf.solve(field, g0, 0.0)
    with pytest.raises(ValueError, match="ts must be strictly increasing"):
        gf.solve(field, g0, 1.0, ts=[0.0, 0.5, 0.2])
    with pytest.raises(ValueError, match="dimension"):
        gf.solve(field, gf.Gaussian.standard(2), 1.0)
    with pytest.raises(TypeError, match="gf.Gaussian"):
        gf.solve(field, np.eye(3), 1.0)
    with pytest.raises(ValueError, match="rtol"):
        gf.solve(field, g0, 1.0, rtol=-1)
    with pytest.raises(ValueError, match="solver"):
        gf.solve(field, g0, 1.0, solver="euler-ish")


def test_solver_core_has_no_host_callbacks():
    """JAX's persistent compilation cache refuses executables with host callbacks; the solver's
    core must have none (equinox checks traced in "nan" mode), or every process recompiles.
    Equinox reuses a check's trace across modes, so: a user's diffrax call before gaussflow must
    not put callbacks back, and one after it must still raise on bad input. In a fresh process."""
    import subprocess
    import sys

    code = """
import diffrax, equinox as eqx, jax.numpy as jnp, numpy as np
import gaussflow as gf
from gaussflow.integrate import integrate_closure
term = diffrax.ODETerm(lambda t, y, a: -y)
diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, 1.0, 0.1, jnp.ones(2),
                    saveat=diffrax.SaveAt(ts=jnp.linspace(0.0, 1.0, 3)))
field = gf.Softmax(np.eye(2), -np.eye(2), np.eye(2))
jaxpr = eqx.filter_make_jaxpr(integrate_closure)(
    field, jnp.zeros(2), 0.5 * jnp.eye(2), jnp.asarray(0.0), jnp.asarray(1.0),
    jnp.linspace(0.0, 1.0, 3), diffrax.Tsit5(), 1e-8, 1e-10, 64, 1e8,
    diffrax.NoProgressMeter(), diffrax.RecursiveCheckpointAdjoint())[0]
print("callback" in str(jaxpr), eqx._errors.EQX_ON_ERROR)
try:
    diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, 1.0, 0.1, jnp.ones(2),
                        saveat=diffrax.SaveAt(ts=jnp.array([0.0, 2.0, 1.0])))
    print("no-error")
except Exception as e:
    print(type(e).__name__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "raise", "EquinoxRuntimeError"], out.stdout


def test_collapse_to_low_rank_limit_without_roundoff_drift():
    """Softmax with K = -Q, W_O V = I collapses to ``gf.theory.limit_covariance`` like 1/t. The
    solver's right-hand side forms ``Q Phi``, ``K Phi`` first, so the round-off does not grow like
    ``eps t`` (with ``J`` formed from Sigma first, the error at t = 1e10 was 1e-6): at t = 1e10
    the error against the closed form ``Sigma(t)`` is at round-off and the distance to the limit
    is the O(1/t) one."""
    rng = np.random.default_rng(7)
    d, k = 4, 2
    Q = rng.normal(size=(k, d))
    field = gf.Softmax(Q, -Q, np.eye(d), beta=0.5)
    G = rng.normal(size=(d, d))
    g0 = gf.Gaussian(np.zeros(d), G @ G.T / d)
    t1 = 1e10
    traj = gf.solve(field, g0, t1, ts=[0.0, t1], closed_form="never")  # the integrator's drift
    assert traj.status == "completed"
    assert traj.num_steps < 400
    # Sigma(t) = (Sigma0^{-1} + 2 t beta Q^T Q)^{-1}, written without cancellation at large t
    S0, QS = np.asarray(g0.cov), Q @ np.asarray(g0.cov)
    exact = S0 - QS.T @ np.linalg.solve(np.eye(k) / (2 * t1 * 0.5) + QS @ Q.T, QS)
    assert np.max(np.abs(np.asarray(gf.theory.covariance(field, g0, t1)) - exact)) <= 1e-13
    assert np.max(np.abs(traj.covs[-1] - exact)) <= 1e-12
    limit = np.asarray(gf.theory.limit_covariance(field, g0))
    assert np.max(np.abs(traj.covs[-1] - limit)) <= 1e-8
    assert np.linalg.matrix_rank(limit, tol=1e-9) == d - k


@pytest.mark.parametrize("name", ["softmax", "l2", "sinkhorn", "affine"])
def test_flow_rhs_equals_closure_times_phi(name):
    """The generated ``flow_rhs`` (Sigma = Phi Sigma0 Phi^T substituted) equals ``J(Sigma) Phi``."""
    from gaussflow.field import Field

    rng = np.random.default_rng(3)
    d = 3
    Q, K, V = (rng.normal(size=(d, d)) for _ in range(3))
    field = {"softmax": gf.Softmax(Q, K, V, beta=0.7), "l2": gf.L2(Q, K, V),
             "sinkhorn": gf.Sinkhorn(Q, K, V), "affine": gf.Affine(Q, rng.normal(size=d))}[name]
    assert "def flow_rhs" in field.derivation().jax_source
    m = jnp.asarray(rng.normal(size=d))
    Phi = jnp.asarray(np.eye(d) + 0.2 * rng.normal(size=(d, d)))
    S0 = jnp.asarray(random_spd(rng, d))
    for a, b in zip(field._flow_rhs(0.0, m, Phi, S0), Field._flow_rhs(field, 0.0, m, Phi, S0)):
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-13 * float(jnp.max(jnp.abs(b)))


def _huge_score_case(beta):
    """2-D softmax, moderate Q, K, Sigma0 of order 1, nonzero mean, A + A^T indefinite."""
    rng = np.random.default_rng(6)
    Q, K = rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
    M = rng.normal(size=(2, 2))
    g0 = gf.Gaussian(rng.normal(size=2), M @ M.T / 2 + 0.2 * np.eye(2))
    return gf.Softmax(Q, K, np.eye(2), beta=beta), g0


@pytest.mark.parametrize("beta", [1e4, 1e6, 1e8])
def test_huge_scores_find_the_blowup(beta):
    """T* = 2.7e-5 / (beta / 1e4): the first step comes from the closure's own rate at t0, so the
    solver does not start past the blow-up and stall at t = 0 (it did: max_steps, t_stop = 0)."""
    field, g0 = _huge_score_case(beta)
    T = gf.theory.blowup_time(field, g0)
    assert 1e-12 < T < 1e-3
    traj = gf.solve(field, g0, 1.0, closed_form="never")  # the integrator's first step
    assert traj.status == "blowup", traj
    assert traj.blowup_time == pytest.approx(T, rel=1e-3)


def test_huge_scores_find_the_blowup_in_a_sweep():
    pairs = [_huge_score_case(b) for b in (1e4, 1e6, 1e8)]
    fields, states = [p[0] for p in pairs], [p[1] for p in pairs]
    res = gf.sweep(fields, states, 1.0, np.linspace(0.0, 1.0, 5), closed_form="never")
    assert list(res.status) == ["blowup"] * 3
    for f, g, bt in zip(fields, states, res.blowup_time):
        assert bt == pytest.approx(gf.theory.blowup_time(f, g), rel=1e-3)


def test_nonfinite_trial_step_shrinks_the_step():
    """A trial step whose error estimate is NaN (it crossed into a NaN region) is rejected and the
    next trial is shorter and finite (diffrax's stock controller returns a NaN step size)."""
    import sys

    ctrl = sys.modules["gaussflow.integrate"].FiniteErrorPID(rtol=1e-8, atol=1e-10)
    y0 = jnp.ones(3)
    state = (jnp.asarray(1.0), jnp.asarray(1.0), jnp.asarray(False))
    for bad in (jnp.nan, jnp.inf):
        y1 = y0.at[1].set(bad)
        keep, t0n, t1n, _, _, _ = ctrl.adapt_step_size(0.0, 0.5, y0, y1, None, y1 - y0, 5, state)
        assert not bool(keep)
        assert float(t0n) == 0.0
        assert 0.0 < float(t1n) < 0.5


def test_progress_meter_shows_time_left_not_a_rate(capsys):
    field = gf.Softmax(np.eye(2), -np.eye(2), np.eye(2) + 0.1)
    traj = gf.solve(field, gf.Gaussian.standard(2), 1.0, progress=True, closed_form="never")
    err = capsys.readouterr().err
    assert traj.status == "completed"
    assert "100.0% of [t0, t1]" in err and "left" in err and "%/s" not in err
