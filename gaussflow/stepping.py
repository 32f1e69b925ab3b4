r"""Step control and stopping rules shared by `gf.solve` (`gaussflow.integrate`) and the sweep's
work queue (`gaussflow.queue`): the solvers by name, the first step from the problem's own time
scale, a PID controller that rejects non-finite trial steps, and the growth tests behind the
statuses `"blowup"` and `"escaped"`.
"""

from __future__ import annotations

from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

#: The solvers `resolve_solver` knows by name.
SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "heun": diffrax.Heun,
    "bosh3": diffrax.Bosh3,
    "kvaerno5": diffrax.Kvaerno5,
}

#: $\tau / (t - t_0)$ below which a trace above the threshold counts as finite-time blow-up.
BLOWUP_TAU_RATIO = 1e-3

#: A run whose $\operatorname{tr}\Sigma / \operatorname{tr}\Sigma_0$ passes
#: `ESCAPE_FACTOR * blowup_threshold` without the blow-up signature stops with status
#: `"escaped"` (exponential growth).
ESCAPE_FACTOR = 10.0

#: First step $dt_0 = \min(t_1 - t_0, \mathrm{FIRST\_STEP} / \mathrm{rate})$ (see `first_step`).
FIRST_STEP = 1e-2


def _xp(*arrays: Any) -> Any:
    """NumPy for NumPy arrays (the sweep's NumPy engine), else `jax.numpy`."""
    return np if all(isinstance(a, np.ndarray) for a in arrays) else jnp


def _per_member(x: Any, lead: int) -> Any:
    """Sum of `x` over every axis after the first `lead` (the member axes)."""
    return x.reshape(x.shape[:lead] + (-1,)).sum(-1)


def trace_total(S: jax.Array, lead: int = 0) -> jax.Array:
    """The sum of the traces of `S` `(..., d, d)` (one Gaussian, or all position blocks); with
    `lead` leading member axes, one sum per member."""
    return _per_member(_xp(S).trace(S, axis1=-2, axis2=-1), lead)


