"""gf.sweep: batched integration equals per-flow gf.solve; sharding; one compilation per shape.
The sweeps here run the JAX work queue (`engine="jax"`) or the vmapped path; the NumPy engine
is tested in test_numpy_engine.py.

These softmax flows have W_O V = I, which the closed-form fast path would evaluate; the tests
here exercise the integrators, so every sweep and solve passes ``closed_form="never"`` (the fast
path is tested in test_closed_form.py)."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import gaussflow as gf
from gaussflow.batch import cache_info



def _sweep(*args, **kw):
    kw.setdefault("engine", "jax")  # the JAX work queue (the NumPy engine: test_numpy_engine.py)
    return gf.sweep(*args, closed_form="never", **kw)


def _solve(*args, **kw):
    return gf.solve(*args, closed_form="never", **kw)


D, B, T1 = 3, 6, 4.0
TS = np.linspace(0.0, T1, 9)


def _problem(seed=0):
    """Members alternate: K = -Q (A + A^T <= 0, collapse) and K = Q (A + A^T > 0, blow-up)."""
    rng = np.random.default_rng(seed)
    fields, states = [], []
    for i in range(B):
        Q = rng.normal(size=(D, D))
        fields.append(gf.Softmax(Q, -Q if i % 2 == 0 else Q, np.eye(D), beta=1 / np.sqrt(D)))
        M = rng.normal(size=(D, D))
        states.append(gf.Gaussian(rng.normal(size=D), M @ M.T / D + 0.1 * np.eye(D)))
    return fields, states


@pytest.fixture(scope="module")
def swept():
    fields, states = _problem()
    res = _sweep(fields, states, T1, TS, chunk_size=4)  # 2 chunks, the last one padded
    return fields, states, res


def test_sweep_equals_solve(swept):
    fields, states, res = swept
    assert sorted(res.counts()) == ["blowup", "completed"]  # the mix this test is about
    for i in range(B):
        ref = _solve(fields[i], states[i], T1, TS)
        got = res.member(i)
        assert got.status == ref.status == res.status[i]
        scale = np.abs(ref.covs).max()
        if ref.status == "completed":
            assert np.array_equal(got.ts, ref.ts)
            assert np.abs(got.covs - ref.covs).max() <= 1e-10 * scale
            assert np.abs(got.means - ref.means).max() <= 1e-10 * max(1, np.abs(ref.means).max())
            assert res.mask[i].all()
            np.testing.assert_array_equal(res.covs[i], got.covs)
        else:
            # Saved states before the stop agree to 1e-10; the end state sits within
            # tau ~ 1e-3 t of the singularity, where rounding differences between batched and
            # single matmuls move the last accepted step: compare the blow-up time there.
            n = int(res.mask[i].sum())
            assert n == len(ref.ts) - 1
            assert np.abs(got.covs[:n] - ref.covs[:n]).max() <= 1e-10 * np.abs(ref.covs[:n]).max()
            assert abs(got.blowup_time - ref.blowup_time) <= 1e-8 * ref.blowup_time  # estimator accuracy O(1/f)
            assert res.blowup_time[i] == got.blowup_time
            assert abs(res.t_stop[i] - ref.t_stop) <= 1e-8 * ref.t_stop
            assert np.isnan(res.covs[i, n:]).all()
    assert np.isnan(res.blowup_time[res.status == "completed"]).all()


def test_vmapped_constructors_reuse_the_compilation(swept):
    fields, states, res = swept
    Qs = np.stack([f.Q for f in fields])
    Ks = np.stack([f.K for f in fields])
    batched = jax.vmap(lambda Q, K: gf.Softmax(Q, K, np.eye(D), beta=1 / np.sqrt(D)))(Qs, Ks)
    g0s = jax.vmap(gf.Gaussian)(np.stack([g.mean for g in states]),
                                np.stack([g.cov for g in states]))
    before = cache_info()
    again = _sweep(batched, g0s, T1, TS, chunk_size=4)
    assert cache_info() == before  # no new trace, no new compilation
    assert again.compile_seconds == 0.0
    np.testing.assert_array_equal(again.status, res.status)
    np.testing.assert_allclose(again.final_covs, res.final_covs, rtol=0, atol=0)
    # New values, same shapes: still no compilation.
    other = _sweep(_problem(seed=1)[0], states, T1, TS, chunk_size=4)
    assert cache_info() == before and other.compile_seconds == 0.0


def test_sweep_input_errors(swept):
    fields, states, _ = swept
    with pytest.raises(ValueError, match="6 members but g0s has 2"):
        _sweep(fields, states[:2], T1)
    with pytest.raises(ValueError, match="nothing to sweep"):
        _sweep(fields[0], states[0], T1)
    with pytest.raises(ValueError, match="chunk_size"):
        _sweep(fields, states, T1, chunk_size=0)
    with pytest.raises(ValueError, match="fields\\[1\\]"):
        _sweep([fields[0], gf.L2(np.eye(D), np.eye(D), np.eye(D))], states[:2], T1)
    with pytest.raises(TypeError, match="g0s"):
        _sweep(fields, "not a state", T1)
    with pytest.raises(ValueError, match="dimension"):
        _sweep(fields, [gf.Gaussian.standard(D + 1)] * B, T1)


def test_first_pass_budget_reruns_only_the_slow_members(swept):
    """With ``first_pass_steps`` and ``stiff_solver=None``, members that use up the first budget
    are rerun with ``max_steps`` and the same solver: same results as one pass (steps do not
    depend on the budget)."""
    fields, states, res = swept
    budget = int(np.median(res.num_steps))  # about half the members need more
    assert (res.num_steps > budget).any() and (res.num_steps <= budget).any()
    two = _sweep(fields, states, T1, TS, chunk_size=4, first_pass_steps=budget,
                   stiff_solver=None)
    assert (two.solvers == "tsit5").all()
    np.testing.assert_array_equal(two.status, res.status)
    np.testing.assert_array_equal(two.num_steps, res.num_steps)
    np.testing.assert_array_equal(two.mask, res.mask)
    np.testing.assert_allclose(two.covs, res.covs, rtol=1e-12, atol=0)
    np.testing.assert_allclose(two.final_covs, res.final_covs, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="first_pass_steps"):
        _sweep(fields, states, T1, first_pass_steps=0)
    with pytest.raises(ValueError, match="tail_chunk_size"):
        _sweep(fields, states, T1, first_pass_steps=4, tail_chunk_size=-1)


_SHARDED = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    sys.path.insert(0, os.path.dirname(sys.argv[1]))
    sys.path.insert(0, os.path.dirname(os.path.dirname(sys.argv[1])))  # this checkout's gaussflow
    import gaussflow as gf
    from test_sweep import _problem, _sweep, T1, TS
    assert len(jax.devices()) == 4
    fields, states = _problem()
    res = _sweep(fields, states, T1, TS, chunk_size=4)
    assert res.method == "vmap"  # the queue does not shard: several devices take the vmap path
    np.savez(sys.argv[2], covs=res.covs, means=res.means, final_covs=res.final_covs,
             blowup_time=res.blowup_time,
             status=res.status.astype(str), num_steps=res.num_steps, n_devices=res.n_devices)
""")


