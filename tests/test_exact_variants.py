"""Exact closures (softmax, multi-head, L2, Sinkhorn, affine, sums, layer schedules) against
Monte Carlo, the DESIGN.md forms, the affine closure rule and closed-form solutions."""

import io
from contextlib import redirect_stdout

import equinox as eqx
import numpy as np
import pytest

import gaussflow as gf
from gaussflow.cli import main as cli_main

DIMS = (2, 3, 5)


def _spd(rng, d, floor=0.2):
    M = rng.normal(size=(d, d))
    return M @ M.T / d + floor * np.eye(d)


def _setup(d, seed):
    """Random weights (k = 2 query/key rows, k_v = d) and a Gaussian state in dimension d."""
    rng = np.random.default_rng(seed)
    w = {n: rng.normal(size=(2, d)) / np.sqrt(d) for n in ("Q", "K")}
    w["V"] = rng.normal(size=(d, d)) / np.sqrt(d)
    w["W_O"] = rng.normal(size=(d, d)) / np.sqrt(d)
    g = gf.Gaussian(1.5 * rng.normal(size=d), 0.15 * _spd(rng, d))
    xs = g.mean + rng.normal(size=(3, d)) @ np.linalg.cholesky(g.cov).T  # query points
    return rng, w, g, xs


def _mc(log_w, values):
    """Self-normalised importance estimate of E[values] under weights exp(log_w), per row of log_w,
    with its delta-method standard error."""
    lw = log_w - log_w.max(axis=1, keepdims=True)
    w = np.exp(lw)
    w /= w.sum(axis=1, keepdims=True)
    est = w @ values
    se = np.sqrt(np.einsum("qn,qnd->qd", w**2, (values[None] - est[:, None]) ** 2))
    return est, se


def _samples(g, n, seed):
    rng = np.random.default_rng(seed)
    return np.asarray(g.mean) + rng.normal(size=(n, g.dim)) @ np.linalg.cholesky(g.cov).T


def _points(g, xs):
    """Evaluation points: alpha, alpha + e_i (i = 1..d), then the query points xs (one batch shape
    per dimension, so each field's velocity is compiled once per d)."""
    a = np.asarray(g.mean)
    return np.vstack([a, a + np.eye(g.dim), xs])


def _check_mc(field, g, xs, est, se):
    """5 standard errors below 1% of the velocity scale (root mean square of |Gamma| over the
    evaluation points), and the estimate within 5 standard errors of the closure's velocity."""
    v = np.asarray(field.velocity(g, _points(g, xs)))
    scale = np.sqrt(np.mean(np.sum(v**2, axis=1)))
    assert np.all(5 * np.linalg.norm(se, axis=1) < 0.01 * scale), (se, scale)
    exact = v[g.dim + 1:]
    assert np.all(np.abs(est - exact) <= 5 * se), (est - exact) / se


N_MC = 800_000


def _fields(d, seed):
    """Every exact variant at random weights (k = 2, k_v = d), a Gaussian state and query points."""
    rng, w, g, xs = _setup(d, seed)
    sm = gf.Softmax(w["Q"], w["K"], w["V"], beta=0.5, W_O=w["W_O"])
    aff = gf.Affine(rng.normal(size=(d, d)), rng.normal(size=d))
    mh = gf.MultiHead.split(rng.normal(size=(4, d)) / np.sqrt(d), rng.normal(size=(4, d)) / np.sqrt(d),
                            rng.normal(size=(2 * d, d)), rng.normal(size=(d, 2 * d)) / np.sqrt(d), 2)
    return g, xs, {
        "softmax": sm,
        "l2": gf.L2(w["Q"], w["K"], w["V"], c=0.2, W_O=w["W_O"]),
        "sinkhorn": gf.Sinkhorn(w["Q"], w["K"], w["V"], eps=0.6, beta=0.9, W_O=w["W_O"]),
        "multihead": mh,
        "affine": aff,
        "sum": sm + aff,
    }