def growth_flags(J: jax.Array, S: jax.Array, scale: jax.Array, threshold: jax.Array,
                 t: jax.Array, t0: jax.Array, lead: int = 0
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""`(blowup, escaped, tau)` of a state with covariance `S` and closure matrix `J`.

    With $f = \operatorname{tr}\Sigma / s$ ($s$ = `scale` $= \operatorname{tr}\Sigma_0$),
    $f' = 2 \operatorname{tr}(J \Sigma) / s$ and $\tau = f / f'$:
    blow-up when $f >$ `threshold`, $f' > 0$ and $\tau <$ `BLOWUP_TAU_RATIO` $(t - t_0)$;
    escape when $f >$ `ESCAPE_FACTOR * threshold` otherwise. JAX or NumPy arrays; with `lead`
    leading member axes (NumPy stacks), one result per member.
    """
    xp = _xp(J, S)
    f = trace_total(S, lead) / scale
    fp = 2.0 * _per_member(J * xp.swapaxes(S, -1, -2), lead) / scale
    tau = f / xp.where(fp > 0, fp, xp.inf)
    blowup = (f > threshold) & (fp > 0) & (tau < BLOWUP_TAU_RATIO * (t - t0))
    escaped = ~blowup & (f > ESCAPE_FACTOR * threshold)
    return blowup, escaped, tau


def end_clip_floor(s1: float) -> float:
    """diffrax's end-time clipping threshold, 100 ULPs below `s1`: a next step ending above it
    is clipped to end at `s1` (the work queue and the NumPy engine take diffrax's decision)."""
    floor = float(s1)
    for _ in range(100):
        floor = float(np.nextafter(floor, -np.inf))
    return floor


def resolve_solver(solver: diffrax.AbstractSolver | str | None) -> diffrax.AbstractSolver:
    """A diffrax solver from `None` (Tsit5), a name in `SOLVERS` or a solver instance.

    Raises `ValueError` for an unknown name and `TypeError` for anything else.
    """
    if solver is None:
        return diffrax.Tsit5()
    if isinstance(solver, str):
        key = solver.lower()
        if key not in SOLVERS:
            raise ValueError(f"solver must be a diffrax solver or one of {sorted(SOLVERS)}, "
                             f"got {solver!r}")
        return SOLVERS[key]()
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    raise TypeError(f"solver must be a diffrax solver or a name, got {type(solver).__name__}")


class FiniteErrorPID(diffrax.PIDController):
    """diffrax's `PIDController`, except that a trial step whose candidate state or error
    estimate is not finite (the step crossed into a region where the right-hand side is NaN, e.g.
    past a blow-up) counts as an infinite error: the step is rejected and the next one is
    `factormin` (0.2) times shorter. (The stock controller turns a NaN error into a NaN step
    size, after which every step is rejected until `max_steps`.)"""

    def adapt_step_size(self, t0: Any, t1: Any, y0: Any, y1_candidate: Any, args: Any,
                        y_error: Any, error_order: Any, controller_state: Any) -> Any:
        """diffrax's rule, with a non-finite candidate or error estimate as an infinite error."""
        leaves = jax.tree_util.tree_leaves((y1_candidate, y_error))
        bad = jnp.any(jnp.stack([~jnp.all(jnp.isfinite(a)) for a in leaves]))
        y_error = jax.tree_util.tree_map(lambda e: jnp.where(bad, jnp.inf, e), y_error)
        y1_candidate = jax.tree_util.tree_map(lambda a, b: jnp.where(bad, a, b), y0, y1_candidate)
        return super().adapt_step_size(t0, t1, y0, y1_candidate, args, y_error, error_order,
                                       controller_state)


def first_step(dm: jax.Array, J: jax.Array, mean: jax.Array, S: jax.Array,
               span: jax.Array, lead: int = 0) -> jax.Array:
    r"""The first step from the problem's own time scale: `min(span, FIRST_STEP / rate)`.

    $$\mathrm{rate} = \frac{|d \operatorname{tr}\Sigma/dt|}{\operatorname{tr}\Sigma} + \|J\|_F
    + \frac{|d\alpha/dt|}{|\alpha| + (\operatorname{tr}\Sigma)^{1/2}}$$
    at $t_0$ ($d\Sigma/dt = J\Sigma + \Sigma J^\top$; for position blocks the largest block
    rate, so equal blocks start like one Gaussian). Every term is an inverse time of the closure
    at $t_0$, so a huge score scale ($\beta$) gives a proportionally small first step, not one
    that lands past a blow-up. `span` if the rate is 0 or not finite (a non-finite right-hand
    side is reported by the event, not here). JAX or NumPy arrays; with `lead` leading member
    axes (NumPy stacks of `(d, 1)` means), one step per member.
    """
    xp = _xp(dm, J, mean, S)
    d, lead_shape = S.shape[-1], S.shape[:lead]
    dm, mean = dm.reshape(lead_shape + (-1, d)), mean.reshape(lead_shape + (-1, d))
    J, S = J.reshape(lead_shape + (-1, d, d)), S.reshape(lead_shape + (-1, d, d))
    trS = xp.trace(S, axis1=-2, axis2=-1)
    growth = xp.abs(2.0 * xp.sum(J * xp.swapaxes(S, -1, -2), axis=(-2, -1)))
    growth = growth / xp.maximum(trS, 1e-300)
    drift = xp.linalg.norm(dm, axis=-1) / (xp.linalg.norm(mean, axis=-1)
                                           + xp.sqrt(xp.maximum(trS, 0.0)) + 1e-300)
    rate = xp.max(growth + xp.sqrt(xp.sum(J * J, axis=(-2, -1))) + drift, axis=-1)
    ok = xp.isfinite(rate) & (rate > 0)
    dt0 = xp.minimum(span, FIRST_STEP / xp.where(ok, rate, 1.0))
    dt0 = xp.where(ok, dt0, span)
    return dt0 if xp is np else jax.lax.stop_gradient(dt0)
