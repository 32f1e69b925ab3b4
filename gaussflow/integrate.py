r"""Integrate a field's Gaussian closure with diffrax.

**State.** The covariance is integrated through its flow map:
$\Sigma(t) = \Phi(t) \Sigma_0 \Phi(t)^T$ with $d\Phi/dt = J(t) \Phi$, $\Phi(0) = I$, where $J$
is the closure matrix of the field ($d\Sigma/dt = J \Sigma + \Sigma J^T$). So $\Sigma(t)$ is
symmetric positive semi-definite by construction and keeps the rank of $\Sigma_0$ exactly (as
long as $\Phi$ is invertible); the mean is integrated directly.

**Steps.** The first step is $\min(t_1 - t_0, 0.01 / \mathrm{rate})$ with rate the closure's own
inverse time scale at $t_0$ (`first_step`, `gaussflow.stepping`), so a huge score scale does not
make the first trial step land past a blow-up; a trial step that produces a non-finite state or
error estimate is rejected and the step shrunk by 5 (`FiniteErrorPID`).

**Statuses.** `gf.solve` never raises on a numerical event; it returns the trajectory up to the
stopping time `t_stop` with `status`:

- `"completed"`: reached `t1`; every saved value is finite.
- `"blowup"`: finite-time blow-up. Detected when
  $f = \operatorname{tr}\Sigma / \operatorname{tr}\Sigma_0$ exceeds `blowup_threshold`
  (default `1e8`) while $\tau = f / (df/dt)$ (the time left to the singularity of a
  $1/(T^* - t)$ growth) is below $10^{-3} (t - t_0)$; exponential growth from $t_0$ does not
  satisfy the latter (there $\tau (t - t_0)^{-1}$ stays near $1 / \log f$), but one that sets
  in late and fast can (rate $1/\tau > 10^3 / (t - t_0)$: in the regime maps one weight draw,
  growing at rate 1.5 from $t \approx 950$ under L2, is reported `"blowup"` for L2 and
  Sinkhorn, whose closures provably cannot blow up there; README, "Regime maps";
  `gaussflow.theory.classify` reads the saved path and calls such a run `growth`).
  `blowup_time` is $t_{\mathrm{stop}} + \tau$, accurate to $O(1/f)$ relative.
- `"escaped"`: exponential (not finite-time) growth past `ESCAPE_FACTOR * blowup_threshold`
  (`1e9` by default): $\operatorname{tr}\Sigma$ grew that much without the blow-up signature,
  and the run stops there, at `t_stop`. Beyond such factors the covariance's condition number
  leaves too few significant digits in its small directions for error control (growing L2 and
  Sinkhorn flows then crawl until `max_steps`, implicit solvers included); the growth itself is
  the result (`gf.theory.classify` calls it `growth`).
- `"max_steps"`: the solver used `max_steps` steps; `t_stop` is the time reached.
- `"nonfinite"`: the state or its right-hand side became NaN/inf (also when the solver stalls at
  the edge of a region where the right-hand side is NaN: every step across it is rejected).
- `"not_integrable"`: an approximate closure's integrals stopped existing (`_domain_ok`).

**Closed form.** Where the field's derivation carries a closed form valid for the given weights
and state (softmax-type attention with $W_O V = v I$), `solve` evaluates it instead of
integrating (`closed_form="auto"`; `gaussflow.closed_form`): same `Trajectory`,
`method == "closed_form"`, `num_steps == 0`, `blowup_time` the exact $T^*$.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field as dc_field
from typing import TYPE_CHECKING, Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from . import cache
from . import closed_form as _cf_mod
from ._checks import as_scalar, check_times, is_concrete, positive_int
from .gaussian import Gaussian
from .field import Field, cov_from_flow as _cov_from_flow
from .stepping import FiniteErrorPID, first_step, growth_flags, resolve_solver, trace_total

if TYPE_CHECKING:
    from jax.typing import ArrayLike

    from .gaussian import PositionalGaussians

#: The statuses of a `Trajectory` (`"traced"` besides, under a JAX transformation).
STATUSES = ("completed", "blowup", "escaped", "max_steps", "nonfinite", "not_integrable")

class TimeProgressMeter(diffrax.TqdmProgressMeter):
    """diffrax's tqdm meter showing the share of $[t_0, t_1]$ done, the elapsed and the
    estimated remaining time (no rate: a rate in percent per second reads as nonsense)."""

    @staticmethod
    def _init_bar() -> Any:
        return tqdm.tqdm(total=100, bar_format="solve {percentage:5.1f}% of [t0, t1] |{bar}| "
                                               "{elapsed} elapsed, {remaining} left")


def _closure_at(field, t, mean, S):
    r"""$(d\alpha/dt, J)$ of the field's closure at time `t`: the one place this module calls it."""
    return field._closure(t, mean, S)


