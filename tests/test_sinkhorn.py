"""Sinkhorn attention: the closed-form Schrödinger solution, particle Sinkhorn, the softmax limit,
singular kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

import gaussflow as gf
from gaussflow.codegen import compile_source, generate_function
from gaussflow.symbolic import symbols as S
from gaussflow.symbolic.coupling import gaussian_self_coupling
from gaussflow.field import _jit_velocity


def _spd(rng, d, floor=0.2):
    M = rng.normal(size=(d, d))
    return M @ M.T / d + floor * np.eye(d)


@pytest.fixture(scope="module")
def coupling_fn():
    """The rule's cross-covariance C = Cov(X, Y) as a compiled function of (Sigma, Q, K, beta, eps)."""
    sc = gaussian_self_coupling(gf.Sinkhorn.log_kernel(), S.x, S.y, S.Sigma)
    src = generate_function("coupling", (S.Sigma, S.Q, S.K, S.beta, S.eps),
                            [sc.realise(sc.cross_cov)])
    return jax.jit(compile_source(src)["coupling"])


CASES = [(2, 2, 1), (3, 3, 2), (5, 2, 3), (3, 1, 4), (5, 5, 5)]  # (d, k, seed); k < d: singular A


@pytest.mark.parametrize("d,k,seed", CASES)
def test_closed_form_solves_the_schrodinger_system(coupling_fn, d, k, seed):
    """Joint covariance [[Sigma, C], [C^T, Sigma]] is positive definite and the off-diagonal block
    of its inverse is -G, G = (beta/eps) Q^T K (the log-kernel's bilinear part x^T G y)."""
    rng = np.random.default_rng(seed)
    Q, K = rng.normal(size=(k, d)), rng.normal(size=(k, d))
    Sigma, beta, eps = _spd(rng, d), 0.9, 0.6
    C = np.asarray(coupling_fn(Sigma, Q, K, beta, eps))
    G = beta / eps * Q.T @ K
    Jt = np.block([[Sigma, C], [C.T, Sigma]])
    assert np.linalg.eigvalsh(Jt)[0] > 0
    P = np.linalg.inv(Jt)
    np.testing.assert_allclose(P[:d, d:], -G, rtol=0, atol=1e-10 * max(1, np.abs(G).max()))
    # The matrix equation of the derivation.
    lhs = np.linalg.solve(Sigma, C) @ np.linalg.inv(Sigma - C.T @ np.linalg.solve(Sigma, C))
    np.testing.assert_allclose(lhs, G, rtol=0, atol=1e-10 * max(1, np.abs(G).max()))
    # The field's closure uses the same C: with W_O V = I, J = C^T Sigma^{-1}.
    f = gf.Sinkhorn(Q, K, np.eye(d), eps=eps, beta=beta)
    _, J = f._closure(0.0, jnp.zeros(d), jnp.asarray(Sigma))
    np.testing.assert_allclose(np.asarray(J) @ Sigma, C.T, rtol=0, atol=1e-12 * np.abs(C).max())


@jax.jit
def _particle_sinkhorn_velocity(Y, Xq, Q, K, VO, scale):
    """Log-domain Sinkhorn self-coupling of the uniform cloud Y for the kernel exp(scale <Qx, Ky>),
    iterated until the potential f changes by < 1e-12; the velocity at new query points uses the
    key potential g: weights softmax_j(g_j + scale <Q x, K y_j>)."""
    Sc = scale * (Y @ Q.T) @ (Y @ K.T).T  # query i, key j

    def body(c):
        f, g, it, _ = c
        f_new = -logsumexp(Sc + g[None, :], axis=1)
        g = -logsumexp(Sc + f_new[:, None], axis=0)
        return f_new, g, it + 1, jnp.max(jnp.abs(f_new - f))

    n = Y.shape[0]
    f, g, it, err = jax.lax.while_loop(lambda c: (c[3] > 1e-12) & (c[2] < 5000), body,
                                       (jnp.zeros(n), jnp.zeros(n), 0, jnp.inf))
    w = jax.nn.softmax(scale * (Xq @ Q.T) @ (Y @ K.T).T + g[None, :], axis=1)
    return w @ (Y @ VO.T), err