def test_sharded_equals_unsharded(swept, tmp_path):
    """The batch axis split over 4 (forced host) devices (the vmapped path) gives the results
    of the work queue on one device."""
    _, _, res = swept
    script = tmp_path / "sharded.py"
    script.write_text(_SHARDED)
    out = tmp_path / "sharded.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(script), __file__, str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.load(out)
    assert int(got["n_devices"]) == 4
    np.testing.assert_array_equal(got["status"], res.status)
    done = res.status == "completed"
    # Blow-up members: see test_sweep_equals_solve (the last steps depend on rounding).
    np.testing.assert_array_equal(got["num_steps"][done], res.num_steps[done])
    scale = np.nanmax(np.abs(res.covs))
    assert np.nanmax(np.abs(got["covs"] - res.covs)) <= 1e-12 * scale
    assert np.array_equal(np.isnan(got["covs"]), np.isnan(res.covs))
    assert np.abs(got["final_covs"][done] - res.final_covs[done]).max() <= 1e-12 * scale
    # The blow-up estimate t_stop + tau is itself accurate to O(1/f) ~ 1e-8 relative; where the
    # last accepted step lands depends on rounding (batched vs sharded matmuls).
    np.testing.assert_allclose(got["blowup_time"], res.blowup_time, rtol=1e-8)


