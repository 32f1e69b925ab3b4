r"""The stiff pass of a sweep: members integrated by SciPy's LSODA.

A sweep runs each member with an explicit solver (Tsit5); the members that use up its budget
run here — as the stiff pass of the NumPy engine, or as the last pass after the JAX queue's
implicit one (diffrax's Kvaerno5). LSODA (`scipy.integrate.LSODA`, ODEPACK) switches between
Adams and BDF methods by stiffness and orders 1–12; the stiff members this pass exists for (one
eigenvalue of $\Sigma$ collapsing while another grows, linearised restoring rates ~ 1e7) take it
about 1,000–3,000 steps, where Kvaerno5 stalls after 16,384.

The loop is gaussflow's: one `LSODA.step` at a time on the flow-map state $(\alpha, \Phi)$,
$\Sigma = \Phi \Sigma_0 \Phi^\top$, the save times read from each step's dense output, and
after each step the same events as `gf.solve`'s (`gaussflow.stepping.growth_flags`: blow-up,
escape; a non-finite state; the field's domain), with the same budget of `max_steps` steps. The
right-hand side is the one the diffrax solvers use: for a field with a NumPy form
(`gaussflow.numpy_engine.stacked_field`) the stacked NumPy programs, with a central-difference
Jacobian in one stacked call, and the members advanced in rounds of one step each so that their
events are tested in one stacked call per round; otherwise the JAX functions and `jax.jacfwd`,
compiled once per field structure, one member after another. Its raw outputs have the keys of
`gaussflow.integrate.integrate_closure`, so the sweep reads them as it reads diffrax's.
"""

from __future__ import annotations

import functools
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import LSODA

from .field import StaticKey, cov_from_flow
from .numpy_engine import StackedField, StackedSum, stacked_field, stacked_flags
from .stepping import growth_flags

__all__ = ["NAME", "lsoda_member", "lsoda_members"]

#: The solver name a member finished by this pass carries.
NAME = "lsoda"

_SUCCESS = int(diffrax.RESULTS.successful._value)
_EVENT = int(diffrax.RESULTS.event_occurred._value)
_MAX_STEPS = int(diffrax.RESULTS.max_steps_reached._value)


@functools.lru_cache(maxsize=16)
def _compiled(static: StaticKey):
    """`(rhs, flags)` of one member, jitted once per field structure."""

    @jax.jit
    def rhs(field_dyn, t, mean, Phi, cov0):
        field = eqx.combine(field_dyn, static.tree)
        return field._flow_rhs(t, mean, Phi, cov0)

    @jax.jit
    def flags(field_dyn, t, mean, Phi, cov0, t0, thr):
        field = eqx.combine(field_dyn, static.tree)
        S = cov_from_flow(Phi, cov0)
        dm, J = field._closure(t, mean, S)
        finite = (jnp.all(jnp.isfinite(mean)) & jnp.all(jnp.isfinite(Phi))
                  & jnp.all(jnp.isfinite(dm)) & jnp.all(jnp.isfinite(J)))
        scale = jnp.maximum(jnp.trace(cov0), 1e-300)
        blowup, escaped, tau = growth_flags(J, S, scale, thr, t, t0)
        return ~finite, blowup, escaped, ~field._domain_ok(t, mean, S), tau

    @jax.jit
    def jac(field_dyn, t, y, cov0):
        d = cov0.shape[0]

        def flat(y):
            dm, dPhi = rhs(field_dyn, t, y[:d], y[d:].reshape(d, d), cov0)
            return jnp.concatenate([dm.ravel(), dPhi.ravel()])

        return jax.jacfwd(flat)(y)

    return rhs, flags, jac


#: Relative step of the central differences of the NumPy Jacobian (about the cube root of the
#: float64 epsilon; the Jacobian only steers LSODA's Newton iterations, not its accuracy).
FD_STEP = 6e-6