@pytest.mark.parametrize("eps", [1.0, 0.5])
def test_velocity_matches_particle_sinkhorn(eps):
    """Particle Sinkhorn on B = 8 independent clouds of 1000 samples; each is compared with the
    closure at the cloud's empirical moments (DESIGN.md §5); the mean difference must lie within
    5 standard errors (spread across clouds), and the test must be able to tell Sinkhorn from
    softmax (their velocities differ by more than 5 standard errors)."""
    rng = np.random.default_rng(3)
    d = 2
    Q, K = rng.normal(size=(d, d)) / np.sqrt(d), rng.normal(size=(d, d)) / np.sqrt(d)
    V = rng.normal(size=(d, d))
    Sigma, alpha = _spd(rng, d, 0.3) / 1.0, rng.normal(size=d)
    g = gf.Gaussian(alpha, Sigma)
    Xq = alpha + rng.normal(size=(3, d)) @ np.linalg.cholesky(Sigma).T
    f = gf.Sinkhorn(Q, K, V, eps=eps)
    diffs = []
    for b in range(8):
        Y = rng.multivariate_normal(alpha, Sigma, size=1000)
        v, err = _particle_sinkhorn_velocity(Y, Xq, Q, K, V, 1.0 / eps)
        assert float(err) <= 1e-12  # converged scalings
        emp = gf.Gaussian(Y.mean(0), np.cov(Y.T, bias=True))
        diffs.append(np.asarray(v) - np.asarray(_jit_velocity(f, 0.0, emp.mean, emp.cov, Xq)))
    diffs = np.array(diffs)
    mean, se = diffs.mean(0), diffs.std(0, ddof=1) / np.sqrt(len(diffs))
    assert np.all(np.abs(mean) <= 5 * se), mean / se
    soft = np.asarray(gf.Softmax(Q, K, V, beta=1.0 / eps).velocity(g, Xq))
    gap = np.linalg.norm(soft - np.asarray(f.velocity(g, Xq)), axis=1)
    assert np.all(gap > 5 * np.linalg.norm(se, axis=1))


def test_small_beta_over_eps_approaches_softmax_at_the_predicted_rate():
    """J_sinkhorn - J_softmax(beta/eps) = -r^3 W_O V R H^T H H^T R^{-1} + 2 r^5 W_O V R H^T (H H^T)^2
    R^{-1} + O(r^7), r = beta/eps, R = Sigma^{1/2}, H = R A^T R (from delta(s) = 2s/(1 + sqrt(1 + 4s^2))
    = s - s^3 + 2 s^5 - ...); velocities agree at alpha = 0 to O(r^3)."""
    rng = np.random.default_rng(11)
    d = 3
    Q, K, V = rng.normal(size=(2, d)), rng.normal(size=(2, d)), rng.normal(size=(d, d))
    Sigma = _spd(rng, d)
    w, U = np.linalg.eigh(Sigma)
    R, Ri = (U * np.sqrt(w)) @ U.T, (U / np.sqrt(w)) @ U.T
    A = K.T @ Q
    H = R @ A.T @ R
    lead = -V @ R @ H.T @ H @ H.T @ Ri
    lead5 = 2 * V @ R @ H.T @ H @ H.T @ H @ H.T @ Ri
    g = gf.Gaussian(np.zeros(d), Sigma)
    errs = []
    for r in (0.02, 0.01):
        sk = gf.Sinkhorn(Q, K, V, eps=1.0, beta=r)
        sm = gf.Softmax(Q, K, V, beta=r)
        Jk = np.asarray(sk._closure(0.0, g.mean, g.cov)[1])
        Js = np.asarray(sm._closure(0.0, g.mean, g.cov)[1])
        errs.append(np.linalg.norm((Jk - Js) / r**3 - lead) / np.linalg.norm(lead))
        x = rng.normal(size=d)
        dv = np.asarray(sk.velocity(g, x) - sm.velocity(g, x))
        assert np.linalg.norm(dv) <= 2 * r**3 * np.linalg.norm(lead) * np.linalg.norm(x)
        # beta and eps enter only through beta/eps.
        np.testing.assert_allclose(gf.Sinkhorn(Q, K, V, eps=2.0, beta=2 * r).moment_rhs(g)[1],
                                   sk.moment_rhs(g)[1], rtol=1e-12, atol=1e-15)
        errs[-1] = (errs[-1], np.linalg.norm((Jk - Js) / r**3 - lead - r**2 * lead5)
                    / np.linalg.norm(r**2 * lead5))
    (e1, n1), (e2, n2) = errs
    assert 3.5 < e1 / e2 < 4.5  # the deviation from the r^3 term is O(r^2)
    assert n1 < 0.05 and n2 < n1 / 3  # and is the predicted r^5 term, up to O(r^2) relative


