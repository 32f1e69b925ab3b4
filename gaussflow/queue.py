r"""A refilling work queue of adaptive ODE solves: the engine of `gaussflow.sweep`.

**Why.** Under `jax.vmap` a batch of adaptive solves runs as many steps as its slowest member,
and the step counts of a sweep are heavy-tailed (most members need a few steps, a few need
thousands). Here a fixed pool of `P` *slots* holds one member each; every iteration of a
`jax.lax.while_loop` takes one adaptive step in every active slot, and when a slot's member
finishes (reached `t1`, an event, or its step budget) the slot loads the next pending member.
When the queue is drained and few slots are still busy, the survivors move to a smaller pool
($P \to P/16 \to \dots \to 1$; each pool is a compiled loop of its own, run from the host,
and compiled only when a tail outlasts `GRACE_ITERS` iterations in the pool before), so the
tail of slow members does not pay for idle slots. A pool loads at most $\max(1, P/4)$ members
per iteration (each load runs diffrax's `init`s for that many members).

**Devices.** One device; `gaussflow.sweep` keeps its vmapped path for sharding.

**What is diffrax and what is gaussflow.** Each step is diffrax's: the solver's `init` /
`step` (Tsit5, Kvaerno5, ...), its dense output (`solver.interpolation_cls`) for the save
times inside a step, and `PIDController.init` (initial step) / `adapt_step_size` (accept or
reject, next step). gaussflow supplies the loop around them, written to take the same decisions
as `diffrax.diffeqsolve` with a boolean event: a non-NaN error estimate, the end time clipped
as diffrax clips it, a step counted whether accepted or rejected, save times written from the
step's dense output, the event tested at the state after each step, `max_steps` steps at most.
The first step and the step controller are `gf.solve`'s (`gaussflow.stepping.first_step`,
`gaussflow.stepping.FiniteErrorPID`). So a member's values agree with
`gaussflow.solve` to rounding (batched and single products may round differently), and its
status, stop time and blow-up estimate are computed by the same formulas
(`gaussflow.integrate.integrate_closure`): the raw per-member dictionary this module returns is
the one `gaussflow.integrate.status_of` / `gaussflow.integrate.trajectory_of` read.

**State.** The flow-map state of `gaussflow.integrate`: `y = (mean, Phi)`,
$\Sigma = \Phi \Sigma_0 \Phi^T$; with `time_scale="log"` the solver steps in
$s = \log(1 + t - t_0)$.

**Memory.** The pending members of one chunk live on the device with their outputs (save
times $\times\,(1 + d + d^2)$ values per member); the slots hold one member's solver state
each.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .field import StaticKey, cov_from_flow
from .stepping import FiniteErrorPID, first_step, growth_flags, trace_total

_OK = int(diffrax.RESULTS.successful._value)
_EVENT = int(diffrax.RESULTS.event_occurred._value)
_MAX_STEPS = int(diffrax.RESULTS.max_steps_reached._value)

#: Executables compiled so far, keyed by shapes and static options (see `cache_size`).
_COMPILED: dict = {}


# ------------------------------------------------------------------- the calls into a field
# The only place this module calls a field's private methods.
def _field_rhs(field, t, mean, Phi, cov0):
    r"""$(dm/dt, d\Phi/dt)$ (mean, flow map) at time `t`."""
    return field._flow_rhs(t, mean, Phi, cov0)


def _field_closure(field, t, mean, S):
    """`((dm, J), ok)` at time `t`: the mean's derivative $dm/dt$, the closure matrix $J$ and
    whether the state is inside the closure's domain."""
    return field._closure(t, mean, S), field._domain_ok(t, mean, S)