@contextlib.contextmanager
def _checks_without_callbacks() -> Iterator[None]:
    """Trace equinox's runtime checks (`eqx.error_if`) in `"nan"` mode, not `"raise"`.

    In `"raise"` mode every check is a host callback, and JAX does not store executables with
    host callbacks in its persistent compilation cache, so the solver would be recompiled in every
    process. The checks diffrax makes here (save times increasing and inside $[t_0, t_1]$) are
    made on the host before any tracing (`gaussflow._checks.check_times`), so they cannot
    fire; any other failed check turns the state into NaN, reported as status `"nonfinite"`.
    A mode the user chose through `EQX_ON_ERROR` (anything but the default) is left alone.

    Equinox traces each check once per shape and message and reuses it, whatever the mode then in
    force; the check's trace cache is cleared on entry and on exit, so this trace does not reuse a
    `"raise"` check and later code (a user's own diffrax call) does not reuse a `"nan"` one.
    """
    errors = getattr(eqx, "_errors", None)
    if getattr(errors, "EQX_ON_ERROR", None) != "raise":
        yield
        return
    cached = getattr(getattr(errors, "branched_error_if_impl_jit", None), "_cached", None)
    clear = getattr(cached, "clear_cache", lambda: None)
    clear()
    errors.EQX_ON_ERROR = "nan"
    try:
        yield
    finally:
        errors.EQX_ON_ERROR = "raise"
        clear()


#: Time variables the solver may step in (`solve(..., time_scale=)`).
TIME_SCALES = ("linear", "log")


@eqx.filter_jit
def integrate_closure(field: Field, mean0: jax.Array, cov0: jax.Array, t0: jax.Array,
                      t1: jax.Array, ts: jax.Array, solver: diffrax.AbstractSolver, rtol: float,
                      atol: float, max_steps: int, threshold: jax.Array, progress_meter: Any,
                      adjoint: Any, time_scale: str = "linear") -> dict[str, jax.Array]:
    r"""Jitted core: returns a dict of arrays (shapes fixed by `ts`).

    The arguments are those of `solve` after checking (`threshold` is `blowup_threshold` as an
    array; `progress_meter` and `adjoint` are diffrax's). The keys of the result are the raw
    outputs `status_of` and `trajectory_of` read: `ts`, `means`, `covs`, `t_stop`, `tau`,
    `mean_end`, `cov_end`, `result`, `num_steps` and the event flags.

    `time_scale="log"`: the solver steps in $s = \log(1 + t - t_0)$
    ($dy/ds = (1 + t - t_0)\, dy/dt$), where power-law approaches $t^{-p}$ become exponentials
    $e^{-p s}$.
    """
    scale = jnp.maximum(trace_total(cov0), 1e-300)
    log = time_scale == "log"

    def to_t(s):
        return t0 + jnp.expm1(s) if log else s

    def to_s(t):
        return jnp.log1p(t - t0) if log else t

    def vf_t(t, y):
        mean, Phi = y
        return field._flow_rhs(t, mean, Phi, cov0)

    def vf(s, y, args):
        dm, dPhi = vf_t(to_t(s), y)
        if log:
            w = jnp.exp(s)  # dt/ds
            return w * dm, w * dPhi
        return dm, dPhi

    def flags(t, y):
        """(nonfinite, blowup, escaped, outside domain, tau) at state y: one closure evaluation."""
        mean, Phi = y
        S = _cov_from_flow(Phi, cov0)
        dm, J = _closure_at(field, t, mean, S)
        finite = (jnp.all(jnp.isfinite(mean)) & jnp.all(jnp.isfinite(Phi))
                  & jnp.all(jnp.isfinite(dm)) & jnp.all(jnp.isfinite(J)))
        blowup, escaped, tau = growth_flags(J, S, scale, threshold, t, t0)
        outside = ~field._domain_ok(t, mean, S)
        return ~finite, blowup, escaped, outside, tau

    def cond(s, y, args, **kw):
        nonfinite, blowup, escaped, outside, _ = flags(to_t(s), y)
        return nonfinite | blowup | escaped | outside

    Phi0 = jnp.broadcast_to(jnp.eye(cov0.shape[-1]), cov0.shape)
    s1 = to_s(t1)
    dt0 = first_step(*_closure_at(field, t0, mean0, cov0), mean0, cov0, s1 - to_s(t0))
    with _checks_without_callbacks():
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf), solver, to_s(t0), s1, dt0, (mean0, Phi0),
            saveat=diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=to_s(ts)),
                                        diffrax.SubSaveAt(t1=True)]),
            stepsize_controller=FiniteErrorPID(rtol=rtol, atol=atol),
            event=diffrax.Event(cond),
            max_steps=max_steps, throw=False, progress_meter=progress_meter, adjoint=adjoint,
        )
    (means, Phis), (mean_end, Phi_end) = sol.ys
    covs = _cov_from_flow(Phis, cov0)
    cov_end = _cov_from_flow(Phi_end[-1], cov0)
    s_stop = sol.ts[1][-1]
    t_stop = jnp.where(s_stop >= s1, t1, to_t(s_stop)) if log else s_stop
    saved = sol.ts[0]
    saved = jnp.where(jnp.isfinite(saved), ts, saved) if log else saved  # exact save times
    y_end = (mean_end[-1], Phi_end[-1])
    nonfinite, blowup, escaped, outside, tau = flags(t_stop, y_end)
    # Probe just ahead of the last state: a field that turns NaN makes the adaptive solver crawl
    # up to the edge (every step that crosses it is rejected) until max_steps.
    h = 1e-6 * (s1 - to_s(t0))
    ahead = jax.tree_util.tree_map(lambda a, b: a + h * b, y_end, vf(s_stop, y_end, None))
    nonfinite_ahead = flags(to_t(s_stop + h), ahead)[0]
    event = sol.result == diffrax.RESULTS.event_occurred
    return {
        "ts": saved, "means": means, "covs": covs, "t_stop": t_stop, "tau": tau,
        "mean_end": mean_end[-1], "cov_end": cov_end,
        "result": sol.result._value, "num_steps": sol.stats["num_steps"],
        "event_nonfinite": event & nonfinite, "event_blowup": event & ~nonfinite & blowup,
        "event_domain": event & ~nonfinite & ~blowup & outside, "finite_ahead": ~nonfinite_ahead,
        "event_escape": event & ~nonfinite & ~blowup & ~outside & escaped,
    }