def test_singular_kernels_and_singular_covariance():
    """A of rank one, A = 0 and a rank-deficient Sigma: finite, no pseudo-inverse needed."""
    rng = np.random.default_rng(2)
    d = 3
    q = rng.normal(size=(1, d))
    V = rng.normal(size=(d, d))
    g = gf.Gaussian(rng.normal(size=d), _spd(rng, d))
    x = rng.normal(size=(4, d))
    f = gf.Sinkhorn(q, -q, V, eps=0.5)  # A = -q^T q, rank one
    assert np.all(np.isfinite(np.asarray(f.velocity(g, x))))
    zero = gf.Sinkhorn(q, np.zeros((1, d)), V)  # A = 0: independent coupling
    np.testing.assert_allclose(zero.velocity(g, x), np.tile(V @ g.mean, (4, 1)), atol=1e-14)
    np.testing.assert_allclose(zero.moment_rhs(g)[1], np.zeros((d, d)), atol=1e-14)
    u = rng.normal(size=(d, 2))
    Ssing = u @ u.T  # rank two
    gs = gf.Gaussian(g.mean, Ssing)
    gr = gf.Gaussian(g.mean, Ssing + 1e-10 * np.eye(d))
    for field in (f, gf.Sinkhorn(rng.normal(size=(2, d)), rng.normal(size=(2, d)), V)):
        a, b = field.moment_rhs(gs), field.moment_rhs(gr)
        assert np.all(np.isfinite(a[1]))
        np.testing.assert_allclose(a[1], b[1], rtol=0, atol=1e-4 * np.abs(a[1]).max())


def test_sinkhorn_factor_is_the_literal_formula_and_differentiates_through_ties():
    """(I + (I + 4 H^T H)^{1/2})^{-1} from the eigh of [[0, H], [H^T, 0]]: equal to the literal
    formula (scipy's sqrtm, inverse) and its JVP equal to central differences, for a full-rank,
    a rank-one (repeated zero singular values) and a zero H."""
    from gaussflow.linalg import sinkhorn_factor
    import scipy.linalg
    rng = np.random.default_rng(5)
    u = rng.normal(size=(4, 1))
    for H in (rng.normal(size=(4, 4)), u @ rng.normal(size=(1, 4)), np.zeros((4, 4))):
        want = np.linalg.inv(np.eye(4) + np.real(scipy.linalg.sqrtm(np.eye(4) + 4 * H.T @ H)))
        np.testing.assert_allclose(np.asarray(sinkhorn_factor(H)), want, rtol=0, atol=1e-14)
        dH, h = rng.normal(size=(4, 4)), 1e-6
        fd = (np.asarray(sinkhorn_factor(H + h * dH))
              - np.asarray(sinkhorn_factor(H - h * dH))) / (2 * h)
        _, jv = jax.jvp(sinkhorn_factor, (jnp.asarray(H),), (jnp.asarray(dH),))
        assert np.all(np.isfinite(np.asarray(jv)))
        np.testing.assert_allclose(np.asarray(jv), fd, rtol=0, atol=1e-8)


def _sinkhorn_cov_rhs_mp(S, G, digits=50):
    """d Sigma/dt = C + C^T (W_O V = I) in mpmath: C = 2 R H (I + (I + 4 H^T H)^{1/2})^{-1} R,
    H = R G R, R = Sigma^{1/2}."""
    import mpmath as mp
    with mp.workdps(digits):
        def sqrt_psd(X):
            E, U = mp.eigsy(X)
            return U * mp.diag([mp.sqrt(max(e, 0)) for e in E]) * U.T
        n = S.shape[0]
        R = sqrt_psd(mp.matrix(S.tolist()))
        H = R * mp.matrix(G.tolist()) * R
        C = R * (2 * H * mp.inverse(mp.eye(n) + sqrt_psd(mp.eye(n) + 4 * H.T * H))) * R
        return np.array((C + C.T).tolist(), dtype=float)


