"""The sweep's NumPy engine (gaussflow.numpy_engine): stacked printing of the generated programs,
Tsit5's dense output read off diffrax, members equal to gf.solve and to the JAX work queue,
the LSODA stiff pass, and clear errors where the engine does not apply.

The flows here have W_O V = I, which the closed-form fast path would evaluate: every sweep passes
closed_form="never"."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussflow as gf
from gaussflow import numpy_engine
from gaussflow.field import program_source, stacked_numpy_functions

from test_sweep import FIRST_MIX, MAX_MIX, T1_MIX, TS_MIX, _mix, _problem


def _sweep(*args, **kw):
    return gf.sweep(*args, closed_form="never", **kw)


def _solve(*args, **kw):
    return gf.solve(*args, closed_form="never", **kw)


D, T1 = 3, 4.0
TS = np.linspace(0.0, T1, 9)


@pytest.mark.parametrize("cls", [gf.Softmax, gf.L2])
def test_stacked_programs_equal_the_jax_programs_member_by_member(cls):
    """The stacked NumPy form of the generated programs (products on leading member axes,
    transposes .mT; L2's closure has solves) gives, for a stack of 5 members with their own
    weights, each member's JAX value (closure, flow-map right-hand side) to 1e-12."""
    rng = np.random.default_rng(0)
    n, d = 5, 4
    Q, K, V = (rng.normal(size=(n, d, d)) for _ in range(3))
    beta = rng.uniform(0.2, 1.0, size=n)
    scale = "beta" if cls is gf.Softmax else "c"
    fields = [cls(Q[i], K[i], V[i], **{scale: float(beta[i])}) for i in range(n)]
    batched = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *fields)
    sf = numpy_engine.stacked_field(batched, True)
    assert sf is not None
    m = rng.normal(size=(n, d, 1))
    G = rng.normal(size=(n, d, d))
    S = G @ G.mT / d + 0.1 * np.eye(d)
    Phi = np.eye(d) + 0.3 * rng.normal(size=(n, d, d))
    t = np.zeros((n, 1, 1))
    dm, J = sf.closure(t, m, S)
    fm, fP = sf.flow_rhs(t, m, Phi, S)
    for i, f in enumerate(fields):
        rdm, rJ = f._closure(0.0, jnp.asarray(m[i, :, 0]), jnp.asarray(S[i]))
        np.testing.assert_allclose(dm[i, :, 0], rdm, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(J[i], rJ, rtol=1e-12, atol=1e-13)
        rfm, rfP = f._flow_rhs(0.0, jnp.asarray(m[i, :, 0]), jnp.asarray(Phi[i]), jnp.asarray(S[i]))
        np.testing.assert_allclose(fm[i, :, 0], rfm, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(fP[i], rfP, rtol=1e-12, atol=1e-13)
    src = program_source(cls.derivation(), "stacked")
    assert ".mT" in src and ".T" not in src.replace(".mT", "")


def test_programs_with_jax_only_helpers_have_no_numpy_form():
    """Sinkhorn's closure needs a PSD square root (JAX-only helper): no stacked NumPy form, and
    engine="numpy" says so before any work; engine="auto" takes the JAX queue."""
    assert stacked_numpy_functions(gf.Sinkhorn) is None
    f = gf.Sinkhorn(np.eye(2), np.eye(2), np.eye(2), beta=0.5)
    g = gf.Gaussian.standard(2)
    with pytest.raises(ValueError, match="engine='numpy' is not available here.*no NumPy form"):
        _sweep(f, [g, g], 0.5, engine="numpy")
    with pytest.raises(ValueError, match="engine must be one of"):
        _sweep(f, [g, g], 0.5, engine="fortran")
    sm = gf.Softmax(np.eye(2), -np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match="queue method"):
        _sweep(sm, [g, g], 0.5, engine="numpy", method="vmap")
    with pytest.raises(ValueError, match="its method is Tsit5"):
        _sweep(sm, [g, g], 0.5, engine="numpy", solver="dopri5")


def test_dense_weights_reproduce_diffrax_interpolation():
    """The weight polynomials read off diffrax's Tsit5 interpolation evaluate it exactly (random
    stage vectors, 7 points inside the step)."""
    W = numpy_engine.dense_weights()
    rng = np.random.default_rng(1)
    k = rng.normal(size=(7, 3))
    y0 = rng.normal(size=3)
    interp = diffrax.Tsit5.interpolation_cls(t0=0.0, t1=1.0, y0=jnp.asarray(y0), y1=jnp.zeros(3),
                                             k=jnp.asarray(k))
    for th in np.linspace(0.05, 0.95, 7):
        coef = th ** np.arange(W.shape[1]) @ W.T
        np.testing.assert_allclose(y0 + coef @ k, interp.evaluate(th), rtol=1e-13, atol=1e-14)


@pytest.fixture(scope="module")
def mixed_numpy():
    fields, g0 = _mix()
    return _sweep(fields, g0, T1_MIX, TS_MIX, max_steps=MAX_MIX, first_pass_steps=FIRST_MIX,
                  engine="numpy")


def test_numpy_engine_equals_solve_member_by_member(mixed_numpy):
    """The members the NumPy engine finishes equal gf.solve (Tsit5) to rounding: saved means and
    covariances (1e-10 relative), status, stop time, step count, blow-up time (1e-8); the stiff
    member (V = -3000 I, beyond 1000 Tsit5 steps) goes to the LSODA stiff pass (the default
    stiff solver of this engine) and agrees with gf.solve's Kvaerno5 to 1e-6."""
    res = mixed_numpy
    assert res.method == "queue"
    assert list(res.status) == ["completed", "blowup", "completed", "completed"]
    assert list(res.solvers) == ["tsit5", "tsit5", "tsit5", "lsoda"]
    assert res.compile_seconds == 0.0
    fields, g0 = _mix()
    for i, f in enumerate(fields):
        stiff = res.solvers[i] == "lsoda"
        ref = _solve(f, g0, T1_MIX, TS_MIX, max_steps=MAX_MIX,
                     solver="kvaerno5" if stiff else "tsit5")
        got = res.member(i)
        assert got.status == ref.status
        tol = 1e-6 if stiff else 1e-10
        n = len(ref.ts) - (ref.status == "blowup")  # the blow-up's last state: see test_sweep
        np.testing.assert_allclose(got.ts[:n], ref.ts[:n], rtol=1e-12)
        assert np.abs(got.covs[:n] - ref.covs[:n]).max() <= tol * np.abs(ref.covs[:n]).max()
        assert np.abs(got.means[:n] - ref.means[:n]).max() <= tol * max(1, np.abs(ref.means).max())
        if ref.status == "blowup":
            assert abs(got.blowup_time - ref.blowup_time) <= 1e-8 * ref.blowup_time
        elif not stiff:
            assert res.num_steps[i] == ref.num_steps and res.t_stop[i] == ref.t_stop == T1_MIX


def test_numpy_engine_equals_jax_queue_both_time_scales():
    """Six members (collapses and blow-ups): the NumPy engine and the JAX work queue give the
    same statuses, save masks, step counts of completed members, blow-up times (1e-8) and saved
    covariances (1e-10 relative); stepping in log time solves the same ODE (statuses and masks
    equal, covariances to the tolerance level, 1e-6)."""
    fields, states = _problem()
    a = _sweep(fields, states, T1, TS, engine="numpy")
    b = _sweep(fields, states, T1, TS, engine="jax", chunk_size=4)  # test_sweep's compilation
    log = _sweep(fields, states, T1, TS, engine="numpy", time_scale="log")
    assert list(a.status) == list(b.status) == list(log.status)
    assert sorted(a.counts()) == ["blowup", "completed"]
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.mask, log.mask)
    for i in range(len(fields)):
        m = a.mask[i]
        scale_i = np.abs(b.covs[i][m]).max()
        assert np.abs(a.covs[i][m] - b.covs[i][m]).max() <= 1e-10 * scale_i
        assert np.abs(log.covs[i][m] - a.covs[i][m]).max() <= 1e-6 * scale_i
        if a.status[i] == "blowup":
            assert abs(a.blowup_time[i] - b.blowup_time[i]) <= 1e-8 * b.blowup_time[i]
            assert abs(log.blowup_time[i] - a.blowup_time[i]) <= 1e-5 * a.blowup_time[i]
        else:
            assert a.num_steps[i] == b.num_steps[i]


def test_numpy_engine_is_the_default_on_cpu_and_shares_a_field():
    """engine="auto" runs the NumPy engine for softmax fields on the CPU (no compilation), with a
    shared field and a batch of states as with a batch of fields; a field without a NumPy form
    (Sinkhorn) runs on the JAX queue instead."""
    f = gf.Softmax(0.5 * np.eye(2), -0.5 * np.eye(2), np.eye(2))
    gs = [gf.Gaussian(np.array([0.1 * i, 0.0]), (1 + i) * np.eye(2)) for i in range(3)]
    res = _sweep(f, gs, 1.0, np.linspace(0, 1, 3))
    assert res.compile_seconds == 0.0 and list(res.status) == ["completed"] * 3
    for i in range(3):
        ref = _solve(f, gs[i], 1.0, np.linspace(0, 1, 3))
        assert np.abs(res.member(i).covs - ref.covs).max() <= 1e-10 * np.abs(ref.covs).max()
    # an affine field's closure J = W does not depend on the state: broadcast to every member
    aff = gf.Affine(np.array([[-1.0, 0.5], [0.0, -0.3]]), np.array([0.2, -0.1]))
    res = _sweep(aff, gs, 1.0, np.linspace(0, 1, 3), engine="numpy")
    for i in range(3):
        ref = _solve(aff, gs[i], 1.0, np.linspace(0, 1, 3))
        assert np.abs(res.member(i).covs - ref.covs).max() <= 1e-10 * np.abs(ref.covs).max()
        assert np.abs(res.member(i).means - ref.means).max() <= 1e-10
    sk = gf.Sinkhorn(0.5 * np.eye(2), -0.5 * np.eye(2), np.eye(2))
    assert numpy_engine.stacked_field(sk, False) is None
    assert not numpy_engine.choose("auto", sk, False, diffrax.Tsit5(), 3, True, "queue",
                                   jax.devices()[0])



def test_numpy_engine_chunks_and_order_do_not_change_results(mixed_numpy, capsys):
    """The mix in another order, in chunks of one member, with a progress bar of finished
    members: every member's status, solver, steps and saved covariances as in one stack."""
    fields, g0 = _mix()
    order = [3, 2, 0, 1]
    again = _sweep([fields[i] for i in order], g0, T1_MIX, TS_MIX, max_steps=MAX_MIX,
                   first_pass_steps=FIRST_MIX, engine="numpy", chunk_size=1, progress=True)
    assert "sweep (NumPy Tsit5)" in capsys.readouterr().err
    res = mixed_numpy
    for j, i in enumerate(order):
        assert again.status[j] == res.status[i] and again.solvers[j] == res.solvers[i]
        assert again.num_steps[j] == res.num_steps[i]
        np.testing.assert_array_equal(again.mask[j], res.mask[i])
        m = res.mask[i]
        np.testing.assert_allclose(again.covs[j][m], res.covs[i][m], rtol=1e-13, atol=1e-15)


def test_lsoda_rounds_equal_one_member_at_a_time():
    """The LSODA pass on the NumPy form advances its members in rounds, their events tested in
    one stacked call: each member's steps, stop, status and saves equal those of `lsoda_member`
    run alone (one blow-up, one completion, one stiff member)."""
    from gaussflow import lsoda

    fields, g0 = _mix()
    pick = [1, 0, 3]
    batched = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[fields[i] for i in pick])
    m0, c0 = np.asarray(g0.mean), np.asarray(g0.cov)
    got = lsoda.lsoda_members(batched, True, m0, c0, False, np.arange(3), (0.0, T1_MIX, 1e8),
                              TS_MIX, 1e-8, 1e-10, MAX_MIX)
    sf = numpy_engine.stacked_field(batched, True)
    for j in range(3):
        one = lsoda.lsoda_member(sf.take(np.array([j])), None, m0, c0, 0.0, T1_MIX, TS_MIX,
                                 1e-8, 1e-10, MAX_MIX, 1e8)
        for key in one:
            np.testing.assert_array_equal(got[key][j], one[key], err_msg=key)
    assert list(gf.integrate.statuses_of(got)) == ["blowup", "completed", "completed"]


def test_multihead_runs_on_the_numpy_engine():
    """A sum of heads (gf.MultiHead) has a NumPy form, the sum of its heads': a sweep over three
    initial states equals gf.solve member by member (1e-10), on the NumPy engine."""
    h = [gf.Softmax(0.3 * np.eye(3), -0.2 * np.eye(3), np.eye(3), beta=0.5),
         gf.Softmax(np.diag([0.2, 0.4, 0.6]), 0.1 * np.eye(3), -np.eye(3), beta=0.5)]
    mh = gf.MultiHead(h)
    assert isinstance(numpy_engine.stacked_field(mh, False), numpy_engine.StackedSum)
    gs = [gf.Gaussian(np.array([0.1 * i, 0.0, -0.1]), (1 + i) * np.eye(3)) for i in range(3)]
    ts = np.linspace(0, 1, 3)
    res = _sweep(mh, gs, 1.0, ts, engine="numpy")
    for i in range(3):
        ref = _solve(mh, gs[i], 1.0, ts)
        assert res.status[i] == ref.status
        assert np.abs(res.member(i).covs - ref.covs).max() <= 1e-10 * np.abs(ref.covs).max()