# -------------------------------------------------------------------- one member's functions
class _Member:
    """The vector field and stop flags of one member (as in
    `gaussflow.integrate.integrate_closure`)."""

    def __init__(self, field, cov0, scale, t0, thr, log):
        self.field, self.cov0, self.scale, self.t0, self.thr, self.log = \
            field, cov0, scale, t0, thr, log

    def to_t(self, s):
        return self.t0 + jnp.expm1(s) if self.log else s

    def vf(self, s, y, args):
        mean, Phi = y
        dm, dPhi = _field_rhs(self.field, self.to_t(s), mean, Phi, self.cov0)
        if self.log:
            w = jnp.exp(s)  # dt/ds
            return w * dm, w * dPhi
        return dm, dPhi

    def flags(self, t, y):
        """(nonfinite, blowup, escaped, outside domain, tau) at state `y`: one closure
        evaluation (`gaussflow.stepping.growth_flags`)."""
        mean, Phi = y
        S = cov_from_flow(Phi, self.cov0)
        (dm, J), ok = _field_closure(self.field, t, mean, S)
        finite = (jnp.all(jnp.isfinite(mean)) & jnp.all(jnp.isfinite(Phi))
                  & jnp.all(jnp.isfinite(dm)) & jnp.all(jnp.isfinite(J)))
        blowup, escaped, tau = growth_flags(J, S, self.scale, self.thr, t, self.t0)
        return ~finite, blowup, escaped, ~ok, tau

    def stop(self, s, y):
        nonfinite, blowup, escaped, outside, _ = self.flags(self.to_t(s), y)
        return nonfinite | blowup | escaped | outside


def with_controller_tols(solver: diffrax.AbstractSolver,
                         controller: diffrax.PIDController) -> diffrax.AbstractSolver:
    """An implicit solver whose root finder uses the controller's `rtol`/`atol`/`norm`
    where it was left to them (what `diffrax.diffeqsolve` does)."""
    if not isinstance(solver, diffrax.AbstractImplicitSolver):
        return solver
    default = type(solver)().root_finder
    names = [a for a in ("rtol", "atol", "norm")
             if getattr(solver.root_finder, a, None) is getattr(default, a, object())]
    if not names:
        return solver
    return eqx.tree_at(lambda s: tuple(getattr(s.root_finder, a) for a in names), solver,
                       tuple(getattr(controller, a) for a in names))