def test_closure_keeps_the_small_directions_of_a_large_ill_conditioned_sigma():
    """At tr Sigma ~ 1e7, cond ~ 1e8 (where growing Sinkhorn flows of the regime maps stalled at
    max_steps): d Sigma/dt = J Sigma + Sigma J^T against 50-digit arithmetic, each entry in the
    eigenbasis of Sigma relative to sqrt(l_i l_j) (the accuracy the small directions need). The
    literal (I + 4 H^T H)^{1/2} lost them (error 4.5e-2 here); the factor from the singular
    values of H keeps them to 1e-7."""
    rng = np.random.default_rng(0)
    d = 4
    Q, K = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    U, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = np.array([3e7, 2e5, 1e2, 0.3])
    S = (U * lam) @ U.T
    S = (S + S.T) / 2
    f = gf.Sinkhorn(Q, K, np.eye(d))
    _, J = f._closure(0.0, jnp.zeros(d), jnp.asarray(S))
    J = np.asarray(J)
    got = J @ S + S @ J.T
    want = _sinkhorn_cov_rhs_mp(S, Q.T @ K)
    w, W = np.linalg.eigh(S)
    err = np.abs(W.T @ (got - want) @ W) / np.sqrt(np.outer(w, w))
    assert err.max() < 1e-5, err.max()


# ------------------------------------------------------------ particle Sinkhorn: Anderson, causal
from scipy.special import logsumexp as np_logsumexp  # noqa: E402

from gaussflow import particles as P  # noqa: E402
from gaussflow.particles.sinkhorn import anderson_mix  # noqa: E402


def test_anderson_mix_solves_a_linear_fixed_point_in_dim_plus_one_steps():
    """Type-II Anderson on an affine contraction T(f) = A f + b in R^3: with the residuals of 4
    iterates (any 4 affinely independent points), the mixed point is the fixed point (A - I
    invertible), up to the Tikhonov term."""
    rng = np.random.default_rng(0)
    A = 0.5 * rng.normal(size=(3, 3)) / np.sqrt(3)
    b = rng.normal(size=3)
    fix = np.linalg.solve(np.eye(3) - A, b)
    F = rng.normal(size=(4, 3))
    T = F @ A.T + b
    R = jnp.asarray(np.concatenate([T - F, np.zeros((2, 3))]))  # two empty history slots
    G = jnp.asarray(np.concatenate([T, np.zeros((2, 3))]))
    valid = jnp.asarray([True] * 4 + [False] * 2)
    out, ok = anderson_mix(R, G, valid, jnp.ones(3, bool))
    assert bool(ok)
    np.testing.assert_allclose(np.asarray(out), fix, rtol=0, atol=1e-8)
    # fewer points than dim + 1: not the fixed point (the test can fail)
    out2, _ = anderson_mix(R, G, jnp.asarray([True, True] + [False] * 4), jnp.ones(3, bool))
    assert np.abs(np.asarray(out2) - fix).max() > 1e-3


@pytest.fixture(scope="module")
def concentrated():
    """A cloud whose coupling is concentrated (kernel exp(<x, y> / 0.3), aligned with the
    diagonal): plain Sinkhorn needs hundreds of sweeps."""
    rng = np.random.default_rng(4)
    d = 2
    X = jnp.asarray(rng.normal(size=(96, d)))
    f = gf.Sinkhorn(np.eye(d), np.eye(d), np.eye(d) + 0.3 * rng.normal(size=(d, d)), eps=0.3)
    return f, X


