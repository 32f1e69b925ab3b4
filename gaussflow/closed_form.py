r"""The closed-form fast path of `gaussflow.solve` and `gaussflow.sweep`.

**When.** A field's derivation may carry the closed form `inverse_increment`: with the value
map $W_O V = I$, $d\Sigma^{-1}/dt$ does not involve $\Sigma$, and the engine integrates it in
time symbolically (`gaussflow.symbolic.engine.identity_value_closed_form`), so
$I(t) = \int_0^t (d\Sigma^{-1}/ds)\, ds$ (for softmax $-B(t) (A + A^T)$, $A = K^T Q$,
$B(t) = \int_0^t \beta$). The velocity is linear in the value map, so with $W_O V = v I$

$$\Sigma(t)^{-1} = \Sigma_0^{-1} + D(t), \qquad D(t) = v\,(I(t) - I(t_0)).$$

A member takes the fast path when every check below holds (`plan`):

1. the field is a single derived field whose derivation generates `inverse_increment`, and the
   state is one Gaussian (not a `gf.Layers` schedule, not positional blocks, not traced);
2. $W_O V = v I$: $\max|W_O V - vI| \le$ `VALUE_TOL` $\max(1, |v|, \max|W_O V|)$ with
   $v = \operatorname{tr}(W_O V)/d$;
3. at the probe times $t_0$, $(t_0 + t_1)/2$, $t_1$ and a fixed generic probe state
   $(\alpha_p, \Sigma_p)$, the field's own closure satisfies
   $J\Sigma_p + \Sigma_p J^\top = \Sigma_p G \Sigma_p$ with $G = -D'(t)$ (by automatic
   differentiation of the generated `inverse_increment`), to `PROBE_TOL` relative;
4. the mean: either $\dot\alpha = v\alpha + \tfrac12\Sigma G\alpha$ at the probes (for softmax:
   iff $A$ is symmetric), the increment is one scalar time profile times a fixed matrix
   (`ClosedForm.time_structure` is `"linear"` or `"profile"`) and $\Sigma_0$ is positive
   definite; or $\alpha_0 = 0$ and $\dot\alpha(t, 0, \Sigma_p) = 0$ at the probes (the mean stays
   0). Then

   $$\alpha(t) = e^{v (t - t_0)}\, R\, M(t)^{-1/2} R^{-1} \alpha_0.$$

   Otherwise the mean has no closed form here (for softmax with a non-symmetric $A$ the mean
   solves $\dot w = v w - v\beta A^\top \Sigma(t) w$, $w = \Sigma^{-1}\alpha$, a linear ODE whose
   coefficients do not commute in time) and the member is integrated.

Checks 3 and 4 are numerical, at three times: they guard the structural facts the derivation
cannot see (linearity in the value map, the form of the mean's ODE, a symmetric $A$).

**Evaluation** (NumPy, float64). $\Sigma_0 = U \operatorname{diag}(w) U^T$ (`eigh`; round-off
negative $w$ set to 0), $R = U \operatorname{diag}(\sqrt w)$ so that $\Sigma_0 = R R^\top$
(singular $\Sigma_0$ allowed for the covariance), and

$$\Sigma(t) = R\, M(t)^{-1} R^\top,\qquad
  M(t) = I + R^\top D(t) R = E\,\operatorname{diag}(m)\,E^\top$$

from the eigendecomposition of the symmetric $M(t)$: no $\Sigma_0^{-1}$ is formed, and the
factors $1/m_i$ are exact to round-off at any $t$. For a `"linear"` increment
(constant $\beta$) $T = R^T v I(1) R$ is diagonalised once ($m_i = 1 + (t - t_0) \mu_i$;
eigenvalues below $8 d \epsilon \max|\mu|$ are round-off and set to 0).

**Blow-up.** $\Sigma$ blows up when $M(t)$ (equivalently $\Sigma^{-1}$) loses positive
definiteness. Linear increment: exactly $T^* = t_0 + 1 / \max_i(-\mu_i)$ (the generalized
eigenvalue problem of the pencil $(\Sigma_0^{-1}, -v I(1))$). Otherwise $\lambda_{\min}(M(t))$
is sampled on `GRID` $+ 1$ uniform times of $[t_0, t_1]$ and the save times, and the first
sign change is refined by bisection to float resolution (a loss of definiteness that begins and
ends between two samples, less than $(t_1 - t_0)/$`GRID` long, would be missed). The solve then
stops, like the integrator, where $f = \operatorname{tr}\Sigma / \operatorname{tr}\Sigma_0$
reaches `blowup_threshold` (bisection on $[t_0, T^*)$), status `"blowup"`, with
`blowup_time` $= T^*$ (exact up to round-off, where the integrator's estimate is accurate to
$O(1/f)$). A member whose $T^*$ is past $t_1$ completes (the integrator could also call a
member blow-up whose $T^*$ lies within about $10^{-3} (t - t_0)$ past $t_1$).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import is_concrete
from .field import DerivedField

if TYPE_CHECKING:
    from jax.typing import ArrayLike

    from .field import Field

#: `closed_form=` values of `gf.solve` / `gf.sweep`.
MODES = ("auto", "never", "always")
#: Relative tolerance of the hypothesis $W_O V = v I$ (check 2 of the module docstring).
VALUE_TOL = 1e-10
#: Relative tolerance of the probe identities (checks 3 and 4).
PROBE_TOL = 1e-9
#: Uniform samples of $[t_0, t_1]$ for the blow-up search of a non-linear increment.
GRID = 1024
#: Members per call of the jitted probe / increment functions (see `_chunked`).
CHUNK = 64
#: Bisection steps (halves the bracket each: 200 reach float resolution from any bracket).
BISECT = 200
#: The closed form's key in a derivation (`Derivation.closed_forms`, `Derivation.functions`).
KEY = "inverse_increment"


def check_mode(closed_form: str) -> str:
    """Validate `closed_form=` (one of `MODES`)."""
    if closed_form not in MODES:
        raise ValueError(f"closed_form must be one of {MODES}, got {closed_form!r}")
    return closed_form


def _probe_state(d: int):
    rng = np.random.default_rng(12345)
    a = rng.normal(size=d)
    G = rng.normal(size=(d, d))
    return a / np.linalg.norm(a), np.eye(d) + 0.5 * G @ G.T / d


@eqx.filter_jit
def _increments(field, batched, ts):
    r"""$I(t)$ per member: `ts` `(n, m)` $\to$ `(n, m, d, d)`."""
    fn = field.derivation().functions[KEY]

    def one(f, tt):
        args = f._args()
        return jax.vmap(lambda t: jnp.asarray(fn(t, *args)))(tt)

    return eqx.filter_vmap(one, in_axes=(0 if batched else None, 0))(field, ts)


@eqx.filter_jit
def _probes(field, batched, tp, v, alphas, Sigs):
    """Both sides of the probe identities per member and probe time (`tp` (n, 3))."""
    fn = field.derivation().functions[KEY]

    def one(f, tt, vv, alpha, Sig):
        args = f._args()

        def at(t):
            G = -vv * jax.jacfwd(lambda s: jnp.asarray(fn(s, *args)))(t)
            dm, J = f._closure(t, alpha, Sig)
            dm0, _ = f._closure(t, jnp.zeros_like(alpha), Sig)
            return (J @ Sig + Sig @ J.T, Sig @ G @ Sig, dm, vv * alpha + 0.5 * Sig @ G @ alpha,
                    dm0, G)

        return jax.vmap(at)(tt)

    return eqx.filter_vmap(one, in_axes=(0 if batched else None, 0, 0, 0, 0))(field, tp, v,
                                                                           alphas, Sigs)


def _chunked(fn, field, batched, rows, *arrays):
    """`fn(field[rows], batched, *arrays)` (`arrays` aligned with `rows`) in chunks of at most
    `CHUNK` members (one member: one call of one), the last padded with its last member:
    a jitted `fn` compiles for two shapes only, whatever the number of members."""
    rows = np.asarray(rows)
    n = len(rows)
    size = 1 if n == 1 else CHUNK
    outs = []
    for s in range(0, n, size):
        take = np.minimum(np.arange(s, s + size), n - 1)
        f = subset(field, batched, rows[take])
        res = fn(f, batched, *(jnp.asarray(np.asarray(a)[take]) for a in arrays))
        outs.append([np.asarray(x)[:min(size, n - s)] for x in
                     (res if isinstance(res, tuple) else (res,))])
    cat = [np.concatenate(parts) for parts in zip(*outs)]
    return tuple(cat) if len(cat) > 1 else cat[0]


def _probe_checks(field, batched, rows, v, t0, t1, d):
    """Checks 3 and 4 of the module docstring for members `rows`: `(cov ok, mean formula ok,
    mean ODE homogeneous)`, each `(len(rows),)` bool."""
    B = len(rows)
    a_p, S_p = _probe_state(d)
    tp = np.broadcast_to(np.array([t0, 0.5 * (t0 + t1), t1]), (B, 3))
    ap, Sp = np.broadcast_to(a_p, (B, d)), np.broadcast_to(S_p, (B, d, d))
    dS, SGS, dm, mform, dm0, G = _chunked(_probes, field, batched, rows, tp, v, ap, Sp)
    n = B * 3
    scale = np.maximum(np.abs(dS).reshape(B, -1).max(1), np.abs(SGS).reshape(B, -1).max(1))
    ok_cov = _close(dS.reshape(n, d, d), SGS.reshape(n, d, d), np.repeat(scale, 3)).reshape(B, 3)
    ok_cov = ok_cov.all(axis=1) & np.all(np.isfinite(G.reshape(B, -1)), axis=1)
    mscale = np.maximum(np.abs(dm).reshape(B, -1).max(1), np.abs(mform).reshape(B, -1).max(1))
    mscale = np.maximum(mscale, np.abs(v))
    ok_form = _close(dm.reshape(n, d), mform.reshape(n, d), np.repeat(mscale, 3)).reshape(B, 3)
    homog = _close(dm0.reshape(n, d), np.zeros((n, d)), np.repeat(mscale, 3)).reshape(B, 3)
    return ok_cov, ok_form.all(axis=1), homog.all(axis=1)


def _close(a, b, scale):
    err = np.abs(a - b).reshape(a.shape[0], -1).max(axis=1)
    return err <= PROBE_TOL * scale


@dataclass(frozen=True)
class Plan:
    """Which members take the closed form (`plan`) and what evaluating it needs."""

    eligible: np.ndarray  # (B,) bool
    reasons: tuple  # (B,) why a member is not eligible ("" if it is)
    field: object = None
    batched: bool = False
    structure: str = "general"
    v: np.ndarray | None = None  # (B,)
    mean_zero: np.ndarray | None = None  # (B,) the mean stays 0


def _refuse(B, reason):
    return Plan(eligible=np.zeros(B, bool), reasons=(reason,) * B)


def plan(field: Field, field_batched: bool, means0: ArrayLike, covs0: ArrayLike,
         state_batched: bool, B: int, t0: float, t1: float) -> Plan:
    """Check the hypotheses of the module docstring for each of `B` members.

    Parameters
    ----------
    field : Field
        The (possibly batched) field.
    field_batched : bool
        Whether its arrays carry a batch axis.
    means0, covs0 : array_like
        Initial means `(B, d)` / covariances `(B, d, d)`, or one `(d,)`, `(d, d)` shared.
    state_batched : bool
        Whether the states carry the batch axis.
    B : int
        Number of members.
    t0, t1 : float
        The time interval.

    Returns
    -------
    Plan
        `eligible` `(B,)` and, per member, the first hypothesis that fails.
    """
    if not isinstance(field, DerivedField) or getattr(field, "time_dependent", False):
        return _refuse(B, f"{type(field).__name__} is not a single derived field")
    D = field.derivation()
    forms = {cf.key: cf for cf in D.closed_forms}
    if KEY not in forms or KEY not in D.functions:
        return _refuse(B, f"{field.name}: the derivation has no closed form for Sigma^{{-1}} "
                          "(d Sigma^{-1}/dt depends on Sigma, or no value map W_O V)")
    leaves = jax.tree_util.tree_leaves(eqx.filter(field, eqx.is_array))
    if not all(is_concrete(x) for x in leaves) or not is_concrete(covs0) \
            or not is_concrete(means0):
        return _refuse(B, "traced inputs (under a JAX transformation): integrate instead")
    try:
        WO, V = np.asarray(field.W_O), np.asarray(field.V)
    except AttributeError:
        return _refuse(B, f"{field.name}: no weights W_O, V")
    means0, covs0 = np.asarray(means0, float), np.asarray(covs0, float)
    means = means0 if state_batched else np.broadcast_to(means0, (B,) + means0.shape)
    covs = covs0 if state_batched else np.broadcast_to(covs0, (B,) + covs0.shape)
    d = means.shape[-1]
    WV = WO @ V
    WV = WV if field_batched else np.broadcast_to(WV, (B, d, d))
    v = np.trace(WV, axis1=1, axis2=2) / d
    dev = np.abs(WV - v[:, None, None] * np.eye(d)).max(axis=(1, 2))
    ok_v = dev <= VALUE_TOL * np.maximum(np.maximum(1.0, np.abs(v)), np.abs(WV).max(axis=(1, 2)))
    ok_cov, ok_form, homog = (np.zeros(B, bool) for _ in range(3))
    rows = np.flatnonzero(ok_v)  # probe only these (no work for a value map that fails)
    if rows.size:
        ok_cov[rows], ok_form[rows], homog[rows] = _probe_checks(field, field_batched, rows,
                                                                 v[rows], t0, t1, d)
    mean_zero = np.all(means == 0, axis=1) & homog
    w = np.linalg.eigvalsh(covs)
    pd = w[:, 0] > VALUE_TOL * np.maximum(1.0, w[:, -1])
    structure = forms[KEY].time_structure
    ok_mean = mean_zero | (ok_form & pd & (structure != "general"))
    reasons = []
    for i in range(B):
        if not ok_v[i]:
            r = (f"W_O V = v I fails (W_O V deviates from {v[i]:.4g} I by {dev[i]:.3g} > "
                 f"{VALUE_TOL:g} relative)")
        elif not ok_cov[i]:
            r = "d Sigma/dt of the closure differs from the closed form's at the probe times"
        elif not ok_mean[i]:
            r = ("the mean has no closed form: d alpha/dt != v alpha + Sigma G alpha / 2 (for "
                 "softmax: A = K^T Q not symmetric) and alpha0 != 0" if not ok_form[i] else
                 "the closed-form mean needs a positive definite g0.cov (and one time profile)")
        else:
            r = ""
        reasons.append(r)
    eligible = ok_v & ok_cov & ok_mean
    return Plan(eligible=eligible, reasons=tuple(reasons), field=field, batched=field_batched,
                structure=structure, v=v, mean_zero=mean_zero)


def subset(field: Field, batched: bool, idx: ArrayLike) -> Field:
    """The members `idx` of a batched field (the field itself when not batched)."""
    if not batched:
        return field
    dyn, static = eqx.partition(field, eqx.is_array)
    dyn = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)[idx]), dyn)
    return eqx.combine(dyn, static)


class _Members:
    """The closed-form solution of the members `idx` of a `Plan` (module docstring)."""

    def __init__(self, p: Plan, idx: np.ndarray, means0: ArrayLike, covs0: ArrayLike,
                 state_batched: bool, t0: float):
        n = len(idx)
        self.n, self.t0 = n, float(t0)
        self.field = subset(p.field, p.batched, idx)
        self.batched = p.batched
        means = np.asarray(means0)[idx] if state_batched else np.broadcast_to(means0, (n,) + np.shape(means0))
        covs = np.asarray(covs0)[idx] if state_batched else np.broadcast_to(covs0, (n,) + np.shape(covs0))
        d = means.shape[-1]
        self.d, self.v = d, p.v[idx]
        w, U = np.linalg.eigh((covs + np.swapaxes(covs, 1, 2)) / 2)
        w = np.clip(w, 0.0, None)
        self.R = U * np.sqrt(w)[:, None, :]  # Sigma0 = R R^T
        self.tr0 = np.maximum(np.trace(covs, axis1=1, axis2=2), 1e-300)
        self.zero = zero = p.mean_zero[idx]
        ua = np.einsum("bji,bj->bi", U, means)
        safe = np.where(w > 0, w, 1.0)
        self.Rinv_a = np.where(zero[:, None], 0.0, ua / np.sqrt(safe))  # R^{-1} alpha0
        self.linear = p.structure == "linear"
        if self.linear:
            X = self.v[:, None, None] * self._inc(np.ones((n, 1)))[:, 0]
            T = np.swapaxes(self.R, 1, 2) @ X @ self.R
            mu, self.E = np.linalg.eigh((T + np.swapaxes(T, 1, 2)) / 2)
            top = np.abs(mu).max(axis=1, keepdims=True)
            self.mu = np.where(np.abs(mu) <= 8 * d * np.finfo(float).eps * top, 0.0, mu)
        else:
            self.inc0 = self._inc(np.full((n, 1), self.t0))[:, 0]

    def _inc(self, ts, rows=None):
        rows = np.arange(self.n) if rows is None else np.asarray(rows)
        if rows.size == 0:
            return np.zeros((0,) + np.shape(ts)[1:] + (self.d, self.d))
        return _chunked(_increments, self.field, self.batched, rows, np.asarray(ts, float))

    def factors(self, ts, rows=None):
        r"""`(m, E)` with $M(t) = E \operatorname{diag}(m) E^T$ at times `ts` `(k, m)` of members
        `rows`."""
        rows = np.arange(self.n) if rows is None else rows
        ts = np.asarray(ts, float)
        if self.linear:
            m = 1.0 + (ts - self.t0)[..., None] * self.mu[rows][:, None, :]
            return m, np.broadcast_to(self.E[rows][:, None], m.shape + (self.d,))
        Dt = self.v[rows][:, None, None, None] * (self._inc(ts, rows) - self.inc0[rows][:, None])
        R = self.R[rows][:, None]
        M = np.eye(self.d) + np.swapaxes(R, -1, -2) @ Dt @ R
        return np.linalg.eigh((M + np.swapaxes(M, -1, -2)) / 2)

    def state(self, ts, rows=None):
        r"""`(means, covs, lam)`, $\lambda_{\min}(M)$ as `lam`, at times `ts` `(k, m)` of members
        `rows`."""
        rows = np.arange(self.n) if rows is None else rows
        m, E = self.factors(ts, rows)
        RE = self.R[rows][:, None] @ E
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            covs = (RE / m[..., None, :]) @ np.swapaxes(RE, -1, -2)
            covs = (covs + np.swapaxes(covs, -1, -2)) / 2
            c = np.einsum("kmji,kj->kmi", E, self.Rinv_a[rows]) / np.sqrt(m)
            grow = np.exp(self.v[rows][:, None] * (np.asarray(ts) - self.t0))
            means = grow[..., None] * np.einsum("kmij,kmj->kmi", RE, c)
        means = np.where(self.zero[rows][:, None, None], 0.0, means)  # alpha0 = 0 stays 0
        return means, covs, m.min(axis=-1)

    def blowup_times(self, t1, ts):
        r"""$T^*$ per member (`inf` when $M$ stays positive definite on $[t_0, t_1]$)."""
        if self.linear:
            rate = np.max(-self.mu, axis=1)
            with np.errstate(divide="ignore"):
                return np.where(rate > 0, self.t0 + 1.0 / np.where(rate > 0, rate, 1.0), np.inf)
        grid = np.unique(np.concatenate([np.linspace(self.t0, t1, GRID + 1), np.asarray(ts)]))
        T = np.full(self.n, np.inf)
        for s in range(0, self.n, 64):
            rows = np.arange(s, min(s + 64, self.n))
            lam = self.factors(np.broadcast_to(grid, (len(rows), len(grid))), rows)[0].min(-1)
            neg = lam <= 0
            hit = np.nonzero(neg.any(axis=1))[0]
            if hit.size == 0:
                continue
            k = neg[hit].argmax(axis=1)
            lo, hi = grid[np.maximum(k - 1, 0)], grid[k]
            for _ in range(BISECT):
                mid = 0.5 * (lo + hi)
                bad = self.factors(mid[:, None], rows[hit])[0].min(-1)[:, 0] <= 0
                lo, hi = np.where(bad, lo, mid), np.where(bad, mid, hi)
            T[rows[hit]] = hi
        return T

    def stop_times(self, Tstar, thr):
        r"""Where $\operatorname{tr}\Sigma / \operatorname{tr}\Sigma_0$ first reaches `thr` before
        $T^*$ (bisection): `(rows, lo, hi)`, the members with a finite $T^*$ and the bracket of
        their stop times."""
        rows = np.nonzero(np.isfinite(Tstar))[0]
        lo, hi = np.full(rows.size, self.t0), Tstar[rows].copy()
        for _ in range(BISECT if rows.size else 0):
            mid = 0.5 * (lo + hi)
            _, covs, lam = self.state(mid[:, None], rows)
            f = np.trace(covs[:, 0], axis1=-2, axis2=-1) / self.tr0[rows]
            bad = ~(lam[:, 0] > 0) | ~(f < thr)
            lo, hi = np.where(bad, lo, mid), np.where(bad, mid, hi)
        return rows, lo, hi


def evaluate(p: Plan, idx: ArrayLike, means0: ArrayLike, covs0: ArrayLike,
             state_batched: bool, ts: ArrayLike, t0: float, t1: float,
             thr: float) -> dict[str, np.ndarray]:
    """The closed-form solution of members `idx` as the raw outputs of
    `gaussflow.integrate.integrate_closure` (leading axis `len(idx)`).

    Parameters
    ----------
    p : Plan
        The `Plan`.
    idx : array_like of int
        Member indices (all eligible).
    means0, covs0 : array_like
        The initial states, as given to `plan`.
    state_batched : bool
        Whether the states carry the batch axis, as given to `plan`.
    ts : array_like
        Save times `(n,)`.
    t0, t1 : float
        The interval.
    thr : float
        `blowup_threshold`.

    Returns
    -------
    dict
        `ts, means, covs, t_stop, tau, mean_end, cov_end, result, num_steps` and the event
        flags `event_nonfinite, event_blowup, event_domain, finite_ahead`, `num_steps = 0`;
        `tau` $= T^* -$ `t_stop` for a blow-up.
    """
    idx = np.asarray(idx)
    mem = _Members(p, idx, means0, covs0, state_batched, t0)
    n, ts = len(idx), np.asarray(ts, float)
    Tstar = mem.blowup_times(t1, ts)
    Tstar = np.where(Tstar <= t1, Tstar, np.inf)
    blow = np.isfinite(Tstar)
    t_stop = np.full(n, float(t1))
    rows, lo, hi = mem.stop_times(Tstar, thr)
    if rows.size:
        m_hi, c_hi, lam_hi = mem.state(hi[:, None], rows)
        ok = (lam_hi[:, 0] > 0) & np.all(np.isfinite(c_hi.reshape(rows.size, -1)), axis=1)
        t_stop[rows] = np.where(ok, hi, lo)
    keep = ts[None, :] <= t_stop[:, None]
    tq = np.where(keep, ts[None, :], t0)
    means, covs, _ = mem.state(tq)
    means = np.where(keep[..., None], means, np.inf)
    covs = np.where(keep[..., None, None], covs, np.inf)
    m_end, c_end, _ = mem.state(t_stop[:, None])
    result = np.where(blow, diffrax.RESULTS.event_occurred._value,
                      diffrax.RESULTS.successful._value).astype(np.int32)
    false = np.zeros(n, bool)
    return {"ts": np.where(keep, ts[None, :], np.inf), "means": means, "covs": covs,
            "t_stop": t_stop, "tau": np.where(blow, Tstar - t_stop, np.inf),
            "mean_end": m_end[:, 0], "cov_end": c_end[:, 0], "result": result,
            "num_steps": np.zeros(n, np.int32), "event_nonfinite": false, "event_blowup": blow,
            "event_domain": false, "event_escape": false, "finite_ahead": ~false}