def _numpy_functions(sf: StackedField | StackedSum):
    """`(rhs, flags, jac)` of a one-member `StackedField`, with the signatures of `_compiled`'s
    (the field argument unused); `jac` by central differences, every column in one stacked
    evaluation (the `2 n` perturbed states as one stack of members)."""

    def rhs(_, t, mean, Phi, cov0):
        dm, dPhi = sf.flow_rhs(np.full((1, 1, 1), t), mean[None, :, None], Phi[None], cov0[None])
        return dm[0, :, 0], dPhi[0]

    def jac(_, t, y, cov0):
        d, n = cov0.shape[0], y.shape[0]
        h = FD_STEP * np.maximum(np.abs(y), 1.0)
        ys = np.concatenate([y[None] + np.diag(h), y[None] - np.diag(h)])  # (2 n, n)
        with np.errstate(all="ignore"):
            dm, dPhi = sf.flow_rhs(np.full((2 * n, 1, 1), t), ys[:, :d, None],
                                   ys[:, d:].reshape(2 * n, d, d), cov0[None])
        f = np.concatenate([dm[:, :, 0], dPhi.reshape(2 * n, -1)], axis=1)
        return ((f[:n] - f[n:]) / (2 * h[:, None])).T

    def flags(_, t, mean, Phi, cov0, t0, thr):
        out = _flags5(sf, np.array([t]), mean[None], Phi[None], cov0[None], t0, thr)
        return tuple(v[0] for v in out)

    return rhs, flags, jac


def _flags5(sf, t, means, Phis, cov0s, t0, thr):
    """`numpy_engine.stacked_flags` of means `(M, d)` with the domain flag (`False`) added: the
    5-tuple of `_compiled`'s `flags`."""
    scale = np.maximum(np.trace(cov0s, axis1=-2, axis2=-1), 1e-300)
    nonfinite, blowup, escaped, tau = stacked_flags(sf, t, means[:, :, None], Phis, cov0s,
                                                    scale, t0, thr)
    return nonfinite, blowup, escaped, np.zeros_like(nonfinite), tau


class _Run:
    """One member's LSODA integration, advanced one step at a time: saves from each step's
    dense output, the step budget, and the raw outputs at the end (`raw`)."""

    def __init__(self, fun, jacobian, split, cov_of, mean0, t0, t1, ts, rtol, atol, max_steps):
        d, n = mean0.shape[0], len(ts)
        self.split, self.cov_of, self.ts, self.max_steps = split, cov_of, ts, max_steps
        self.out_ts, self.means = np.full(n, np.inf), np.full((n, d), np.nan)
        self.covs = np.full((n, d, d), np.nan)
        y0 = np.concatenate([mean0, np.eye(d).ravel()])
        self.k = 0
        while self.k < n and ts[self.k] <= t0:
            self._save(y0)
        self.solver = LSODA(fun, t0, y0, t1, rtol=rtol, atol=atol, jac=jacobian)
        self.steps, self.result, self.event = 0, _SUCCESS, False

    def _save(self, y):
        k = self.k
        m, Phi = self.split(y)
        self.out_ts[k], self.means[k], self.covs[k] = self.ts[k], np.asarray(m), self.cov_of(Phi)
        self.k += 1

    @property
    def running(self) -> bool:
        return self.solver.status == "running" and not self.event and self.result == _SUCCESS

    def advance(self) -> bool:
        """One LSODA step and its saves; `False` (result: max steps) when the budget is spent or
        LSODA fails."""
        if self.steps >= self.max_steps:
            self.result = _MAX_STEPS
            return False
        self.solver.step()
        self.steps += 1
        if self.solver.status == "failed":
            self.result = _MAX_STEPS
            return False
        dense, n = None, len(self.ts)
        while self.k < n and self.ts[self.k] <= self.solver.t:
            dense = self.solver.dense_output() if dense is None else dense
            self._save(dense(self.ts[self.k]))
        return True

    def raw(self, fl) -> dict[str, np.ndarray]:
        """The raw outputs, with `fl` the flags of the last state."""
        nonfinite, blowup, escaped, outside = (bool(v) for v in fl[:4])
        event = self.event
        m_end, Phi_end = self.split(self.solver.y)
        return {
            "ts": self.out_ts, "means": self.means, "covs": self.covs,
            "t_stop": np.float64(self.solver.t), "tau": np.float64(float(fl[4])),
            "mean_end": np.asarray(m_end), "cov_end": self.cov_of(Phi_end),
            "result": np.int32(_EVENT if event else self.result),
            "num_steps": np.int64(self.steps), "finite_ahead": np.bool_(not nonfinite),
            "event_nonfinite": np.bool_(event and nonfinite),
            "event_blowup": np.bool_(event and not nonfinite and blowup),
            "event_domain": np.bool_(event and not nonfinite and not blowup and outside),
            "event_escape": np.bool_(event and not nonfinite and not blowup and not outside
                                     and escaped),
        }