def status_of(out: Mapping[str, Any]) -> str:
    """The status (one of `STATUSES`) of one run from its raw outputs (`integrate_closure`):
    the event flags first, then diffrax's result code."""
    return str(statuses_of(out)[()])


def statuses_of(out: Mapping[str, Any]) -> np.ndarray:
    """`status_of` for raw outputs with any leading shape (a sweep's members): an array of the
    status strings, by the same rules."""
    res = np.asarray(out["result"])
    flag = lambda key: np.asarray(out.get(key, False), dtype=bool)  # noqa: E731
    max_steps = res == diffrax.RESULTS.max_steps_reached._value
    failed = ~np.isin(res, (diffrax.RESULTS.successful._value,
                            diffrax.RESULTS.event_occurred._value))
    conditions = [flag("event_nonfinite"), flag("event_blowup"), flag("event_domain"),
                  flag("event_escape"), max_steps & flag("finite_ahead"), failed]
    names = ["nonfinite", "blowup", "not_integrable", "escaped", "max_steps", "nonfinite"]
    return np.select([np.broadcast_to(c, res.shape) for c in conditions], names,
                     default="completed")


@dataclass(frozen=True)
class Trajectory:
    """A solved moment trajectory.

    `ts` `(n,)`, `means` `(n, d)`, `covs` `(n, d, d)` as NumPy arrays: the requested save times
    reached before `t_stop`, followed by the state at `t_stop` when the solve stopped early.
    `status` is one of `STATUSES` (or `"traced"` under a JAX transformation, with traced arrays);
    `blowup_time` the estimated blow-up time (`None` unless `status == "blowup"`); `final` the
    state at `t_stop`. `method`: `"integrate"` (diffrax) or `"closed_form"` (evaluated,
    `gaussflow.closed_form`; `num_steps == 0` and `blowup_time` exact).
    """

    ts: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    status: str
    t_stop: float
    blowup_time: float | None = None
    num_steps: int = 0
    field_name: str = ""
    extra: dict = dc_field(default_factory=dict, repr=False)
    method: str = "integrate"

    @property
    def final(self) -> Gaussian | PositionalGaussians:
        """The last state, a `gaussflow.Gaussian` (covariance symmetrised); a
        `gaussflow.PositionalGaussians` for a positional trajectory."""
        if self.means.ndim == 3 and "positional" in self.extra:
            return self.extra["positional"](self.means[-1], self.covs[-1])
        return Gaussian(self.means[-1], self.covs[-1])

    def __repr__(self) -> str:
        bt = "" if self.blowup_time is None else f", blowup_time={self.blowup_time:.8g}"
        return (f"Trajectory({self.field_name or 'field'}, status={self.status!r}, "
                f"t_stop={self.t_stop:.6g}{bt}, n_saved={len(self.ts)}, "
                f"d={self.means.shape[-1]}, steps={self.num_steps}, method={self.method!r})")

    def _repr_html_(self) -> str:
        """A table (status, time range, final state; summarised for large $d$) and a small
        figure of the covariance's eigenvalues (`gaussflow.display`)."""
        from .display import trajectory_html

        return trajectory_html(self)

    def _repr_png_(self) -> bytes | None:
        """The small figure of `_repr_html_` as PNG bytes (`None` for a traced trajectory)."""
        from .display import trajectory_png

        return trajectory_png(self)