def _head_mc(head, xs, Y):
    """Monte Carlo of one softmax head: weights exp(beta <Q x, K y>), values W_O V y."""
    Q, K, V, W_O = (np.asarray(getattr(head, n)) for n in ("Q", "K", "V", "W_O"))
    return _mc(float(head.beta) * (xs @ Q.T) @ (Y @ K.T).T, Y @ (W_O @ V).T)


@pytest.mark.parametrize("d", DIMS)
def test_velocity_matches_monte_carlo(d):
    """Softmax, L2 and multi-head (sum of the heads' estimates) against importance sampling."""
    g, xs, fields = _fields(d, 10 + d)
    Y = _samples(g, N_MC, d)
    _check_mc(fields["softmax"], g, xs, *_head_mc(fields["softmax"], xs, Y))
    l2 = fields["l2"]
    Q, K, V, W_O = (np.asarray(getattr(l2, n)) for n in ("Q", "K", "V", "W_O"))
    diff = (xs @ Q.T)[:, None, :] - (Y @ K.T)[None]
    _check_mc(l2, g, xs, *_mc(-float(l2.c) * np.sum(diff**2, axis=-1), Y @ (W_O @ V).T))
    parts = [_head_mc(h, xs, Y) for h in fields["multihead"].heads]
    est = sum(e for e, _ in parts)
    se = np.sqrt(sum(s**2 for _, s in parts))
    _check_mc(fields["multihead"], g, xs, est, se)


@eqx.filter_jit
def _moments_and_closure(f, mean, cov):
    return f._moment_rhs(0.0, mean, cov), f._closure(0.0, mean, cov)


@pytest.mark.parametrize("d", DIMS)
def test_moment_rhs_is_the_affine_closure_and_equals_design_forms(d):
    """(1) moment_rhs = (Gamma(alpha), J Sigma + Sigma J^T) and the closure's J, with J read off the
    velocity: Gamma is affine in x (checked at the query points), so its differences along the unit
    vectors give J exactly up to rounding. (2) velocity and moment ODEs equal the DESIGN.md forms
    to 1e-12."""
    g, xs, fields = _fields(d, 10 + d)
    a, S = np.asarray(g.mean), np.asarray(g.cov)
    for name, f in fields.items():
        assert f.exact
        v = np.asarray(f.velocity(g, _points(g, xs)))
        J = (v[1:d + 1] - v[0]).T
        scale = max(1.0, np.abs(v).max())
        np.testing.assert_allclose(v[d + 1:], v[0] + (xs - a) @ J.T, rtol=0, atol=1e-12 * scale,
                                   err_msg=name)
        (dm, dS), (dm2, Jc) = _moments_and_closure(f, g.mean, g.cov)
        np.testing.assert_allclose(dm, v[0], rtol=0, atol=1e-13 * scale, err_msg=name)
        np.testing.assert_allclose(dm2, v[0], rtol=0, atol=1e-13 * scale, err_msg=name)
        np.testing.assert_allclose(dS, J @ S + S @ J.T, rtol=0, atol=1e-12 * scale, err_msg=name)
        np.testing.assert_allclose(Jc, J, rtol=0, atol=1e-12 * scale, err_msg=name)
        if name == "sum":
            continue
        dv, ddm, ddS = _design(name, f, a, S, xs[1])
        sc = max(1.0, np.abs(ddS).max())
        np.testing.assert_allclose(v[d + 2], dv, rtol=1e-12, atol=1e-12 * sc, err_msg=name)
        np.testing.assert_allclose(dm, ddm, rtol=1e-12, atol=1e-12 * sc, err_msg=name)
        np.testing.assert_allclose(dS, ddS, rtol=1e-12, atol=1e-12 * sc, err_msg=name)


def _sqrtm(S):
    w, U = np.linalg.eigh(S)
    return (U * np.sqrt(np.clip(w, 0, None))) @ U.T