def lsoda_member(static: StaticKey | StackedField | StackedSum, field_dyn: Any, mean0: np.ndarray, cov0: np.ndarray,
                 t0: float, t1: float, ts: np.ndarray, rtol: float, atol: float, max_steps: int,
                 threshold: float) -> dict[str, np.ndarray]:
    r"""One member integrated by LSODA (module docstring): the raw outputs of
    `gaussflow.integrate.integrate_closure`.

    Parameters
    ----------
    static, field_dyn
        The member's field, split by `eqx.partition(field, eqx.is_array)` (`static` wrapped in
        `StaticKey`); or its NumPy form (`gaussflow.numpy_engine.StackedField` of one member,
        `field_dyn` unused), evaluated without compilation, the Jacobian by central differences
        in one stacked evaluation.
    mean0, cov0 : np.ndarray
        The initial state, `(d,)` and `(d, d)`.
    t0, t1 : float
        The time interval.
    ts : np.ndarray
        The save times (increasing, in $[t_0, t_1]$).
    rtol, atol : float
        LSODA's tolerances (the sweep's).
    max_steps : int
        The step budget.
    threshold : float
        The blow-up threshold on $\operatorname{tr}\Sigma / \operatorname{tr}\Sigma_0$.

    Returns
    -------
    dict of str to np.ndarray
        `ts`, `means`, `covs` (save times not reached: `inf` and NaN), `t_stop`, `tau`,
        `mean_end`, `cov_end`, `result` (diffrax's code: successful, event, or max steps — an
        LSODA failure is reported as max steps), `num_steps` and the event flags.
    """
    mean0 = np.asarray(mean0, dtype=np.float64)
    d = mean0.shape[0]
    if isinstance(static, (StackedField, StackedSum)):  # NumPy: one-member stacks
        rhs, flags, jac = _numpy_functions(static)
        cov0 = np.asarray(cov0, dtype=np.float64)

        def split(y):
            return y[:d].copy(), y[d:].reshape(d, d)

        def jacobian(t, y):
            return jac(None, t, np.asarray(y, dtype=np.float64), cov0)
    else:
        rhs, flags, jac = _compiled(static)
        cov0 = jnp.asarray(cov0, dtype=jnp.float64)

        def split(y):
            return jnp.asarray(y[:d]), jnp.asarray(y[d:].reshape(d, d))

        def jacobian(t, y):
            return np.asarray(jac(field_dyn, t, jnp.asarray(y), cov0))

    def fun(t, y):
        dm, dPhi = rhs(field_dyn, t, *split(y), cov0)
        return np.concatenate([np.asarray(dm).ravel(), np.asarray(dPhi).ravel()])

    def flags_at(t, y):
        return [np.asarray(v) for v in flags(field_dyn, t, *split(y), cov0, t0, threshold)]

    run = _Run(fun, jacobian, split, lambda Phi: np.asarray(cov_from_flow(Phi, cov0)), mean0,
               t0, t1, ts, rtol, atol, max_steps)
    fl = flags_at(t0, run.solver.y)
    while run.running and run.advance():
        fl = flags_at(run.solver.t, run.solver.y)
        run.event = any(bool(v) for v in fl[:4])
    return run.raw(fl)