def test_log_time_scale_matches_linear(swept):
    """Stepping in s = log(1 + t - t0) solves the same ODE: statuses, save times and states agree
    with the linear-time sweep to the tolerance level (rtol 1e-8), blow-up times too."""
    fields, states, lin = swept
    res = _sweep(fields, states, T1, TS, chunk_size=4, time_scale="log")
    assert list(res.status) == list(lin.status)
    np.testing.assert_array_equal(res.ts, lin.ts)
    np.testing.assert_array_equal(res.mask, lin.mask)
    for i in range(B):
        m = res.mask[i]
        scale = np.abs(lin.covs[i][m]).max()
        assert np.abs(res.covs[i][m] - lin.covs[i][m]).max() <= 1e-6 * scale
        if lin.status[i] == "blowup":
            assert abs(res.blowup_time[i] - lin.blowup_time[i]) <= 1e-5 * lin.blowup_time[i]
        else:
            assert res.t_stop[i] == T1
    with pytest.raises(ValueError, match="time_scale must be one of"):
        _sweep(fields, states, T1, TS, time_scale="exp")
    with pytest.raises(ValueError, match="time_scale must be one of"):
        _solve(fields[0], states[0], T1, time_scale="exp")


# ------------------------------------------------------------------ the work queue on a mix
T1_MIX, TS_MIX, MAX_MIX, FIRST_MIX = 4.0, np.linspace(0.0, 4.0, 9), 4096, 1000


def _mix():
    """d = 2 members, in this order: one that completes (collapse), one that blows up early,
    one that needs many steps (a fast rotation, ~450 steps), one that is stiff (V = -3000 I:
    Tsit5 does not get through 1000 steps; Kvaerno5 completes)."""
    rng = np.random.default_rng(3)
    Q = rng.normal(size=(2, 2))
    b = 1 / np.sqrt(2)
    rot = np.array([[0.0, -10.0], [10.0, 0.0]])
    fields = [gf.Softmax(Q, -Q, np.eye(2), beta=b), gf.Softmax(3 * Q, 3 * Q, np.eye(2), beta=b),
              gf.Softmax(0.3 * Q, -0.3 * Q, rot, beta=b),
              gf.Softmax(Q, Q, -3000 * np.eye(2), beta=b)]
    M = rng.normal(size=(2, 2))
    return fields, gf.Gaussian(rng.normal(size=2), M @ M.T / 2 + 0.1 * np.eye(2))


def _sweep_mix(order):
    fields, g0 = _mix()
    # 2 slots for 3 members a chunk: slots refill; the second chunk is padded.
    return _sweep([fields[i] for i in order], g0, T1_MIX, TS_MIX, max_steps=MAX_MIX,
                    first_pass_steps=FIRST_MIX, chunk_size=3, slots=2)


@pytest.fixture(scope="module")
def mixed():
    return _sweep_mix([0, 1, 2, 3])


def test_queue_equals_solve_member_by_member(mixed):
    """Each member of the work-queue sweep equals gf.solve with the solver that finished it:
    saved means/covs (relative 1e-8), status, stop time, blow-up time, step count."""
    res = mixed
    assert res.method == "queue"
    assert list(res.status) == ["completed", "blowup", "completed", "completed"]
    assert list(res.solvers) == ["tsit5", "tsit5", "tsit5", "kvaerno5"]
    assert res.num_steps[2] > 300  # the many-steps member is one
    fields, g0 = _mix()
    for i, f in enumerate(fields):
        ref = _solve(f, g0, T1_MIX, TS_MIX, max_steps=MAX_MIX, solver=str(res.solvers[i]))
        got = res.member(i)
        assert got.status == ref.status
        assert len(got.ts) == len(ref.ts)
        np.testing.assert_allclose(got.ts, ref.ts, rtol=1e-12)
        scale = np.abs(ref.covs).max()
        assert np.abs(got.covs - ref.covs).max() <= 1e-8 * scale
        assert np.abs(got.means - ref.means).max() <= 1e-8 * max(1, np.abs(ref.means).max())
        if ref.status == "blowup":
            assert abs(got.blowup_time - ref.blowup_time) <= 1e-8 * ref.blowup_time
            assert abs(res.t_stop[i] - ref.t_stop) <= 1e-8 * ref.t_stop
        else:
            assert res.num_steps[i] == ref.num_steps and res.t_stop[i] == ref.t_stop == T1_MIX
    # Without the implicit rerun, the stiff member is what Tsit5 makes of it: out of steps.
    stuck = _solve(fields[3], g0, T1_MIX, TS_MIX, max_steps=MAX_MIX)
    assert stuck.status == "max_steps"


