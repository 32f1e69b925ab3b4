r"""The sweep's NumPy engine: Tsit5 steps taken for every running member at once, on stacks of
small matrices, with no compilation.

**Why.** The members of a sweep are small ($d \lesssim 16$) and their step counts heavy-tailed.
On a CPU, XLA's batched products of small matrices cost 170–800 ns per member and product, and
compiling the work queue (`gaussflow.queue`) takes seconds; NumPy's stacked `matmul` multiplies
`(members, d, d)` stacks at 67 / 87 ns per $5 \times 5$ / $8 \times 8$ product on the same
machine and compiles nothing (`benchmarks/many_flows.py` measures both engines side by side).
Here each iteration takes one adaptive step in every running member with whole-stack NumPy
operations; a member that finishes (reached $t_1$, an event, or its step budget) leaves the
stacks, so the iteration cost follows the number of running members and no member waits for
another (there is no lock step: members step with their own sizes).

**What is diffrax's and what is gaussflow's.** The method is diffrax's: the Butcher tableau of
`diffrax.Tsit5` (`Tsit5.tableau`) and its dense output (`Tsit5.interpolation_cls`, whose weight
polynomials are read off once by evaluating it, `dense_weights`), the step-size rule of
`diffrax.PIDController` (its `safety`, `factormin`, `factormax`, integral coefficient and the
solver's error order, read from the objects) and its RMS error norm. gaussflow supplies the loop
and the same decisions as `gaussflow.queue` / `gaussflow.solve`: the first step
(`gaussflow.stepping.first_step`), a non-finite trial step or error counted as an infinite error
(`gaussflow.stepping.FiniteErrorPID`), a step counted whether accepted or rejected, diffrax's
clipping of the last step to $t_1$, the events after each step (`gaussflow.stepping.growth_flags`:
blow-up, escape; a non-finite state or closure), save times from each accepted step's dense output.
So a member's values agree with `gaussflow.solve` to rounding and tolerance (tested), and the raw
per-member dictionary is the one `gaussflow.integrate.status_of` reads.

**Fields.** A `gaussflow.field.DerivedField` whose closure is its generated one, printed a third
time for stacks of members (`gaussflow.field.stacked_numpy_functions`: products `A @ B` with
leading member axes, transposes `.mT`), or a sum of such fields (`StackedSum`);
`stacked_field` returns `None` for anything else (a field with a domain check, a JAX-only helper
such as a PSD square root, layers, position blocks), which the sweep then runs with the JAX work
queue.

**Compilation.** None on the hot path; once per process, one small jitted evaluation of diffrax's
interpolation reads the dense-output weights (`dense_weights`).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .field import DerivedField, cov_from_flow, stacked_numpy_functions
from .stepping import FiniteErrorPID, end_clip_floor, first_step, growth_flags, trace_total
from .variants.superposition import Sum

__all__ = ["NAME", "StackedField", "StackedSum", "dense_weights", "run", "stacked_field",
           "stacked_flags"]

#: The solver name of members finished by this engine (its method is diffrax's Tsit5).
NAME = "tsit5"

_OK = int(diffrax.RESULTS.successful._value)
_EVENT = int(diffrax.RESULTS.event_occurred._value)
_MAX_STEPS = int(diffrax.RESULTS.max_steps_reached._value)

_TABLEAU = diffrax.Tsit5.tableau
#: Stage `i + 1` is `y0 + h * sum_j A[i][j] k_j` at time `t0 + C[i] h`.
_A = [np.asarray(a, float) for a in _TABLEAU.a_lower]
_C = np.asarray(_TABLEAU.c, float)
_B_ERR = np.asarray(_TABLEAU.b_error, float)
_STAGES = len(_B_ERR)


@functools.cache
def dense_weights() -> np.ndarray:
    r"""Coefficients `W` `(stages, degree + 1)` of Tsit5's dense output: between $t_0$ and
    $t_1 = t_0 + h$, $y(t_0 + \theta h) = y_0 + h \sum_j (\sum_p W_{jp} \theta^p) f_j$.

    Read off diffrax's `Tsit5.interpolation_cls` (evaluated with unit stage vectors at 12 points
    and fitted by least squares; its weights are polynomials of degree 4 in $\theta$); the fit's
    residual is checked to be at rounding level.
    """
    theta = np.linspace(0.0, 1.0, 12)

    @jax.jit  # one small compilation instead of eager operations (each compiled on first use)
    def weights(th):
        interp = diffrax.Tsit5.interpolation_cls(
            t0=0.0, t1=1.0, y0=jnp.zeros(_STAGES), y1=jnp.zeros(_STAGES), k=jnp.eye(_STAGES))
        return jax.vmap(interp.evaluate)(th)

    vals = np.asarray(weights(jnp.asarray(theta)))  # (points, stages)
    powers = theta[:, None] ** np.arange(5)
    W, *_ = np.linalg.lstsq(powers, vals, rcond=None)
    if np.abs(powers @ W - vals).max() > 1e-13:  # an interpolant of another form
        raise RuntimeError("diffrax's Tsit5 dense output is not a degree-4 polynomial in theta")
    return W.T.copy()


@functools.cache
def _control() -> tuple[float, float, float, float]:
    """`(safety, factormin, factormax, exponent)` of the sweep's step-size controller (diffrax's
    PID rule with its defaults: integral control, exponent icoeff / error order)."""
    c = FiniteErrorPID(rtol=1.0, atol=1.0)
    if c.pcoeff != 0 or c.dcoeff != 0:
        raise RuntimeError("the NumPy engine implements integral step-size control only")
    order = diffrax.Tsit5().error_order(None)
    return float(c.safety), float(c.factormin), float(c.factormax), float(c.icoeff) / order


class StackedField:
    """A field's generated `flow_rhs` and `closure` on stacks of members (NumPy).

    `params` are the derivation's arguments, each with a leading member axis (batched fields;
    scalars as `(members, 1, 1)`) or shared by every member."""

    def __init__(self, functions: dict, params: list[Any], batched: bool):
        self.functions, self.params, self.batched = functions, params, batched

    def take(self, idx: np.ndarray) -> "StackedField":
        """The members `idx` (shared parameters stay shared)."""
        if not self.batched:
            return self
        return StackedField(self.functions, [p[idx] for p in self.params], True)

    def flow_rhs(self, t: np.ndarray, mean: np.ndarray, Phi: np.ndarray,
                 cov0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(dm, dPhi)`: means `(M, d, 1)`, flow maps `(M, d, d)`, times `(M, 1, 1)`."""
        dm, dPhi = self.functions["flow_rhs"](t, mean, Phi, cov0, *self.params)
        return _full(dm, mean.shape), _full(dPhi, Phi.shape)

    def closure(self, t: np.ndarray, mean: np.ndarray,
                S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(dm, J)` at means `(M, d, 1)` and covariances `(M, d, d)` (outputs that do not depend
        on the state, such as an affine field's `J = W`, broadcast to every member)."""
        dm, J = self.functions["closure"](t, mean, S, *self.params)
        return _full(dm, mean.shape), _full(J, S.shape)


class StackedSum:
    """The NumPy form of a sum of fields (`gaussflow.variants.superposition.Sum`, e.g.
    `gf.MultiHead`): its parts' `StackedField`s, whose right-hand sides and closures add (as the
    JAX `Sum` adds its parts')."""

    def __init__(self, parts: list[StackedField]):
        self.parts = parts

    def take(self, idx: np.ndarray) -> "StackedSum":
        """The members `idx`."""
        return StackedSum([p.take(idx) for p in self.parts])

    def flow_rhs(self, t: np.ndarray, mean: np.ndarray, Phi: np.ndarray,
                 cov0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The parts' `(dm, dPhi)` summed."""
        outs = [p.flow_rhs(t, mean, Phi, cov0) for p in self.parts]
        return sum(o[0] for o in outs), sum(o[1] for o in outs)

    def closure(self, t: np.ndarray, mean: np.ndarray,
                S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The parts' `(dm, J)` summed."""
        outs = [p.closure(t, mean, S) for p in self.parts]
        return sum(o[0] for o in outs), sum(o[1] for o in outs)


def _full(x: Any, shape: tuple[int, ...]) -> np.ndarray:
    """`x` broadcast to `shape` (a view; `x` itself when it has that shape already)."""
    return x if getattr(x, "shape", None) == shape else np.broadcast_to(x, shape)


def stacked_field(field: Any, field_batched: bool) -> StackedField | StackedSum | None:
    """The NumPy form of `field` (batched: array leaves with a leading member axis), or `None`
    when it has none (see the module docstring); a sum of fields has one when each part has."""
    if isinstance(field, Sum) and type(field)._flow_rhs is Sum._flow_rhs \
            and type(field)._closure is Sum._closure:
        parts = [stacked_field(p, field_batched) for p in field.parts]
        return None if any(p is None for p in parts) else StackedSum(parts)
    cls = type(field)
    if (not isinstance(field, DerivedField) or getattr(field, "time_dependent", False)
            or not field._closure_is_generated()
            or cls._flow_rhs is not DerivedField._flow_rhs
            or field._has_domain_check()):
        return None
    fns = stacked_numpy_functions(cls)
    if fns is None or "flow_rhs" not in fns or "closure" not in fns:
        return None
    try:
        if field_batched:
            dyn, static = eqx.partition(field, eqx.is_array)
            args = jax.vmap(lambda fd: eqx.combine(fd, static)._args())(dyn)
        else:
            args = field._args()
        params = [np.asarray(a, dtype=np.float64) for a in args]
    except (TypeError, ValueError):  # non-array parameters
        return None
    if field_batched:
        params = [p.reshape(p.shape + (1,) * (3 - p.ndim)) if p.ndim < 3 else p for p in params]
    return StackedField(fns, params, field_batched)


def stacked_flags(sf: StackedField | StackedSum, t: np.ndarray, means: np.ndarray,
                  Phis: np.ndarray, cov0s: np.ndarray, scale: np.ndarray, t0: float,
                  thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(nonfinite, blowup, escaped, tau)` of a stack of members after a step (`sf` their NumPy
    form, times `t` `(M,)`, means `(M, d, 1)`, flow maps and initial covariances `(M, d, d)`,
    `scale` their initial traces): `gaussflow.stepping.growth_flags` and the finiteness of the
    state and of the closure, as `gf.solve` tests them (no domain check on this form)."""
    with np.errstate(all="ignore"):
        S = cov_from_flow(Phis, cov0s)
        dm, J = sf.closure(t[:, None, None], means, S)
        finite = (np.isfinite(means).all((1, 2)) & np.isfinite(Phis).all((1, 2))
                  & np.isfinite(dm).all((1, 2)) & np.isfinite(J).all((1, 2)))
        blowup, escaped, tau = growth_flags(J, S, scale, thr, t, t0, lead=1)
    return ~finite, blowup, escaped, tau


def run(sf: StackedField, means0: np.ndarray, covs0: np.ndarray, members: np.ndarray,
        times: tuple[float, float, float], ts: np.ndarray, rtol: float, atol: float,
        max_steps: int, time_scale: str = "linear", chunk: int | None = None,
        progress: bool = False) -> tuple[dict[str, np.ndarray], float]:
    """Integrate the sweep members `members` (indices into `means0` `(B, d)`, `covs0`
    `(B, d, d)` and a batched `sf`) with Tsit5, `chunk` members at a time (default all; bounds
    the memory of the stacks and saved states). `times` is `(t0, t1, blow-up threshold)`;
    the other arguments are `gaussflow.sweep`'s (`progress`: a tqdm bar of finished members).
    Returns `(raw, run seconds)`: `raw` has the keys of
    `gaussflow.integrate.integrate_closure`, one row per member."""
    start = time.perf_counter()
    members = np.asarray(members)
    chunk = len(members) if chunk is None else max(1, int(chunk))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(members), desc="sweep (NumPy Tsit5)", unit="member")
    try:
        raws = [_run_chunk(sf, means0, covs0, members[i:i + chunk], times, ts, rtol, atol,
                           max_steps, time_scale, bar)
                for i in range(0, len(members), chunk)]
    finally:
        if bar is not None:
            bar.close()
    raw = {k: np.concatenate([r[k] for r in raws]) for k in raws[0]}
    return raw, time.perf_counter() - start


def _run_chunk(sf, means0, covs0, members, times, ts, rtol, atol, max_steps, time_scale, bar):
    """`run` for one chunk of members (the loop of the module docstring)."""
    t0, t1, thr = (float(x) for x in times)
    log = time_scale == "log"
    to_s = (lambda t: np.log1p(t - t0)) if log else (lambda t: t)
    to_t = (lambda s: t0 + np.expm1(s)) if log else (lambda s: s)
    s0, s1 = float(to_s(t0)), float(to_s(t1))
    floor = end_clip_floor(s1)  # diffrax's end-time clipping threshold
    ts_t = np.asarray(ts, float)
    ts_s = to_s(ts_t)
    N, d, n_ts = len(members), covs0.shape[-1], len(ts_t)
    field = sf.take(members)
    m0 = np.asarray(means0, float)[members][..., None]
    c0 = np.asarray(covs0, float)[members]
    scale = np.maximum(trace_total(c0, 1), 1e-300)
    W = dense_weights()
    safety, fmin, fmax, expo = _control()
    size = d * (d + 1)

    def vf(s, Y, f, cov0, out=None):
        """dY/ds of stacked states `Y = [Phi | mean]` `(M, d, d + 1)` (written into `out`)."""
        t = to_t(s)[:, None, None]
        dm, dPhi = f.flow_rhs(t, Y[..., d:], Y[..., :d], cov0)
        out = np.empty(Y.shape) if out is None else out
        out[..., :d], out[..., d:] = dPhi, dm
        if log:
            out *= np.exp(s)[:, None, None]
        return out

    def flags(t, Y, f, cov0, sc):
        return stacked_flags(f, t, Y[..., d:], Y[..., :d], cov0, sc, t0, thr)

    # outputs, indexed by position in `members`
    out = {"ts": np.full((N, n_ts), np.inf), "means": np.full((N, n_ts, d), np.inf),
           "Phis": np.full((N, n_ts, d, d), np.inf), "s_stop": np.zeros(N),
           "Y_end": np.zeros((N, d, d + 1)), "result": np.zeros(N, np.int32),
           "num_steps": np.zeros(N, np.int64)}
    with np.errstate(all="ignore"):  # overflow past a blow-up is caught by the events
        dm0, J0 = field.closure(np.full((N, 1, 1), t0), m0, c0)
        dt0 = first_step(dm0, J0, m0, c0, s1 - s0, lead=1)
        Y = np.concatenate([np.broadcast_to(np.eye(d), c0.shape), m0], axis=-1)
        # running members' state
        pos = np.arange(N)
        sp = np.full(N, s0)
        sn = np.minimum(s0 + dt0, s1)
        nsteps = np.zeros(N, np.int64)
        save = np.zeros(N, np.int64)
        result = np.full(N, _OK, np.int32)
        f, cov0, sc = field, c0, scale
        k1 = vf(sp, Y, f, cov0)
        K = np.empty((_STAGES,) + Y.shape)
        while pos.size:
            h = sn - sp
            hb = h[:, None, None]
            K[0] = k1
            K2 = K.reshape(_STAGES, -1)  # stage combinations as one product each
            for i, a in enumerate(_A):  # in place: large temporaries cost page faults
                Ys = (a @ K2[:i + 1]).reshape(Y.shape)
                Ys *= hb
                Ys += Y
                tc = sn if _C[i] == 1.0 else sp + _C[i] * h
                vf(tc, Ys, f, cov0, out=K[i + 1])
            err_y = (_B_ERR @ K2).reshape(Y.shape)
            err_y *= hb
            bad = ~(np.isfinite(Ys).all((1, 2)) & np.isfinite(err_y).all((1, 2)))
            y1 = np.where(bad[:, None, None], Y, Ys) if bad.any() else Ys
            scale_y = np.abs(Y)
            np.maximum(scale_y, np.abs(y1), out=scale_y)
            scale_y *= rtol
            scale_y += atol
            err_y /= scale_y
            err = np.sqrt(np.einsum("mij,mij->m", err_y, err_y) / size)
            err = np.where(bad | np.isnan(err), np.inf, err)
            keep = err < 1
            factor = np.clip(safety * (1.0 / err) ** expo, np.where(keep, 1.0, fmin),
                             np.where(keep, fmax, safety))
            sp_new = np.minimum(np.where(keep, sn, sp), s1)
            sn_new = np.where(keep, sn, sp) + h * factor
            clip = sn_new > floor
            sn_new = np.where(clip, np.where(keep, s1, sp_new + 0.5 * (s1 - sp_new)), sn_new)
            # save times inside the accepted steps, from the dense output
            while True:
                j = np.minimum(save, n_ts - 1)
                need = keep & (save < n_ts) & (ts_s[j] <= sn)
                if not need.any():
                    break
                w = np.where(need)[0]
                th = (ts_s[j[w]] - sp[w]) / np.where(h[w] > 0, h[w], 1.0)
                coef = (th[:, None] ** np.arange(W.shape[1])) @ W.T  # (w, stages)
                yv = Y[w] + h[w, None, None] * (coef[:, None, :] @ K[:, w].reshape(
                    _STAGES, len(w), -1).transpose(1, 0, 2)).reshape(Y[w].shape)
                p, jw = pos[w], j[w]
                out["ts"][p, jw] = ts_t[jw]
                out["means"][p, jw] = yv[..., d]
                out["Phis"][p, jw] = yv[..., :d]
                save[w] += 1
            if keep.all():
                Y, k1 = y1, K[-1].copy()
            else:
                kb = keep[:, None, None]
                Y, k1 = np.where(kb, y1, Y), np.where(kb, K[-1], k1)
            sp, sn = sp_new, sn_new
            nsteps += 1
            nonfinite, blowup, escaped, _ = flags(to_t(sp), Y, f, cov0, sc)
            result = np.where(nonfinite | blowup | escaped, _EVENT, result)
            done = ~((sp < s1) & (result == _OK)) | (nsteps >= max_steps)
            if done.any():
                w, p = np.where(done)[0], pos[done]
                if bar is not None:
                    bar.update(len(w))
                res = np.where(result[w] == _OK, _MAX_STEPS, result[w])
                out["result"][p] = np.where(sp[w] < s1, res, result[w])
                out["s_stop"][p], out["Y_end"][p], out["num_steps"][p] = sp[w], Y[w], nsteps[w]
                live = ~done
                pos, Y, sp, sn, k1 = pos[live], Y[live], sp[live], sn[live], k1[live]
                nsteps, save, result = nsteps[live], save[live], result[live]
                f, cov0, sc = f.take(np.where(live)[0]), cov0[live], sc[live]
                K = np.empty((_STAGES,) + Y.shape)
        return _finalize(out, field, c0, scale, (s0, s1, t1), to_t, vf, flags, log, d)


def _finalize(out, field, c0, scale, span, to_t, vf, flags, log, d):
    """The raw outputs of `gaussflow.integrate.integrate_closure` from the loop's records."""
    s0, s1, t1 = span
    s_stop, Y_end = out["s_stop"], out["Y_end"]
    t_stop = np.where(s_stop >= s1, t1, to_t(s_stop)) if log else s_stop
    nonfinite, blowup, escaped, tau = flags(t_stop, Y_end, field, c0, scale)
    h = 1e-6 * (s1 - s0)
    ahead = Y_end + h * vf(s_stop, Y_end, field, c0)
    nonfinite_ahead = flags(to_t(s_stop + h), ahead, field, c0, scale)[0]
    event = out["result"] == _EVENT
    return {
        "ts": out["ts"], "means": out["means"],
        "covs": cov_from_flow(out["Phis"], c0[:, None]), "t_stop": t_stop, "tau": tau,
        "mean_end": Y_end[..., d], "cov_end": cov_from_flow(Y_end[..., :d], c0),
        "result": out["result"], "num_steps": out["num_steps"],
        "event_nonfinite": event & nonfinite, "event_blowup": event & ~nonfinite & blowup,
        "event_domain": np.zeros_like(event),
        "event_escape": event & ~nonfinite & ~blowup & escaped,
        "finite_ahead": ~nonfinite_ahead,
    }


#: `gf.sweep(engine=...)`.
ENGINES = ("auto", "numpy", "jax")
#: The first explicit budget of the NumPy engine when `first_pass_steps` is not given: members
#: still running after it go to the stiff pass (LSODA), whose steps cost less than a straggler's
#: NumPy iterations (about 0.1–0.2 ms each, however few members are left).
FIRST_PASS_STEPS = 1024


def choose(engine: str, field: Any, field_batched: bool, solver: Any, covs_ndim: int,
           state_batched: bool, method: str, device: Any) -> bool:
    """Whether `gf.sweep` runs its explicit passes on this engine: `engine="numpy"` (raises
    `ValueError`, before any work, where it cannot), `"auto"` (where it can: the queue method on
    a CPU, Tsit5, a field with a NumPy form, one Gaussian per member) or `"jax"` (never)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "jax":
        return False
    why = None
    if method != "queue":
        why = "it runs on the queue method (method='queue', one device)"
    elif not isinstance(solver, diffrax.Tsit5):
        why = f"its method is Tsit5 (got solver {type(solver).__name__})"
    elif covs_ndim != 2 + state_batched:
        why = "it takes one Gaussian per member (not position blocks)"
    elif getattr(device, "platform", "cpu") != "cpu":
        why = "it runs on the CPU (the device given is not)"
    elif stacked_field(field, field_batched) is None:
        why = (f"the field {type(field).__name__} has no NumPy form (a domain check, layers, or "
               "a JAX-only helper such as a PSD square root)")
    if why is not None and engine == "numpy":
        raise ValueError(f"engine='numpy' is not available here: {why}; pass engine='auto' or "
                         "'jax'")
    return why is None