def lsoda_members(field: Any, field_batched: bool, means0: np.ndarray, covs0: np.ndarray,
                  state_batched: bool, members: np.ndarray, times: tuple[float, float, float],
                  ts: np.ndarray, rtol: float, atol: float, max_steps: int,
                  stacked: StackedField | StackedSum | None = None) -> dict[str, np.ndarray]:
    """`lsoda_member` for the sweep members with indices `members`, stacked like a diffrax pass's
    raw outputs (with the field's NumPy form when it has one: `stacked` when the caller has it,
    else `gaussflow.numpy_engine.stacked_field`). `times` is `(t0, t1, blowup threshold)`;
    `field` is the (batched when `field_batched`) field, `means0`/`covs0` the (batched when
    `state_batched`) initial states."""
    t0, t1, thr = times
    field_dyn, field_static = eqx.partition(field, eqx.is_array)
    static = StaticKey(field_static)
    sf = stacked
    if sf is None and np.ndim(covs0) == 2 + state_batched:
        sf = stacked_field(field, field_batched)
    ts = np.asarray(ts, dtype=np.float64)
    if sf is not None:
        return _stacked_members(sf, means0, covs0, state_batched, np.asarray(members),
                                (float(t0), float(t1), float(thr)), ts, rtol, atol, max_steps)
    outs = []
    for i in members:
        fd = jax.tree_util.tree_map(lambda x: x[i], field_dyn) if field_batched else field_dyn
        m0, c0 = (means0[i], covs0[i]) if state_batched else (means0, covs0)
        outs.append(lsoda_member(static, fd, np.asarray(m0), np.asarray(c0), float(t0),
                                 float(t1), ts, rtol, atol, max_steps, float(thr)))
    return {key: np.stack([o[key] for o in outs]) for key in outs[0]}


def _stacked_members(sf, means0, covs0, state_batched, members, times, ts, rtol, atol, max_steps):
    """`lsoda_members` on the NumPy form: every member's LSODA advanced in rounds of one step
    each, the events of all of them tested in one stacked evaluation per round (each member's
    steps and decisions are those of `lsoda_member`)."""
    t0, t1, thr = times
    runs = []
    for i in members:
        one = sf.take(np.array([i]))
        _, _, jac = _numpy_functions(one)
        m0, c0 = (means0[i], covs0[i]) if state_batched else (means0, covs0)
        m0, c0 = np.asarray(m0, dtype=np.float64), np.asarray(c0, dtype=np.float64)
        d = m0.shape[0]

        def fun(t, y, f=one.flow_rhs, c0s=c0[None], d=d):
            dm, dPhi = f(t, y[:d].reshape(1, d, 1), y[d:].reshape(1, d, d), c0s)
            return np.concatenate([dm.reshape(-1), dPhi.reshape(-1)])

        def jacobian(t, y, jac=jac, c0=c0):
            return jac(None, t, np.asarray(y, dtype=np.float64), c0)

        def split(y, d=d):
            return y[:d].copy(), y[d:].reshape(d, d)

        runs.append(_Run(fun, jacobian, split, lambda Phi, c0=c0: cov_from_flow(Phi, c0), m0,
                         t0, t1, ts, rtol, atol, max_steps))
    d = runs[0].split(runs[0].solver.y)[0].shape[0]
    cov0s = np.stack([np.asarray(covs0[i] if state_batched else covs0) for i in members])

    def flags_of(idx):
        ys = np.stack([runs[j].solver.y for j in idx])
        t = np.array([runs[j].solver.t for j in idx])
        return _flags5(sf.take(members[idx]), t, ys[:, :d], ys[:, d:].reshape(-1, d, d),
                             cov0s[idx], t0, thr)

    fls = [None] * len(runs)
    idx = np.arange(len(runs))
    first = flags_of(idx)
    for j in idx:
        fls[j] = [v[j] for v in first]
    active = [j for j in idx if runs[j].running]
    while active:
        stepped = np.array([j for j in active if runs[j].advance()], dtype=int)
        if stepped.size:
            got = flags_of(stepped)
            for r, j in enumerate(stepped):
                fls[j] = [v[r] for v in got]
                runs[j].event = any(bool(v[r]) for v in got[:4])
        active = [j for j in stepped if runs[j].running]
    outs = [runs[j].raw(fls[j]) for j in idx]
    return {key: np.stack([o[key] for o in outs]) for key in outs[0]}
