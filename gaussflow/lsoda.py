r"""The last pass of a sweep: members that used up every diffrax budget, integrated by SciPy's
LSODA.

A sweep runs each member with an explicit solver (Tsit5), reruns the members that used up its
budget with an implicit one (diffrax's Kvaerno5), and, when requested, reruns those that still end
`"max_steps"` here. LSODA (`scipy.integrate.LSODA`, ODEPACK) switches between Adams and BDF
methods by stiffness and orders 1–12; the stiff members this pass exists for (one eigenvalue of
$\Sigma$ collapsing while another grows, linearised restoring rates ~ 1e7) take it about 2,000
steps, where Kvaerno5 stalls after 16,384.

The loop is gaussflow's: one `LSODA.step` at a time on the flow-map state $(\alpha, \Phi)$,
$\Sigma = \Phi \Sigma_0 \Phi^\top$ (the right-hand side the diffrax solvers use and its Jacobian
by `jax.jacfwd`, compiled once per field structure), the save times read from each step's dense output, and after each step the
same events as `gf.solve`'s (`gaussflow.stepping.growth_flags`: blow-up, escape; a non-finite
state; the field's domain), with the same budget of `max_steps` steps. Its raw outputs have the
keys of `gaussflow.integrate.integrate_closure`, so the sweep reads them as it reads diffrax's.
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
from .numpy_engine import StackedField, stacked_field
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


def _numpy_functions(sf: StackedField):
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
        with np.errstate(all="ignore"):
            S = cov_from_flow(Phi[None], cov0[None])
            dm, J = sf.closure(np.full((1, 1, 1), t), mean[None, :, None], S)
            finite = (np.all(np.isfinite(mean)) & np.all(np.isfinite(Phi))
                      & np.all(np.isfinite(dm)) & np.all(np.isfinite(J)))
            scale = np.maximum(np.trace(cov0), 1e-300)
            blowup, escaped, tau = growth_flags(J, S, scale, thr, t, t0, lead=1)
        return ~finite, blowup[0], escaped[0], False, tau[0]

    return rhs, flags, jac


def lsoda_member(static: StaticKey | StackedField, field_dyn: Any, mean0: np.ndarray, cov0: np.ndarray,
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
    d, n = mean0.shape[0], len(ts)
    if isinstance(static, StackedField):  # NumPy: one-member stacks, no compilation
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

    out_ts, means = np.full(n, np.inf), np.full((n, d), np.nan)
    covs = np.full((n, d, d), np.nan)

    def save(k, y):
        m, Phi = split(y)
        out_ts[k], means[k], covs[k] = ts[k], np.asarray(m), np.asarray(cov_from_flow(Phi, cov0))

    y0 = np.concatenate([mean0, np.eye(d).ravel()])
    k = 0
    while k < n and ts[k] <= t0:
        save(k, y0)
        k += 1
    solver = LSODA(fun, t0, y0, t1, rtol=rtol, atol=atol, jac=jacobian)
    steps, result, fl = 0, _SUCCESS, flags_at(t0, y0)
    event = False
    while solver.status == "running":
        if steps >= max_steps:
            result = _MAX_STEPS
            break
        solver.step()
        steps += 1
        if solver.status == "failed":
            result = _MAX_STEPS
            break
        dense = solver.dense_output()
        while k < n and ts[k] <= solver.t:
            save(k, dense(ts[k]))
            k += 1
        fl = flags_at(solver.t, solver.y)
        if any(bool(v) for v in fl[:4]):
            event, result = True, _EVENT
            break
    y_end = solver.y
    nonfinite, blowup, escaped, outside = (bool(v) for v in fl[:4])
    tau = float(fl[4])
    m_end, Phi_end = split(y_end)
    return {
        "ts": out_ts, "means": means, "covs": covs, "t_stop": np.float64(solver.t),
        "tau": np.float64(tau), "mean_end": np.asarray(m_end),
        "cov_end": np.asarray(cov_from_flow(Phi_end, cov0)), "result": np.int32(result),
        "num_steps": np.int64(steps), "finite_ahead": np.bool_(not nonfinite),
        "event_nonfinite": np.bool_(event and nonfinite),
        "event_blowup": np.bool_(event and not nonfinite and blowup),
        "event_domain": np.bool_(event and not nonfinite and not blowup and outside),
        "event_escape": np.bool_(event and not nonfinite and not blowup and not outside
                                 and escaped),
    }


def lsoda_members(field: Any, field_batched: bool, means0: np.ndarray, covs0: np.ndarray,
                  state_batched: bool, members: np.ndarray, times: tuple[float, float, float],
                  ts: np.ndarray, rtol: float, atol: float, max_steps: int
                  ) -> dict[str, np.ndarray]:
    """`lsoda_member` for the sweep members with indices `members`, stacked like a diffrax pass's
    raw outputs (with the field's NumPy form when it has one,
    `gaussflow.numpy_engine.stacked_field`). `times` is `(t0, t1, blowup threshold)`; `field` is the (batched when
    `field_batched`) field, `means0`/`covs0` the (batched when `state_batched`) initial states."""
    t0, t1, thr = times
    field_dyn, field_static = eqx.partition(field, eqx.is_array)
    static = StaticKey(field_static)
    sf = stacked_field(field, field_batched) if np.ndim(covs0) == 2 + state_batched else None
    ts = np.asarray(ts, dtype=np.float64)
    outs = []
    for i in members:
        if sf is not None:
            st, fd = sf.take(np.array([i])), None
        else:
            st = static
            fd = jax.tree_util.tree_map(lambda x: x[i], field_dyn) if field_batched else field_dyn
        m0, c0 = (means0[i], covs0[i]) if state_batched else (means0, covs0)
        outs.append(lsoda_member(st, fd, np.asarray(m0), np.asarray(c0), float(t0),
                                 float(t1), ts, rtol, atol, max_steps, float(thr)))
    return {key: np.stack([o[key] for o in outs]) for key in outs[0]}