def check_solver_options(rtol: float, atol: float, blowup_threshold: float,
                         max_steps: int) -> tuple[float, float, float]:
    """Validate the options shared by `solve` and `gaussflow.sweep`; returns
    `(rtol, atol, blowup_threshold)` as floats.

    Raises `ValueError` for a non-positive tolerance, a threshold not above 1 or a `max_steps`
    that is not a positive integer.
    """
    rtol = float(as_scalar("rtol", rtol, positive=True))
    atol = float(as_scalar("atol", atol, positive=True))
    thr = float(as_scalar("blowup_threshold", blowup_threshold, positive=True))
    if thr <= 1:
        raise ValueError("blowup_threshold must be > 1 (a growth factor of tr Sigma)")
    positive_int("max_steps", max_steps)
    return rtol, atol, thr


def check_field_state(field: Field, g0: Gaussian | PositionalGaussians) -> None:
    """Check that `field` is a gaussflow field and `g0` a state it accepts (`TypeError` or
    `ValueError` otherwise)."""
    if not isinstance(field, Field):
        raise TypeError(f"field must be a gaussflow field (e.g. gf.Softmax(Q, K, V)), got "
                        f"{type(field).__name__}")
    check = getattr(field, "_check_state", None)
    check(g0, "g0")


def solve(field: Field, g0: Gaussian | PositionalGaussians, t1: float,
          ts: ArrayLike | None = None, *, t0: float = 0.0, rtol: float = 1e-8,
          atol: float = 1e-10, solver: diffrax.AbstractSolver | str | None = None,
          max_steps: int = 16384, blowup_threshold: float = 1e8, progress: bool = False,
          adjoint: Any = None, time_scale: str = "linear",
          closed_form: str = "auto") -> Trajectory:
    r"""Integrate the Gaussian closure of `field` from `g0` over $[t_0, t_1]$.

    Parameters
    ----------
    field : Field
        A gaussflow field (`gf.Softmax`, sums, ...), or a `gf.Layers` schedule (integrated
        layer by layer, no step across a switch; `t1 - t0` at most its total duration).
    g0 : Gaussian or PositionalGaussians
        The initial `gaussflow.Gaussian` (or `gaussflow.PositionalGaussians` for a positional
        field).
    t1 : float
        Final time ($> t_0$).
    ts : array_like, optional
        Save times (increasing, in $[t_0, t_1]$); default 101 points.
    t0 : float
        Initial time.
    rtol, atol : float
        Tolerances of diffrax's `PIDController`.
    solver : diffrax.AbstractSolver or str, optional
        A diffrax solver or a name (`"tsit5"` default, `"dopri5"`, `"dopri8"`, `"kvaerno5"`,
        ...).
    max_steps : int
        Step budget; exceeding it gives `status == "max_steps"`.
    blowup_threshold : float
        Growth factor of $\operatorname{tr}\Sigma$ at which blow-up is tested (see the module
        docstring).
    progress : bool
        Show diffrax's tqdm progress meter.
    adjoint : diffrax adjoint, optional
        A diffrax adjoint (default recursive checkpointing; `jax.grad` flows through `solve`
        for completed runs: under a JAX transformation the trajectory holds traced arrays at
        every requested time and `status == "traced"`).
    time_scale : str
        `"linear"` (steps in $t$) or `"log"` (steps in $s = \log(1 + t - t_0)$: fewer steps
        for long runs towards a limit approached like a power of $1/t$).
    closed_form : str
        `"auto"` (default): evaluate the closed form instead of integrating when the field's
        derivation carries one valid for these weights and this state (softmax-type attention
        with $W_O V = v I$; the hypotheses and the evaluation are in `gaussflow.closed_form`);
        `"never"`: always integrate; `"always"`: the closed form or a `ValueError` naming the
        hypothesis that fails. `rtol`, `atol`, `solver`, `max_steps`, `time_scale` do not apply
        to it; `blowup_threshold` does (the stop).

    Returns
    -------
    Trajectory
        `method` says which path was taken. Never raises on numerical events (see the module
        docstring).

    Raises
    ------
    TypeError, ValueError
        For invalid arguments (a `t1` past the end of a `gf.Layers` schedule included), and
        for `closed_form="always"` when the closed form does not apply.
    """
    check_field_state(field, g0)
    t0, t1, ts_arr = check_times(t0, t1, ts)
    rtol, atol, thr = check_solver_options(rtol, atol, blowup_threshold, max_steps)
    mode = _cf_mod.check_mode(closed_form)
    if getattr(field, "time_dependent", False):
        end = t0 + field.total
        if t1 > end * (1 + 1e-12) + 1e-12:
            raise ValueError(f"t1 = {t1} is past the end of the schedule (t0 + {field.total} = "
                             f"{end}); lengthen the last layer or pass a smaller t1")
    if time_scale not in TIME_SCALES:
        raise ValueError(f"time_scale must be one of {TIME_SCALES}, got {time_scale!r}")
    solver = resolve_solver(solver)
    if ts_arr is None:
        ts_arr = np.linspace(t0, t1, 101)
    meter = TimeProgressMeter() if progress else diffrax.NoProgressMeter()
    adjoint = diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
    # thr as an array: a traced argument, so per-layer thresholds share one compilation
    run = (solver, rtol, atol, int(max_steps), jnp.asarray(thr), meter, adjoint)
    cache.ensure_enabled()  # the persistent compilation cache, once per process
    if getattr(field, "time_dependent", False):  # gf.Layers: one integration per layer
        if mode == "always":
            raise ValueError("closed_form='always': a gf.Layers schedule is integrated layer by "
                             "layer; pass closed_form='auto'")
        return _solve_schedule(field, g0, t0, t1, ts_arr, run, time_scale)
    positional = getattr(g0, "positional", False)  # gf.PositionalGaussians: (B, d), (B, d, d)
    mean0, cov0 = (g0.means, g0.covs) if positional else (g0.mean, g0.cov)
    if mode != "never":
        plan = (_cf_mod.plan(field, False, mean0, cov0, False, 1, t0, t1) if not positional else
                _cf_mod.Plan(np.zeros(1, bool), ("g0 is positional (blocks of tokens)",)))
        if plan.eligible[0]:
            out = _cf_mod.evaluate(plan, [0], mean0, cov0, False, ts_arr, t0, t1, thr)
            tr = trajectory_of({k: v[0] for k, v in out.items()}, ts_arr, field, t0)
            return dataclasses.replace(tr, method="closed_form")
        if mode == "always":
            raise ValueError(f"closed_form='always': {plan.reasons[0]}; pass closed_form='auto' "
                             "to integrate instead")
    if is_concrete(cov0) and not bool(field._domain_ok(jnp.asarray(t0), mean0, cov0)):
        # Outside the closure's domain already at t0 (e.g. unnormalised weights whose integrals
        # diverge): the documented status, found before integrating.
        tr = Trajectory(ts=np.asarray([t0]), means=np.asarray(mean0)[None],
                        covs=np.asarray(cov0)[None], status="not_integrable", t_stop=float(t0),
                        field_name=getattr(field, "name", type(field).__name__))
        if positional:
            tr.extra["positional"] = type(g0)
        return tr
    out = integrate_closure(field, mean0, cov0, jnp.asarray(t0), jnp.asarray(t1),
                     jnp.asarray(ts_arr), *run, time_scale=time_scale)
    if not is_concrete(out["cov_end"]):  # under jax.grad / jit / vmap
        return _traced_trajectory(out, field)
    tr = trajectory_of(out, ts_arr, field, t0)
    if positional:
        tr.extra["positional"] = type(g0)
    return tr