def test_queue_order_and_padding_do_not_change_results(mixed, monkeypatch):
    """The same members in another order (other chunks, slots and padding), with the last busy
    slots moved to the pool of 1 at once (no grace iterations), give the same per-member
    results."""
    from gaussflow import queue

    monkeypatch.setattr(queue, "GRACE_ITERS", 0)
    order = [3, 2, 0, 1]
    again = _sweep_mix(order)
    res = mixed
    for j, i in enumerate(order):
        assert again.status[j] == res.status[i] and again.solvers[j] == res.solvers[i]
        np.testing.assert_array_equal(again.mask[j], res.mask[i])
        m = res.mask[i]
        scale = np.abs(res.covs[i][m]).max()
        assert np.abs(again.covs[j][m] - res.covs[i][m]).max() <= 1e-12 * scale
        if res.status[i] == "blowup":
            assert abs(again.blowup_time[j] - res.blowup_time[i]) <= 1e-8 * res.blowup_time[i]
        else:
            assert again.num_steps[j] == res.num_steps[i]


def test_queue_options_are_checked(mixed):
    fields, g0 = _mix()
    with pytest.raises(ValueError, match="method must be"):
        _sweep(fields, g0, T1_MIX, method="loop")
    with pytest.raises(ValueError, match="slots"):
        _sweep(fields, g0, T1_MIX, slots=0)


def test_pass_schedule_reruns_only_members_out_of_steps():
    """The pass logic without integrating: explicit budget -> implicit -> explicit full budget,
    each pass on the members whose status after the previous one is "max_steps"."""
    import diffrax

    from gaussflow.passes import run_schedule, schedule

    ts5, kv5 = diffrax.Tsit5(), diffrax.Kvaerno5()
    assert schedule(ts5, kv5, 100, None, 1000) == [(ts5, 100), (kv5, 1000), (ts5, 1000)]
    assert schedule(ts5, kv5, 1000, 50, 1000) == [(ts5, 1000), (kv5, 50)]
    assert schedule(ts5, None, 1000, None, 1000) == [(ts5, 1000)]
    ok, out = diffrax.RESULTS.successful._value, diffrax.RESULTS.max_steps_reached._value
    needs = {0: 10, 1: 500, 2: 5000}  # steps member i needs; member 2 is "stiff"
    calls = []

    def run_pass(members, solver, steps, first):
        calls.append((list(members), type(solver).__name__, steps, first))
        n = len(members)
        done = [needs[int(m)] <= steps or (solver is kv5 and m == 2) for m in members]
        raw = {k: np.zeros(n, bool) for k in ("event_nonfinite", "event_blowup", "event_escape",
                                              "event_domain")}
        raw.update(result=np.where(done, ok, out), finite_ahead=np.ones(n, bool),
                   t_stop=np.asarray(members, float))
        return raw, 1.0, 2.0

    raw, solvers, c, r = run_schedule(schedule(ts5, kv5, 100, 10, 1000), 3, run_pass)
    assert calls == [([0, 1, 2], "Tsit5", 100, True), ([1, 2], "Kvaerno5", 10, False),
                     ([1], "Tsit5", 1000, False)]
    assert list(solvers) == ["tsit5", "tsit5", "kvaerno5"] and (c, r) == (3.0, 6.0)
    assert (raw["result"] == ok).all() and list(raw["t_stop"]) == [0, 1, 2]


def _stiff_member():
    """Member 759 of benchmark 9's d = 3 problem: one eigenvalue of Sigma collapses while another
    grows (restoring rate ~ 1e7): Tsit5 crawls (> 4096 steps), LSODA needs about 700."""
    from benchmarks.many_flows import problem

    Q, K, V, m0, S0 = problem(1000, 3)
    i = 759
    return gf.Softmax(Q[i], K[i], V[i], beta=1 / np.sqrt(3)), gf.Gaussian(m0[i], S0[i])