def test_anderson_sinkhorn_equals_plain_sinkhorn(concentrated):
    """Both stop at the same marginal tolerance; both velocities are within what that tolerance
    allows of a tightly converged reference; Anderson needs far fewer sweeps."""
    f, X = concentrated
    n = X.shape[0]
    sc = P.Scores(P.kernel_spec(type(f)), f, X)
    la = jnp.full((n,), -np.log(n))
    runs = {}
    for m in (0, 10):
        ctx = P.Context(sinkhorn_tol=1e-10, sinkhorn_anderson=m, sinkhorn_max_iter=5000)
        g, it, err = P.sinkhorn_potentials(sc, la, ctx)
        runs[m] = (int(it), float(err), np.asarray(P.jit_velocity(f, X, None, ctx)))
        assert float(err) <= 1e-10
    ref = np.asarray(P.jit_velocity(f, X, None, P.Context(sinkhorn_tol=1e-14,
                                                          sinkhorn_anderson=0,
                                                          sinkhorn_max_iter=20000)))
    (it0, _, v0), (ita, _, va) = runs[0], runs[10]
    # measured: 313 plain sweeps, 32 Anderson sweeps; relative distance to the reference 2.0e-11
    # (plain) and 1.2e-11 (Anderson): a marginal error of 1e-10 moves the velocity by about that
    # much (times the conditioning of the Sinkhorn fixed point, ~ 1/(1 - rate)).
    assert it0 > 200 and ita < it0 / 5, (it0, ita)
    scale = np.abs(ref).max()
    assert np.abs(v0 - ref).max() <= 1e-9 * scale
    assert np.abs(va - ref).max() <= 1e-9 * scale


def _prefix_reference(f, X, pos):
    """Every token's velocity under the Sinkhorn field of its prefix cloud, one prefix at a time
    (dense log-domain Sinkhorn, converged to 1e-14)."""
    Q, K, W = (np.asarray(a) for a in (f.Q, f.K, np.asarray(f.W_O) @ np.asarray(f.V)))
    r = float(f.beta) / float(f.eps)
    out = []
    for i in range(len(X)):
        Y = X[pos <= pos[i]]
        S = r * (Y @ Q.T) @ (Y @ K.T).T
        la = -np.log(len(Y))
        fp, g = np.zeros(len(Y)), np.zeros(len(Y))
        for _ in range(20000):
            g = la - np_logsumexp(S + fp[:, None], axis=0)
            fn = la - np_logsumexp(S + g[None, :], axis=1)
            if np.max(np.abs(fn - fp)) < 1e-14:
                break
            fp = fn
        s = r * (X[i] @ Q.T) @ (Y @ K.T).T + g
        out.append(np.exp(s - np_logsumexp(s)) @ (Y @ W.T))
    return np.array(out)


def test_causal_particle_sinkhorn_is_the_sinkhorn_field_of_each_prefix():
    rng = np.random.default_rng(5)
    d = 2
    f = gf.Sinkhorn(rng.normal(size=(d, d)), rng.normal(size=(d, d)), rng.normal(size=(d, d)),
                    eps=1.5)
    X = rng.normal(size=(23, d))
    pos = np.repeat(np.arange(12), 2)[:23] / 12.0  # ties: tokens at one position share a prefix
    rng.shuffle(pos)
    ref = _prefix_reference(f, X, pos)
    # block-wise passes, one coupling per distinct position (12 here) ...
    v = np.asarray(P.velocity(f, X, positions=pos, block=5))
    assert np.abs(v - ref).max() <= 1e-9 * np.abs(ref).max()
    # ... and dense, one coupling per token (no static bound on the distinct positions)
    v = np.asarray(P.jit_velocity(f, jnp.asarray(X), jnp.asarray(pos), P.Context(dense=True)))
    assert np.abs(v - ref).max() <= 1e-9 * np.abs(ref).max()
    # the tokens at the last position see the whole cloud: the unmasked field
    last = pos == pos.max()
    np.testing.assert_allclose(np.asarray(P.velocity(f, X))[last], ref[last], rtol=0,
                               atol=1e-9 * np.abs(ref).max())
    # a static bound below the number of distinct positions is loud (NaN), never silently wrong
    v = np.asarray(P.jit_velocity(f, jnp.asarray(X), jnp.asarray(pos),
                                  P.Context(dense=True, n_prefixes=3)))
    assert np.isnan(v).any() and np.isfinite(v[pos <= np.unique(pos)[2]]).all()


def test_sinkhorn_anderson_bad_input():
    f = gf.Sinkhorn(np.eye(2), np.eye(2), np.eye(2))
    X = np.zeros((4, 2))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="sinkhorn_anderson must be an integer >= 0"):
            P.velocity(f, X, sinkhorn_anderson=bad)
        with pytest.raises(ValueError, match="sinkhorn_anderson"):
            P.simulate(f, X, [0.0, 1.0], sinkhorn_anderson=bad)