def _traced_trajectory(out, field) -> Trajectory:
    """Trajectory of traced arrays (inside `jax.grad` etc.): every requested time is kept and
    `status` is `"traced"` (events cannot be read under tracing; check a concrete run)."""
    return Trajectory(ts=out["ts"], means=out["means"], covs=out["covs"], status="traced",
                      t_stop=out["t_stop"], num_steps=out["num_steps"],
                      field_name=getattr(field, "name", type(field).__name__))


def _solve_schedule(layers, g0, t0, t1, ts_arr, run, time_scale="linear") -> Trajectory:
    r"""Integrate a `gf.Layers` schedule layer by layer: each layer starts from the state at its
    switch time, so no step crosses a switch. Stops at the first layer that does not complete.
    The blow-up threshold stays relative to $\operatorname{tr}\Sigma_0$ of `g0`."""
    ends = t0 + layers.switch_times
    solver, rtol, atol, max_steps, thr, meter, adjoint = run
    scale0, thr = float(np.trace(np.asarray(g0.cov))), float(thr)
    mean, cov, a = g0.mean, g0.cov, t0
    ts_all, means, covs, steps, tr = [], [], [], 0, None
    for i, (f, b) in enumerate(zip(layers.fields, ends)):
        last = b >= t1 or i == len(ends) - 1
        b = min(float(b), t1)
        lo = ts_arr >= a if i == 0 else ts_arr > a
        seg = ts_arr[lo & (ts_arr <= b)]
        added = len(seg) == 0 or seg[-1] < b
        seg = np.append(seg, b) if added else seg
        thr_i = thr * scale0 / max(float(np.trace(np.asarray(cov))), 1e-300)
        out = integrate_closure(f, mean, cov, jnp.asarray(a), jnp.asarray(b), jnp.asarray(seg),
                         solver, rtol, atol, max_steps, jnp.asarray(max(thr_i, 1.0 + 1e-12)), meter,
                         adjoint, time_scale=time_scale)
        tr = trajectory_of(out, seg, f, a)
        steps += tr.num_steps
        n = len(tr.ts) - (1 if added and not last and tr.status == "completed" else 0)
        ts_all.append(tr.ts[:n])
        means.append(tr.means[:n])
        covs.append(tr.covs[:n])
        if tr.status != "completed" or last:
            break
        mean, cov, a = jnp.asarray(tr.means[-1]), jnp.asarray(tr.covs[-1]), b
    return Trajectory(ts=np.concatenate(ts_all), means=np.concatenate(means),
                      covs=np.concatenate(covs), status=tr.status, t_stop=tr.t_stop,
                      blowup_time=tr.blowup_time, num_steps=steps, field_name=layers.name)