def _design(name, f, a, S, x):
    """DESIGN.md section 2 forms: (velocity at x, d alpha/dt, d Sigma/dt), in NumPy."""
    I = np.eye(len(a))
    if name == "affine":
        W, b = np.asarray(f.W), np.asarray(f.b)
        return W @ x + b, W @ a + b, W @ S + S @ W.T
    if name == "multihead":
        outs = [_design("softmax", h, a, S, x) for h in f.heads]
        return tuple(sum(o[i] for o in outs) for i in range(3))
    Q, K, V, WO = (np.asarray(getattr(f, n)) for n in ("Q", "K", "V", "W_O"))
    B, A = WO @ V, K.T @ Q
    if name == "softmax":
        be = float(f.beta)
        return (B @ (a + be * S @ A @ x), B @ (I + be * S @ A) @ a,
                be * (B @ S @ A @ S + S @ A.T @ S @ B.T))
    if name == "l2":
        c = float(f.c)
        M = I + 2 * c * S @ K.T @ K
        vel = lambda z: B @ np.linalg.solve(M, a + 2 * c * S @ K.T @ Q @ z)  # noqa: E731
        J = B @ np.linalg.solve(M, 2 * c * S @ K.T @ Q)
        return vel(x), vel(a), J @ S + S @ J.T
    if name == "sinkhorn":
        r = float(f.beta) / float(f.eps)
        R = _sqrtm(S)
        Ct = 2 * r * S @ A @ R @ np.linalg.inv(I + _sqrtm(I + 4 * r**2 * R @ A.T @ S @ A @ R)) @ R
        return B @ (a + Ct @ np.linalg.solve(S, x - a)), B @ a, B @ Ct + Ct.T @ B.T
    raise KeyError(name)


def test_l2_derivation_is_inverse_free():
    D = gf.derive("l2")
    assert "jnp.linalg.solve" in D.jax_source and "inv(" not in D.jax_source
    assert D.exact and "c" in [p.name for p in D.params] and "beta" not in [p.name for p in D.params]


def test_multihead_equals_sum_of_heads_and_split_matches_hand_split():
    rng = np.random.default_rng(5)
    d, H, k, kv = 3, 3, 2, 1
    Q, K = rng.normal(size=(H * k, d)), rng.normal(size=(H * k, d))
    V, W_O = rng.normal(size=(H * kv, d)), rng.normal(size=(d, H * kv))
    f = gf.MultiHead.split(Q, K, V, W_O, H)
    heads = [gf.Softmax(Q[2 * h:2 * h + 2], K[2 * h:2 * h + 2], V[h:h + 1], beta=1 / np.sqrt(2),
                        W_O=W_O[:, h:h + 1]) for h in range(H)]
    g = gf.Gaussian(rng.normal(size=d), _spd(rng, d))
    xs = rng.normal(size=(4, d))
    hand = gf.MultiHead(heads)
    total = heads[0] + heads[1] + heads[2]
    want_v = sum(np.asarray(h.velocity(g, xs)) for h in heads)
    want = [sum(np.asarray(h.moment_rhs(g)[i]) for h in heads) for i in range(2)]
    for field in (f, hand, total):
        np.testing.assert_allclose(field.velocity(g, xs), want_v, rtol=1e-13, atol=1e-13)
        for i in range(2):
            np.testing.assert_allclose(field.moment_rhs(g)[i], want[i], rtol=1e-13, atol=1e-13)
    for hs, hh in zip(f.heads, heads):
        for n in ("Q", "K", "V", "W_O", "beta"):
            np.testing.assert_array_equal(getattr(hs, n), getattr(hh, n))
    # Per-head betas and the derivation of an H-head field.
    f2 = gf.MultiHead.split(Q, K, V, W_O, H, beta=[0.1, 0.2, 0.3])
    assert [float(h.beta) for h in f2.heads] == [0.1, 0.2, 0.3]
    D = gf.derive(f)
    assert {"Q_3", "beta_3"} <= {p.name for p in D.params} and "Q_4" not in str(D.params)
    dm, dS = D.functions["moment_rhs"](0.0, g.mean[:, None], g.cov,
                                       *[_param(f, p.name) for p in D.params])
    np.testing.assert_allclose(dS, want[1], rtol=1e-12, atol=1e-12)


def _param(sum_field, pname):
    """Value of an indexed parameter (e.g. ``Q_2``) of a sum of derived fields."""
    base, i = pname.rsplit("_", 1)
    return sum_field.parts[int(i) - 1]._param_values()[base]