# ------------------------------------------------------------------------------- the engine
class Engine:
    """Static data of a queue run: field structure, solver, controller and options."""

    def __init__(self, field_static: StaticKey, field_batched: bool,
                 solver: diffrax.AbstractSolver, rtol: float, atol: float, max_steps: int,
                 time_scale: str):
        self.field_static, self.field_batched = field_static, field_batched
        self.controller = FiniteErrorPID(rtol=rtol, atol=atol)
        self.solver = with_controller_tols(solver, self.controller)
        self.max_steps, self.log = int(max_steps), time_scale == "log"
        self.key = (field_static, field_batched, solver, rtol, atol, int(max_steps), time_scale)

    # -- helpers --------------------------------------------------------------------------
    def _member(self, fdyn, cov0, scale, targs):
        t0, thr = targs["t0"], targs["thr"]
        return _Member(eqx.combine(fdyn, self.field_static.tree), cov0, scale, t0, thr, self.log)

    def _load(self, queue, fshared, idx, targs):
        """Fresh slots for members `idx` (vmapped diffrax init)."""
        fq, means0, covs0 = queue
        fdyn = jax.tree_util.tree_map(lambda x: x[idx], fq) if self.field_batched else None
        m0, c0 = means0[idx], covs0[idx]
        s0, s1 = targs["s0"], targs["s1"]

        def one(fd, m, c):
            scale = jnp.maximum(trace_total(c), 1e-300)
            mem = self._member(fshared if fd is None else fd, c, scale, targs)
            terms = diffrax.ODETerm(mem.vf)
            y0 = (m, jnp.broadcast_to(jnp.eye(c.shape[-1]), c.shape).astype(c.dtype))
            err_order = self.solver.error_order(terms)
            dm, J = _field_closure(mem.field, targs["t0"], m, c)[0]
            dt0 = first_step(dm, J, m, c, s1 - s0)
            s_next, cstate = self.controller.init(terms, s0, s1, y0, dt0, None,
                                                  self.solver.func, err_order)
            s_next = jnp.minimum(s_next, s1)
            sstate = self.solver.init(terms, s0, s_next, y0, None)
            slot = dict(fdyn=fd, cov0=c, scale=scale, y=y0, s_prev=jnp.asarray(s0, float),
                        s_next=jnp.asarray(s_next, float), sstate=sstate, cstate=cstate,
                        nsteps=jnp.int32(0), save=jnp.int32(0), result=jnp.int32(_OK))
            return jax.tree_util.tree_map(jnp.asarray, slot)  # Python scalars too: batched

        axes = (0 if self.field_batched else None, 0, 0)
        return eqx.filter_vmap(one, in_axes=axes)(fdyn, m0, c0)

    def _step(self, sl, fshared, targs):
        """One adaptive step of one slot (vmapped over the pool)."""
        s1, floor = targs["s1"], targs["floor"]
        mem = self._member(fshared if sl["fdyn"] is None else sl["fdyn"], sl["cov0"],
                           sl["scale"], targs)
        terms = diffrax.ODETerm(mem.vf)
        sp, sn, y = sl["s_prev"], sl["s_next"], sl["y"]
        y1, y_err, dense, sstate, sres = self.solver.step(terms, sp, sn, y, None, sl["sstate"],
                                                          False)
        y_err = jax.tree_util.tree_map(lambda x: jnp.where(jnp.isnan(x), jnp.inf, x), y_err)
        keep, sp_new, sn_new, _, cstate, cres = self.controller.adapt_step_size(
            sp, sn, y, y1, None, y_err, self.solver.error_order(terms), sl["cstate"])
        sp_new = jnp.minimum(sp_new, s1)
        clip = sn_new > floor  # diffrax's clip to the end time
        sn_new = jnp.where(clip, jnp.where(keep, s1, sp_new + 0.5 * (s1 - sp_new)), sn_new)
        pick = lambda a, b: jnp.where(keep, a, b)  # noqa: E731
        y_new = jax.tree_util.tree_map(pick, y1, y)
        sstate = jax.tree_util.tree_map(pick, sstate, sl["sstate"])
        sres = jnp.where(keep, sres._value, _OK)
        res = sl["result"]
        res = jnp.where(res == _OK, sres, res)
        res = jnp.where(res == _OK, cres._value, res)
        res = jnp.where(mem.stop(sp_new, y_new), _EVENT, res)
        new = dict(sl, y=y_new, s_prev=sp_new, s_next=sn_new, sstate=sstate, cstate=cstate,
                   nsteps=sl["nsteps"] + 1, result=res.astype(jnp.int32))
        return new, dense, keep

    def _interp(self, dense, a, b, s):
        return self.solver.interpolation_cls(t0=a, t1=b, **dense).evaluate(s)

    # -- one pool ------------------------------------------------------------------------
    def compact(self, slots_in: dict[str, Any], active_in: jax.Array, *,
                pool: int) -> tuple[dict[str, Any], jax.Array]:
        """The busy slots of `slots_in` (at most `pool`) moved into a pool of `pool`."""
        idx = jnp.nonzero(active_in, size=pool, fill_value=0)[0]
        slots = jax.tree_util.tree_map(lambda x: x[idx], slots_in)
        return slots, jnp.arange(pool) < jnp.sum(active_in)

    def segment(self, slots: dict[str, Any], active: jax.Array, queue: tuple, fshared: Any,
                out: dict[str, jax.Array], nxt: jax.Array, n: jax.Array,
                targs: dict[str, jax.Array], stop_at: jax.Array, max_iters: jax.Array, *,
                pool: int) -> tuple[dict[str, Any], jax.Array, dict[str, jax.Array], jax.Array,
                                    jax.Array]:
        """Run the queue loop on a pool of `pool` slots until the queue is drained and at most
        `stop_at` slots are busy, or for `max_iters` iterations. Returns the new state
        `(slots, active, out, nxt)` and the number of busy slots.

        `queue` is `(field arrays or None, means0, covs0)` of the chunk's members, `fshared` the
        field arrays shared by every member (`None` for a batched field), `out` the outputs
        being written, `nxt` the index of the next pending member and `n` the number of real
        (not padded) members.
        """
        P = pool
        R = max(1, P // 4)  # members loaded per iteration at most
        slots = dict(slots)
        member = slots.pop("member")
        ts_s, ts_t = targs["ts_s"], targs["ts_t"]
        n_ts = ts_s.shape[0]
        N = queue[1].shape[0]

        def finish(slots, active, member, out):
            done = active & ~((slots["s_prev"] < targs["s1"]) & (slots["result"] == _OK))
            done |= active & (slots["nsteps"] >= self.max_steps)
            at = jnp.where(done, member, N)
            res = jnp.where(slots["result"] == _OK, _MAX_STEPS, slots["result"])
            res = jnp.where(slots["s_prev"] < targs["s1"], res, slots["result"])
            upd = dict(s_stop=slots["s_prev"], mean_end=slots["y"][0], Phi_end=slots["y"][1],
                       result=res, num_steps=slots["nsteps"])
            out = dict(out, **{k: out[k].at[at].set(v, mode="drop") for k, v in upd.items()})
            return active & ~done, out

        def refill(carry):
            slots, active, member, nxt = carry
            free = jnp.nonzero(~active, size=R, fill_value=P)[0]
            ids = nxt + jnp.arange(R)
            ok = (free < P) & (ids < n)
            new = self._load(queue, fshared, jnp.minimum(ids, N - 1), targs)
            at = jnp.where(ok, free, P)
            slots = jax.tree_util.tree_map(lambda a, b: a.at[at].set(b, mode="drop"), slots, new)
            member = member.at[at].set(ids.astype(member.dtype), mode="drop")
            active = active.at[at].set(True, mode="drop")
            return slots, active, member, (nxt + jnp.sum(ok)).astype(nxt.dtype)

        def cond(c):
            slots, active, member, out, nxt, it = c
            busy = jnp.sum(active)
            return ((nxt < n) | (busy > stop_at)) & ((busy > 0) | (nxt < n)) & (it < max_iters)

        def body(c):
            slots, active, member, out, nxt, it = c
            slots, active, member, nxt = jax.lax.cond(
                (nxt < n) & ~jnp.all(active), refill, lambda x: x, (slots, active, member, nxt))
            new, dense, keep = jax.vmap(self._step, in_axes=(0, None, None))(slots, fshared,
                                                                              targs)
            a, b = slots["s_prev"], slots["s_next"]  # the step just taken
            sel = lambda x, y: jnp.where(  # noqa: E731
                active.reshape(active.shape + (1,) * (x.ndim - 1)), x, y)
            slots = jax.tree_util.tree_map(sel, new, slots)
            want = keep & active

            def save_cond(sc):
                save, _ = sc
                return jnp.any(want & (save < n_ts) & (ts_s[jnp.minimum(save, n_ts - 1)] <= b))

            def save_body(sc):
                save, out = sc
                j = jnp.minimum(save, n_ts - 1)
                need = want & (save < n_ts) & (ts_s[j] <= b)
                ym, yP = jax.vmap(self._interp)(dense, a, b, ts_s[j])
                at = jnp.where(need, member, N)
                out = dict(out, ts=out["ts"].at[at, j].set(ts_t[j], mode="drop"),
                           means=out["means"].at[at, j].set(ym, mode="drop"),
                           Phis=out["Phis"].at[at, j].set(yP, mode="drop"))
                return (save + need).astype(save.dtype), out

            save, out = jax.lax.while_loop(save_cond, save_body, (slots["save"], out))
            slots["save"] = save
            active, out = finish(slots, active, member, out)
            return slots, active, member, out, nxt, it + 1

        slots, active, member, out, nxt, _ = jax.lax.while_loop(
            cond, body, (slots, active, member, out, nxt, jnp.zeros((), max_iters.dtype)))
        return dict(slots, member=member), active, out, nxt, jnp.sum(active)

    def empty(self, queue: tuple, fshared: Any, targs: dict[str, jax.Array],
              pool: int) -> tuple[dict[str, Any], jax.Array]:
        """A pool of `pool` inactive slots (shapes of a loaded slot)."""
        slots = self._load(queue, fshared, jnp.zeros(pool, int), targs)
        return dict(slots, member=jnp.zeros(pool, jnp.int32)), jnp.zeros(pool, bool)

    def finalize(self, queue: tuple, fshared: Any, out: dict[str, jax.Array],
                 targs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """The raw per-member dictionary of `gaussflow.integrate.integrate_closure` (vmapped
        over the chunk)."""
        fq, means0, covs0 = queue
        s0, s1, t1 = targs["s0"], targs["s1"], targs["t1"]

        def one(fd, c, o):
            scale = jnp.maximum(trace_total(c), 1e-300)
            mem = self._member(fshared if fd is None else fd, c, scale, targs)
            s_stop = o["s_stop"]
            t_stop = jnp.where(s_stop >= s1, t1, mem.to_t(s_stop)) if self.log else s_stop
            y_end = (o["mean_end"], o["Phi_end"])
            nonfinite, blowup, escaped, outside, tau = mem.flags(t_stop, y_end)
            h = 1e-6 * (s1 - s0)
            ahead = jax.tree_util.tree_map(lambda a, b: a + h * b, y_end,
                                           mem.vf(s_stop, y_end, None))
            nonfinite_ahead = mem.flags(mem.to_t(s_stop + h), ahead)[0]
            event = o["result"] == _EVENT
            return {
                "ts": o["ts"], "means": o["means"], "covs": cov_from_flow(o["Phis"], c),
                "t_stop": t_stop, "tau": tau, "mean_end": o["mean_end"],
                "cov_end": cov_from_flow(o["Phi_end"], c), "result": o["result"],
                "num_steps": o["num_steps"], "event_nonfinite": event & nonfinite,
                "event_blowup": event & ~nonfinite & blowup,
                "event_domain": event & ~nonfinite & ~blowup & outside,
                "event_escape": event & ~nonfinite & ~blowup & ~outside & escaped,
                "finite_ahead": ~nonfinite_ahead,
            }

        fd = fq if self.field_batched else None
        axes = (0 if self.field_batched else None, 0, 0)
        return eqx.filter_vmap(one, in_axes=axes)(fd, covs0, out)


def _outputs(N, n_ts, d):
    inf = jnp.inf
    return {"ts": jnp.full((N, n_ts), inf), "means": jnp.full((N, n_ts, d), inf),
            "Phis": jnp.full((N, n_ts, d, d), inf), "s_stop": jnp.zeros(N),
            "mean_end": jnp.zeros((N, d)), "Phi_end": jnp.zeros((N, d, d)),
            "result": jnp.zeros(N, jnp.int32), "num_steps": jnp.zeros(N, jnp.int32)}


def pools_for(slots: int, ratio: int = 16) -> tuple[int, ...]:
    """Pool sizes `slots, slots // ratio, ..., 1`: once the queue is drained, the busy slots
    move to the next pool when at most its size are left (one pass through a pool costs about
    a fixed overhead plus a per-slot part, so the last slow members run in a pool of 1)."""
    pools = [int(slots)]
    while pools[-1] > 1:
        pools.append(max(1, pools[-1] // ratio))
    return tuple(pools)


#: Iterations a pool keeps running its last busy slots before the next (smaller) pool is
#: compiled for them; when that pool is compiled already they move at once.
GRACE_ITERS = 256
_BIG = 2**62


def run(engine: Engine, field_dyn: Any, means0: np.ndarray, covs0: np.ndarray,
        targs: dict[str, Any], *, chunk: int, slots: int,
        members: Sequence[int] | np.ndarray | None = None,
        progress: bool = False) -> tuple[dict[str, np.ndarray], float, float]:
    """Integrate `members` (indices into the batch; default all) in chunks of `chunk`
    members (the last one padded; padded members never run) through pools of `slots` slots.
    Returns `(raw dict of NumPy arrays, compile seconds, run seconds)`.

    Each pool is its own compiled loop, run from the host: the first pool runs until the queue
    is drained and at most the next pool's size are busy; those move on, after
    `GRACE_ITERS` more iterations in this pool when the next pool is not compiled yet
    (short tails then cost no compilation)."""
    B = means0.shape[0]
    members = np.arange(B) if members is None else np.asarray(members)
    pools = pools_for(min(int(slots), chunk))
    targs = {k: jnp.asarray(v) for k, v in targs.items()}
    fshared = None if engine.field_batched else field_dyn
    outs, timer = [], _Timer()
    starts = range(0, len(members), chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"sweep ({type(engine.solver).__name__})", unit="chunk")
    for s in starts:
        idx = members[np.minimum(np.arange(s, s + chunk), len(members) - 1)]  # padded
        n = min(chunk, len(members) - s)
        fq = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)[idx]), field_dyn) \
            if engine.field_batched else None
        queue = (fq, jnp.asarray(means0[idx]), jnp.asarray(covs0[idx]))
        raw = _run_chunk(engine, queue, fshared, jnp.asarray(n, jnp.int32), targs, pools, timer)
        if not np.all(np.asarray(raw["num_steps"])[:n] > 0):  # an invariant of the loop
            raise RuntimeError("the work queue lost a member (no step taken); please report")
        outs.append({k: np.asarray(v)[:n] for k, v in raw.items()})
    raw = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return raw, timer.compile_s, timer.run_s


class _Timer:
    """Compiles (cached in `_COMPILED`) and calls the engine's functions, timing both."""

    def __init__(self):
        self.compile_s = self.run_s = 0.0

    def compiled(self, engine, name, args, **static):
        leaves, treedef = jax.tree_util.tree_flatten(args)
        key = (engine.key, name, tuple(sorted(static.items())), treedef,
               tuple((tuple(x.shape), str(x.dtype)) for x in leaves))
        return key, _COMPILED.get(key)

    def call(self, engine, name, *args, donate=(), **static):
        key, exe = self.compiled(engine, name, args, **static)
        if exe is None:
            start = time.perf_counter()
            fn = jax.jit(lambda *a: getattr(engine, name)(*a, **static), donate_argnums=donate)
            exe = _COMPILED[key] = fn.lower(*args).compile()
            self.compile_s += time.perf_counter() - start
        start = time.perf_counter()
        out = exe(*args)
        jax.block_until_ready(out)
        self.run_s += time.perf_counter() - start
        return out


def _run_chunk(engine, queue, fshared, n, targs, pools, timer):
    N, d = queue[1].shape
    out = _outputs(N, targs["ts_s"].shape[0], d)
    slots, active = timer.call(engine, "empty", queue, fshared, targs, pool=pools[0])
    nxt = jnp.asarray(0, jnp.int32)
    big, grace = jnp.asarray(_BIG, jnp.int64), jnp.asarray(GRACE_ITERS, jnp.int64)
    for i, P in enumerate(pools):
        after = pools[i + 1] if i + 1 < len(pools) else 0

        def seg(stop_at, iters):
            return timer.call(engine, "segment", slots, active, queue, fshared, out, nxt, n,
                              targs, jnp.asarray(stop_at, jnp.int32), iters, donate=(0, 4),
                              pool=P)

        slots, active, out, nxt, busy = seg(after, big)
        if int(busy) == 0:
            break
        nxt_args = (slots, active)
        if timer.compiled(engine, "segment", _segment_args(engine, nxt_args, after, queue,
                                                          fshared, out, nxt, n, targs),
                          pool=after)[1] is None:
            slots, active, out, nxt, busy = seg(0, grace)
            if int(busy) == 0:
                break
        slots, active = timer.call(engine, "compact", slots, active, pool=after)
    return timer.call(engine, "finalize", queue, fshared, out, targs)


def _segment_args(engine, slots_active, pool, queue, fshared, out, nxt, n, targs):
    """Abstract arguments of the next pool's `segment` (to look up its executable)."""
    slots, active = slots_active
    shaped = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct((pool,) + x.shape[1:], x.dtype), (slots, active))
    return (*shaped, queue, fshared, out, nxt, n, targs, jnp.asarray(0, jnp.int32),
            jnp.asarray(0, jnp.int64))


_CLEARED = [0]


def cache_size() -> int:
    """Number of compiled queue programs kept."""
    return len(_COMPILED)


def cleared() -> int:
    """Number of compiled queue programs forgotten by `clear_cache`."""
    return _CLEARED[0]


def clear_cache() -> None:
    """Forget the compiled queue programs."""
    _CLEARED[0] += len(_COMPILED)
    _COMPILED.clear()