def trajectory_of(out: Mapping[str, Any], ts_arr: np.ndarray, field: Field,
                  t0: float) -> Trajectory:
    """The `Trajectory` of one run from its raw outputs (`integrate_closure`).

    Keeps the requested save times `ts_arr` reached before `t_stop` with finite states, appends
    the state at `t_stop` when it is finite and past the last kept time, reads the status
    (`status_of`; `"completed"` becomes `"nonfinite"` when a saved value is not finite) and, for
    `"blowup"`, `blowup_time = t_stop + tau`. `t0` is unused (kept for the callers).
    """
    out = jax.tree_util.tree_map(np.asarray, out)
    status = status_of(out)
    t_stop = float(out["t_stop"])
    n = len(ts_arr)
    ts, means, covs = out["ts"][:n], out["means"][:n], out["covs"][:n]
    keep = (ts <= t_stop) & np.isfinite(ts)
    keep &= np.all(np.isfinite(means.reshape(n, -1)), axis=1)
    keep &= np.all(np.isfinite(covs.reshape(n, -1)), axis=1)
    ts, means, covs = ts[keep], means[keep], covs[keep]
    fm, fc = out["mean_end"], out["cov_end"]
    final_ok = np.all(np.isfinite(fm)) and np.all(np.isfinite(fc))
    if final_ok and (len(ts) == 0 or t_stop > ts[-1] * (1 + 1e-14) + 1e-300):
        ts = np.append(ts, t_stop)
        means = np.concatenate([means, fm[None]])
        covs = np.concatenate([covs, fc[None]])
    if status == "completed" and (not final_ok or len(ts) < n):
        status = "nonfinite"
    blowup_time = None
    if status == "blowup":
        blowup_time = float(t_stop + out["tau"])
    return Trajectory(ts=ts, means=means, covs=covs, status=status, t_stop=t_stop,
                      blowup_time=blowup_time, num_steps=int(out["num_steps"]),
                      field_name=getattr(field, "name", type(field).__name__))