def test_members_left_at_max_steps_finish_with_lsoda():
    """With a budget the explicit pass cannot meet, the stiff member is finished by the LSODA pass
    (its solver says so; here it escapes, tr Sigma grown 1e9-fold, at t = 0.477) and its saves
    agree with SciPy's Radau on the covariance form (an independent code path) to 1e-5; an easy
    member keeps Tsit5; `last_resort=None` leaves the stiff one at `max_steps`."""
    from scipy.integrate import solve_ivp

    f, g = _stiff_member()
    easy = gf.Softmax(0.3 * np.eye(3), 0.3 * np.eye(3), -np.diag([1.0, 0.5, 0.8])), gf.Gaussian.standard(3)
    ts = np.linspace(0, 0.4, 5)
    opts = dict(rtol=1e-8, atol=1e-10, max_steps=1024, stiff_solver=None)
    res = gf.sweep([f, easy[0]], [g, easy[1]], 0.5, ts, **opts)
    assert list(res.solvers) == ["lsoda", "tsit5"], res.solvers
    assert list(res.status) == ["escaped", "completed"], res.status
    tr = res.member(0)
    assert 0.45 < tr.t_stop < 0.5 and tr.num_steps < 1024
    Q, K, V = (np.asarray(f.params[k]) for k in ("Q", "K", "V"))
    A, beta, d = K.T @ Q, 1 / np.sqrt(3), 3

    def rhs(t, y):
        m, S = y[:d], y[d:].reshape(d, d)
        J = beta * V @ S @ A
        return np.concatenate([V @ m + J @ m, (J @ S + S @ J.T).ravel()])

    ref = solve_ivp(rhs, (0, 0.4), np.concatenate([np.asarray(g.mean), np.asarray(g.cov).ravel()]),
                    method="Radau", t_eval=ts, rtol=1e-10, atol=1e-12)
    covs = ref.y[d:].T.reshape(-1, d, d)
    scale = np.abs(covs).max(axis=(1, 2))[:, None, None]
    assert np.max(np.abs(tr.covs[:5] - covs) / scale) < 1e-5
    assert np.max(np.abs(tr.means[:5] - ref.y[:d].T)) < 1e-5 * np.abs(ref.y[:d]).max()
    none = gf.sweep([f, easy[0]], [g, easy[1]], 0.5, ts, last_resort=None, **opts)
    assert none.status[0] == "max_steps" and none.solvers[0] == "tsit5"
    with pytest.raises(ValueError, match="last_resort"):
        gf.sweep([f], [g], 0.5, ts, last_resort="radau", **opts)


def test_last_resort_pass_takes_only_the_members_left_at_max_steps():
    """`run_schedule` (both sweep paths): after the diffrax passes, exactly the members still at
    `max_steps` go to the last-resort runner, its outputs replace theirs and their solver is its
    name (fake passes: no compilation)."""
    import diffrax

    from gaussflow.passes import SCALARS, run_schedule

    max_code = int(diffrax.RESULTS.max_steps_reached._value)

    def raw(n, code, value):
        out = {k: np.zeros(n, bool) for k in SCALARS}
        out.update(result=np.full(n, code), finite_ahead=np.ones(n, bool),
                   t_stop=np.full(n, value, float))
        return out

    def run_pass(members, solver, steps, first):  # members 1 and 3 never finish
        out = raw(len(members), 0, 1.0)
        out["result"][np.isin(members, [1, 3])] = max_code
        return out, 0.0, 0.0

    seen = []

    def last(members):
        seen.append(list(members))
        return raw(len(members), 0, 2.0)

    tsit5 = diffrax.Tsit5()
    got, solvers, _, _ = run_schedule([(tsit5, 8), (diffrax.Kvaerno5(), 8)], 5, run_pass,
                                      ("lsoda", last))
    assert seen == [[1, 3]]
    assert list(solvers) == ["tsit5", "lsoda", "tsit5", "lsoda", "tsit5"]
    np.testing.assert_array_equal(got["t_stop"], [1, 2, 1, 2, 1])
    _, solvers, _, _ = run_schedule([(tsit5, 8)], 5, run_pass)
    assert list(solvers) == ["tsit5"] * 5