def test_sum_derivation_is_the_sum_of_derivations():
    g, xs, fields = _fields(3, 50)
    s = fields["l2"] + fields["sinkhorn"] + fields["affine"]
    assert s.exact
    D = gf.derive(s)
    assert D.exact and {"c_1", "epsilon_2", "W_3", "b_3"} <= {p.name for p in D.params}
    args = [_param(s, p.name) for p in D.params]
    dm, dS = D.functions["moment_rhs"](0.0, g.mean[:, None], g.cov, *args)
    want_dm, want_dS = s.moment_rhs(g)
    np.testing.assert_allclose(dm[:, 0], want_dm, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dS, want_dS, rtol=1e-12, atol=1e-12)


def test_errors_name_the_argument():
    rng = np.random.default_rng(0)
    Q, K, V = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    W_O = rng.normal(size=(3, 4))
    with pytest.raises(ValueError, match="n_heads=3"):
        gf.MultiHead.split(Q, K, V, W_O, 3)
    with pytest.raises(ValueError, match="n_heads"):
        gf.MultiHead.split(Q, K, V, W_O, 0)
    with pytest.raises(ValueError, match="W_O"):
        gf.MultiHead.split(Q, K, V, rng.normal(size=(3, 3)), 2)
    with pytest.raises(ValueError, match="K"):
        gf.MultiHead.split(Q, K[:, :2], V, W_O, 2)
    with pytest.raises(ValueError, match="beta"):
        gf.MultiHead.split(Q, K, V, W_O, 2, beta=[1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="heads"):
        gf.MultiHead([gf.Affine(np.eye(3))])
    with pytest.raises(ValueError, match="heads"):
        gf.MultiHead([])
    with pytest.raises(ValueError, match="dimensions"):
        gf.MultiHead([gf.Softmax(Q, K, V, W_O=W_O), gf.Softmax(Q[:, :2], K[:, :2], V[:, :2],
                                                                W_O=W_O[:2])])
    with pytest.raises(ValueError, match="c must be > 0"):
        gf.L2(Q, K, V, c=0.0, W_O=W_O)
    with pytest.raises(ValueError, match="eps must be > 0"):
        gf.Sinkhorn(Q, K, V, eps=-1.0, W_O=W_O)
    with pytest.raises(ValueError, match="W_O"):
        gf.Sinkhorn(Q, K, V)
    with pytest.raises(ValueError, match="W must be square"):
        gf.Affine(np.ones((2, 3)))
    with pytest.raises(ValueError, match="b has shape"):
        gf.Affine(np.eye(3), np.ones(2))
    with pytest.raises(TypeError, match="duration"):
        gf.Layers([gf.Affine(np.eye(3))])
    with pytest.raises(ValueError, match="duration must be > 0"):
        gf.Layers([(gf.Affine(np.eye(3)), 0.0)])
    with pytest.raises(TypeError, match="time-dependent"):
        gf.Affine(np.eye(3)) + gf.Layers([(gf.Affine(np.eye(3)), 1.0)])


@pytest.mark.parametrize("name", ["softmax", "multihead", "l2", "sinkhorn", "affine"])
def test_cli_derive_prints_each_variant(name):
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli_main(["derive", name]) == 0
    out = buf.getvalue()
    assert out.startswith(f"{name}: exact closure") and "d Sigma/dt" in out
    md = gf.derive(name).markdown()
    assert "## Result" in md and "Generated JAX source" in md


# ---------------------------------------------------------------------------------- solves
TS = np.linspace(0.05, 1.0, 20)  # shared by every solve below: one compilation per field type
SOLVE = dict(rtol=1e-10, atol=1e-12)


def _assert_psd_path(traj):
    for S in traj.covs:
        np.testing.assert_allclose(S, S.T, rtol=0, atol=1e-14 * max(1.0, np.abs(S).max()))
        w = np.linalg.eigvalsh(S)
        assert w[0] >= -1e-12 * max(1.0, w[-1])


def sum_of_variants(d, seed):
    """Softmax + L2 + Sinkhorn + affine at random weights (shared with test_gradients.py, so the
    compiled solver is reused)."""
    rng = np.random.default_rng(seed)
    w = [rng.normal(size=(d, d)) / np.sqrt(d) for _ in range(9)]
    return (gf.Softmax(w[0], w[1], w[2], beta=0.8) + gf.L2(w[3], w[4], w[5], c=0.5)
            + gf.Sinkhorn(w[6], w[7], w[8], eps=0.7) + gf.Affine(-0.3 * np.eye(d), np.ones(d)))


def test_every_variant_solves_with_symmetric_psd_covariance():
    """Each variant through gf.solve (as summands of one field, and multi-head on its own)."""
    rng = np.random.default_rng(60)
    g = gf.Gaussian(rng.normal(size=2), _spd(rng, 2))
    s = sum_of_variants(2, 61)
    Qm = rng.normal(size=(4, 2))
    mh = gf.MultiHead.split(Qm, -Qm, rng.normal(size=(2, 2)), None, 2)
    for f in (s, mh):
        tr = gf.solve(f, g, 1.0, ts=TS, **SOLVE)
        assert tr.status == "completed", (f.name, tr.status)
        np.testing.assert_allclose(tr.ts, TS)
        _assert_psd_path(tr)


def _softmax_identity_value(Q, K):
    return gf.Softmax(Q, K, np.eye(3))


def test_layers_match_closed_form_across_switches():
    """W_O V = I: Sigma^{-1}(t) = Sigma0^{-1} - beta int (A(s) + A(s)^T) ds for any schedule."""
    rng = np.random.default_rng(7)
    Q1 = rng.normal(size=(3, 3)) / 2
    f1 = _softmax_identity_value(Q1, -Q1)  # A1 = -Q1^T Q1: contracting
    Q2, K2 = rng.normal(size=(3, 3)) / 3, rng.normal(size=(3, 3)) / 3
    f2 = _softmax_identity_value(Q2, K2)
    g = gf.Gaussian(np.zeros(3), _spd(rng, 3))
    tr = gf.solve(gf.Layers([(f1, 0.5), (f2, 0.5)]), g, 1.0, ts=TS, **SOLVE)
    assert tr.status == "completed"
    np.testing.assert_allclose(tr.ts, TS)
    S1, S2 = (np.asarray(f.K).T @ np.asarray(f.Q) for f in (f1, f2))
    P0 = np.linalg.inv(g.cov)
    for t, S in zip(tr.ts, tr.covs):
        P = P0 - min(t, 0.5) * (S1 + S1.T) - max(t - 0.5, 0) * (S2 + S2.T)
        np.testing.assert_allclose(S, np.linalg.inv(P), rtol=1e-8, atol=1e-10)
    _assert_psd_path(tr)
    # The same as chaining two solves from the switch state (both integrated: a gf.Layers
    # schedule is integrated layer by layer, a single W_O V = I layer would be in closed form).
    a = gf.solve(f1, g, 0.5, ts=TS[TS <= 0.5], closed_form="never", **SOLVE)
    with pytest.raises(ValueError, match="past the end of the schedule"):
        gf.solve(gf.Layers([(f1, 0.5)]), g, 1.0)
    np.testing.assert_allclose(a.covs, tr.covs[:10], rtol=1e-12, atol=1e-14)


def test_layers_stop_at_blowup_in_a_middle_layer():
    """Sigma0 = I, A = -I for 0.2 then A = +I: Sigma^{-1} = 1.4 I - 2 (t - 0.2), T* = 0.9."""
    I3 = np.eye(3)
    neg, pos = _softmax_identity_value(I3, -I3), _softmax_identity_value(I3, I3)
    ts = np.r_[np.linspace(0.02, 0.2, 10), np.linspace(0.3, 1.2, 10)]
    L = gf.Layers([(neg, 0.2), (pos, 1.0), (neg, 0.5)])
    tr = gf.solve(L, gf.Gaussian.standard(3), 1.5, ts=ts, **SOLVE)
    assert tr.status == "blowup"
    assert tr.blowup_time == pytest.approx(0.9, rel=1e-6)
    assert tr.t_stop < 0.9 and np.all(tr.ts <= tr.t_stop)
    assert L.at(0.1) is neg and L.at(0.2) is pos and L.at(1.5) is neg
