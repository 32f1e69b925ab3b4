r"""Integrate many Gaussian closures at once: `gf.sweep`.

Every member gets its own adaptive steps, stopping time and status, the same as
`gaussflow.solve` gives it (flow-map state $\Sigma = \Phi \Sigma_0 \Phi^T$; blow-up /
non-finite / not-integrable stops): a member that blows up early stops there while the others
carry on, and it cannot change their values. Conventions ($\beta$, $A = K^T Q$, ...) are
those of the fields themselves. Two methods:

- `"queue"` (default on one device; `gaussflow.sweep_queue`): every member steps on its own,
  none waits for another, on one of two engines: the NumPy engine (`gaussflow.numpy_engine`:
  Tsit5 steps of every running member in whole-stack NumPy operations, no compilation; the
  default on a CPU where it applies) or the refilling work queue of `gaussflow.queue` (a pool
  of slots each taking diffrax steps for one member and loading the next pending member when
  it finishes; slow members move to smaller pools).
- `"vmap"` (default on several devices): `gaussflow.integrate.integrate_closure`
  (`diffrax.diffeqsolve`) under `jax.vmap` in chunks, each chunk split over all
  `jax.devices()` with `jax.shard_map` on a one-dimensional mesh (every device runs its own
  while-loop); a chunk runs as many steps as its slowest member.

Members that run out of steps are run again (`gaussflow.passes`): with a stiff solver (LSODA
or an implicit diffrax solver), then with the full budget.

**Batching.** `fields` is one field (shared by every member), a sequence of fields of the
same class and shapes (stacked), or a *batched field*: a field whose array leaves carry a
leading batch axis, e.g. `jax.vmap(lambda Q: gf.Softmax(Q, -Q, V))(Qs)`. `g0s` is one
`gaussflow.Gaussian`, a sequence of them, or a batched Gaussian
(`jax.vmap(gf.Gaussian)(means, covs)`).

**Memory.** Members run in chunks of `chunk_size` (the last chunk is padded, so one
compilation serves every chunk); results are copied to the host after each chunk.

**Compilation.** One compilation per (field class and static data, shapes, chunk size, solver
options, devices; for the queue, per pool size), kept for the life of the process
(`cache_info`); compile and run times are reported separately on the result. Enable JAX's
persistent compilation cache (the `gaussflow` CLI does) to reuse compilations across
processes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import cache, lsoda, numpy_engine, queue
from . import closed_form as _cf_mod
from . import closed_form_sweep as cf_sweep
from ._checks import check_batched_covs, check_times, positive_int
from .field import Field, StaticKey
from .gaussian import Gaussian
from .passes import run_schedule, schedule
from .integrate import TIME_SCALES, check_solver_options, integrate_closure
from .sweep_queue import sweep_queue
from .sweep_result import SweepResult, result_from_raw
from .stepping import resolve_solver

if TYPE_CHECKING:
    from jax.typing import ArrayLike

_AXIS = "batch"
#: Lowerings of the batched core so far (one per compilation; see `cache_info`).
_TRACES = 0
_COMPILED: dict = {}


# ------------------------------------------------------------------------------ batched core
def _core(dyn, t0, t1, ts, *, static, field_batched, state_batched, mesh):
    """`dyn = (field arrays, means0, covs0)`; vmapped (and shard_mapped) `integrate_closure`."""
    global _TRACES
    _TRACES += 1
    field_static, solver, rtol, atol, max_steps, thr, adjoint, time_scale = static
    meter = diffrax.NoProgressMeter()

    def local(dyn, t0, t1, ts):
        field_dyn, means0, covs0 = dyn
        field = eqx.combine(field_dyn, field_static.tree)

        def one(f, m, c):
            return integrate_closure(f, m, c, t0, t1, ts, solver, rtol, atol, max_steps, thr, meter,
                              adjoint, time_scale=time_scale)

        axes = (0 if field_batched else None, 0 if state_batched else None,
                0 if state_batched else None)
        return eqx.filter_vmap(one, in_axes=axes)(field, means0, covs0)

    if mesh is None:
        return local(dyn, t0, t1, ts)
    P = jax.sharding.PartitionSpec
    field_dyn, means0, covs0 = dyn
    fspec = jax.tree_util.tree_map(lambda _: P(_AXIS) if field_batched else P(), field_dyn)
    sspec = P(_AXIS) if state_batched else P()
    return jax.shard_map(local, mesh=mesh, in_specs=((fspec, sspec, sspec), P(), P(), P()),
                         out_specs=P(_AXIS), check_vma=False)(dyn, t0, t1, ts)


_core_jit = jax.jit(_core, static_argnames=("static", "field_batched", "state_batched", "mesh"))


def _compiled(dyn, t0, t1, ts, static, field_batched, state_batched, mesh):
    """The compiled core for these shapes/options: `(executable, seconds spent compiling)`."""
    leaves, treedef = jax.tree_util.tree_flatten(dyn)
    key = (static, field_batched, state_batched, mesh, treedef, ts.shape,
           tuple((x.shape, str(x.dtype)) for x in leaves))
    hit = _COMPILED.get(key)
    if hit is not None:
        return hit, 0.0
    start = time.perf_counter()
    exe = _core_jit.lower(dyn, t0, t1, ts, static=static, field_batched=field_batched,
                          state_batched=state_batched, mesh=mesh).compile()
    _COMPILED[key] = exe
    return exe, time.perf_counter() - start


def cache_info() -> dict[str, int]:
    """`{"compilations": n, "traces": n}`: executables kept by `sweep`, and how many
    times its core has been traced in this process (equal unless the cache was cleared)."""
    return {"compilations": len(_COMPILED) + queue.cache_size(),
            "traces": _TRACES + queue.cache_size() + queue.cleared()}


def clear_cache() -> None:
    """Forget the compiled sweeps (the next call compiles again)."""
    _COMPILED.clear()
    queue.clear_cache()


# -------------------------------------------------------------------------------- arguments
def _stack(items):
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *items)


def _batch_fields(fields, d):
    """`(field, batched, B, name)`; a sequence is stacked along a new leading axis."""
    if isinstance(fields, (list, tuple)):
        if not fields:
            raise ValueError("fields is an empty sequence; pass at least one field")
        for i, f in enumerate(fields):
            if not isinstance(f, Field):
                raise TypeError(f"fields[{i}] must be a gaussflow field, got {type(f).__name__}")
        first = fields[0]
        s0 = eqx.partition(first, eqx.is_array)[1]
        for i, f in enumerate(fields[1:], 1):
            if type(f) is not type(first) or eqx.partition(f, eqx.is_array)[1] != s0 or \
                    jax.tree_util.tree_structure(f) != jax.tree_util.tree_structure(first):
                raise ValueError(f"fields[{i}] ({type(f).__name__}) does not match fields[0] "
                                 f"({type(first).__name__}): a sweep needs fields of one class "
                                 "with the same static data; sweep each kind separately")
            shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(f)]
            if shapes != [np.shape(x) for x in jax.tree_util.tree_leaves(first)]:
                raise ValueError(f"fields[{i}] has weights of other shapes than fields[0]; "
                                 "sweep fields of one shape together")
        arrays = [eqx.partition(f, eqx.is_array)[0] for f in fields]
        if first.dim != d:
            raise ValueError(f"the fields act on dimension {first.dim} but the states have "
                             f"dimension {d}")
        stacked = eqx.combine(_stack(arrays), s0)
        return stacked, True, len(fields), first.name
    if not isinstance(fields, Field):
        raise TypeError(f"fields must be a gaussflow field, a sequence of fields or a batched "
                        f"field, got {type(fields).__name__}")
    if getattr(fields, "time_dependent", False):
        raise ValueError("gf.sweep does not take gf.Layers schedules; call gf.solve per member")
    if _check_closure_shapes(fields, d, batched=False):
        return fields, False, None, fields.name
    sizes = {np.shape(x)[0] if np.ndim(x) else None
             for x in jax.tree_util.tree_leaves(eqx.filter(fields, eqx.is_array))}
    if len(sizes) != 1 or None in sizes or not _check_closure_shapes(fields, d, batched=True):
        raise ValueError(f"fields acts neither on dimension d = {d} (the states' dimension) nor "
                         "as a batched field (every array leaf with one leading batch axis, e.g. "
                         "jax.vmap(lambda Q: gf.Softmax(Q, -Q, V))(Qs))")
    return fields, True, sizes.pop(), fields.name


def _check_closure_shapes(field, d, batched) -> bool:
    """Whether `field._closure` maps a `(d,)` mean and `(d, d)` cov to `(d,), (d, d)`
    (per member when `batched`)."""
    m = jax.ShapeDtypeStruct((d,), jnp.float64)
    c = jax.ShapeDtypeStruct((d, d), jnp.float64)

    def clo(f):
        return f._closure(jnp.asarray(0.0), jnp.zeros(d), jnp.eye(d))

    try:
        if batched:
            out = jax.eval_shape(lambda f: eqx.filter_vmap(clo)(f), field)
            out = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), out)
        else:
            out = jax.eval_shape(clo, field)
    except Exception:  # noqa: BLE001 - wrong shapes surface as assorted errors
        return False
    dm, J = out
    return dm.shape == m.shape and J.shape == c.shape


def _batch_states(g0s):
    """`(means (B, d) or (d,), covs, batched, B, d)`."""
    if isinstance(g0s, Gaussian):
        mean, cov = np.asarray(g0s.mean), np.asarray(g0s.cov)
        if mean.ndim == 1:
            return mean, cov, False, None, mean.shape[0]
        if mean.ndim != 2 or cov.shape != mean.shape + mean.shape[-1:]:
            raise ValueError(f"a batched g0s needs mean (B, d) and cov (B, d, d), got "
                             f"{mean.shape} and {cov.shape}")
        check_batched_covs(cov)
        return mean, (cov + np.swapaxes(cov, -1, -2)) / 2, True, mean.shape[0], mean.shape[1]
    if isinstance(g0s, (list, tuple)):
        if not g0s:
            raise ValueError("g0s is an empty sequence; pass at least one gf.Gaussian")
        for i, g in enumerate(g0s):
            if not isinstance(g, Gaussian) or np.ndim(g.mean) != 1:
                raise TypeError(f"g0s[{i}] must be a gf.Gaussian, got {type(g).__name__}")
            if g.dim != g0s[0].dim:
                raise ValueError(f"g0s[{i}] has dimension {g.dim}, g0s[0] has {g0s[0].dim}; "
                                 "a sweep needs states of one dimension")
        means = np.stack([np.asarray(g.mean) for g in g0s])
        covs = np.stack([np.asarray(g.cov) for g in g0s])
        return means, covs, True, len(g0s), means.shape[1]
    raise TypeError(f"g0s must be a gf.Gaussian (possibly batched) or a sequence of them, got "
                    f"{type(g0s).__name__}")


def _take(tree, idx):
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[idx], tree)


# ------------------------------------------------------------------------------------ sweep
def sweep(fields: Field | Sequence[Field], g0s: Gaussian | Sequence[Gaussian], t1: float,
          ts: ArrayLike | None = None, *, t0: float = 0.0, rtol: float = 1e-8,
          atol: float = 1e-10, solver: diffrax.AbstractSolver | str | None = None,
          max_steps: int = 16384, blowup_threshold: float = 1e8, chunk_size: int | None = None,
          devices: Sequence[Any] | None = None, progress: bool = False,
          time_scale: str = "linear", first_pass_steps: int | None = None,
          tail_chunk_size: int | None = None, method: str | None = None,
          slots: int | None = None,
          stiff_solver: diffrax.AbstractSolver | str | None = "auto",
          stiff_steps: int | None = None, closed_form: str = "auto",
          last_resort: str | None = "lsoda", engine: str = "auto") -> SweepResult:
    """Integrate the Gaussian closures of a batch of fields and/or initial states.

    Parameters
    ----------
    fields : Field or sequence of Field
        One field (shared), a sequence of fields of one class and shape, or a batched field
        (array leaves with a leading batch axis).
    g0s : Gaussian or sequence of Gaussian
        One `gaussflow.Gaussian` (shared), a sequence of them, or a batched Gaussian. At least
        one of `fields`/`g0s` is batched; batch sizes must agree.
    t1, ts, t0, rtol, atol, solver, max_steps, blowup_threshold, time_scale
        As in `gaussflow.solve` (the same for every member).
    method : str, optional
        `"queue"` (default on one device: the refilling work queue of `gaussflow.queue`, a pool
        of `slots` member slots refilled as members finish) or `"vmap"` (default on several
        devices: chunks under `jax.vmap`, sharded over the devices with `jax.shard_map`; the
        queue does not shard yet and runs on the first device).
    chunk_size : int, optional
        Members placed on the device (NumPy engine: stepped) together (bounds memory).
        Default: queue, as many as keep the saved states under about 256 MB; vmap, 1024 (a
        vmapped chunk runs as many steps as its slowest member; rounded up to a multiple of the
        number of devices).
    slots : int, optional
        Queue only: the first pool's size (default `min(128, chunk_size)`; later pools
        `slots // 16`, ..., 1 hold the slow members once the queue is drained).
    devices : sequence of jax.Device, optional
        The devices to use (default all `jax.devices()`).
    progress : bool
        A tqdm bar over chunks (NumPy engine: over finished members; nothing is printed
        otherwise).
    engine : {"auto", "numpy", "jax"}
        Queue method only: who takes the explicit (Tsit5) steps. `"numpy"`: the NumPy engine
        (`gaussflow.numpy_engine`: every running member's step in whole-stack NumPy operations,
        no compilation; the fast choice on a CPU); `"jax"`: the compiled work queue of
        `gaussflow.queue`; `"auto"` (default): NumPy where it applies (a CPU, Tsit5, a field
        with a NumPy form, one Gaussian per member), else JAX.
    first_pass_steps, stiff_solver, stiff_steps
        Passes for the members that run out of steps (`gaussflow.passes`). Every member first
        runs with `solver` and `first_pass_steps` steps (default `max_steps`; with the NumPy
        engine `min(max_steps, 1024)`). Those that use them up (status `"max_steps"`) run again
        from the start with `stiff_solver` (`"auto"`, the default: `"lsoda"` with the NumPy
        engine, else `"kvaerno5"`; `"lsoda"`: SciPy's LSODA as below; a diffrax solver or its
        name: implicit ones such as Kvaerno5 on the JAX work queue; stiff members need an
        implicit solver, not a bigger explicit budget; `None` to skip, skipped too when
        `solver` is that solver) and `stiff_steps`
        steps (default `max_steps`); those that use these up as well (not stiff, just many
        steps) run again with `solver` and `max_steps` (only when
        `first_pass_steps < max_steps`; then results are those of one pass with `max_steps`: a
        member's steps do not depend on its budget). Each member's result is that of its last
        pass; `SweepResult.solvers` names the solver of that pass.
    last_resort : str or None
        `"lsoda"` (default): members that still end `"max_steps"` after those passes are run
        once more, one by one, by SciPy's LSODA (`gaussflow.lsoda`: Adams/BDF switching by
        stiffness, `max_steps` steps, the same events and save times; `solvers[i] == "lsoda"`);
        `None`: not (they keep the status `"max_steps"`).
    tail_chunk_size : int, optional
        Vmap only: chunk size of the rerun members (default `chunk_size // 4`).
    closed_form : str
        As in `gaussflow.solve`, per member: with `"auto"` the members for which the closed
        form holds are evaluated (`gaussflow.closed_form`; `solvers[i] == "closed_form"`,
        `num_steps[i] == 0`) and the others integrated; `method` is then `"closed_form"`, or
        e.g. `"queue+closed_form"` when both kinds occur.

    Returns
    -------
    SweepResult
        Member `i` equals `gf.solve(fields[i], g0s[i], ..., solver=result.solvers[i])`. Never
        raises on numerical events (per-member statuses).

    Raises
    ------
    TypeError, ValueError
        For invalid arguments: nothing batched, batch sizes that differ, bad options.
    """
    means0, covs0, state_batched, B_state, d = _batch_states(g0s)
    field, field_batched, B_field, name = _batch_fields(fields, d)
    if not (field_batched or state_batched):
        raise ValueError("nothing to sweep: pass a sequence or batch of fields or of initial "
                         "states (for one flow use gf.solve)")
    if field_batched and state_batched and B_field != B_state:
        raise ValueError(f"fields has {B_field} members but g0s has {B_state}; pass batches of "
                         "one size (or a single field / single state to share)")
    B = B_field if field_batched else B_state
    t0, t1, ts_arr = check_times(t0, t1, ts)
    rtol, atol, thr = check_solver_options(rtol, atol, blowup_threshold, max_steps)
    positive_int("chunk_size", chunk_size, allow_none=True)
    positive_int("slots", slots, allow_none=True)
    if time_scale not in TIME_SCALES:
        raise ValueError(f"time_scale must be one of {TIME_SCALES}, got {time_scale!r}")
    first = positive_int("first_pass_steps", first_pass_steps, allow_none=True)
    tail_chunk_size = positive_int("tail_chunk_size", tail_chunk_size, allow_none=True)
    stiff_steps = positive_int("stiff_steps", stiff_steps, allow_none=True)
    if last_resort not in (None, "lsoda"):
        raise ValueError(f"last_resort must be 'lsoda' or None, got {last_resort!r}")
    passes = [int(max_steps)] if first is None or first >= max_steps else [first, int(max_steps)]
    solver = resolve_solver(solver)
    if ts_arr is None:
        ts_arr = np.linspace(t0, t1, 101)
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices is empty; pass None to use every device")
    ndev = len(devices)
    if method is None:
        method = "queue" if ndev == 1 else "vmap"
    if method not in ("queue", "vmap"):
        raise ValueError(f"method must be 'queue' or 'vmap', got {method!r}")
    use_numpy = numpy_engine.choose(engine, field, field_batched, solver, np.ndim(covs0),
                                    state_batched, method, devices[0])
    if stiff_solver == "auto":
        stiff_solver = "lsoda" if use_numpy else "kvaerno5"
    stiff = stiff_solver if stiff_solver in (None, "lsoda") else resolve_solver(stiff_solver)
    if isinstance(stiff, diffrax.AbstractSolver) and type(stiff) is type(solver):
        stiff = None
    if use_numpy and first is None:
        first = min(int(max_steps), numpy_engine.FIRST_PASS_STEPS)
    cache.ensure_enabled()  # the persistent compilation cache, once per process
    sp = None
    if _cf_mod.check_mode(closed_form) != "never":
        sp, field, means0, covs0 = cf_sweep.split(closed_form, field, field_batched, means0, covs0,
                                                 state_batched, B, ts_arr, t0, t1, thr)
        if sp.rest.size == 0:
            raw, solvers = cf_sweep.merge(sp, None, None)
            return result_from_raw(raw, ts_arr, t0, name, 0.0, sp.seconds, 1, B, solvers, "closed_form")
        B = len(sp.rest)

    def result(raw, compile_s, run_s, ndev, chunk, solvers, method):
        if sp is not None and sp.cf.size:
            raw, solvers = cf_sweep.merge(sp, raw, solvers)
            run_s, method = run_s + sp.seconds, method + "+closed_form"
        return result_from_raw(raw, ts_arr, t0, name, compile_s, run_s, ndev, chunk, solvers, method)
    if method == "queue":

        raw, compile_s, run_s, chunk, solvers = sweep_queue(
            field, field_batched, means0, covs0, state_batched, B, d, ts_arr,
            (t0, t1, thr), solver, stiff, (rtol, atol, int(max_steps), first, stiff_steps,
                                           time_scale), chunk_size, slots, devices[0],
            progress, last_resort, use_numpy)
        return result(raw, compile_s, run_s, 1, chunk, solvers, "queue")
    if chunk_size is None:
        chunk_size = 1024
    mesh = jax.sharding.Mesh(np.array(devices), (_AXIS,)) if ndev > 1 else None
    chunk = -(-min(int(chunk_size), B) // ndev) * ndev

    field_dyn, field_static = eqx.partition(field, eqx.is_array)
    field_static = StaticKey(field_static)
    targs = (jnp.asarray(t0), jnp.asarray(t1), jnp.asarray(ts_arr))
    if mesh is not None:
        rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        targs = tuple(jax.device_put(a, rep) for a in targs)

    def place(x, batched):
        if mesh is None:
            return jnp.asarray(x)
        spec = jax.sharding.PartitionSpec(_AXIS) if batched else jax.sharding.PartitionSpec()
        return jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))

    def run(members, chunk, steps, solver):
        """Raw outputs of `members` (indices), in chunks of `chunk` with budget `steps`."""
        static = (field_static, solver, rtol, atol, steps, thr,
                  diffrax.RecursiveCheckpointAdjoint(), time_scale)
        starts = range(0, len(members), chunk)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"sweep {name}", unit="chunk")
        outs, compile_s, run_s = [], 0.0, 0.0
        for s in starts:
            # pad with the last member
            idx = members[np.minimum(np.arange(s, s + chunk), len(members) - 1)]
            fd = _take(field_dyn, idx) if field_batched else field_dyn
            m0, c0 = (means0[idx], covs0[idx]) if state_batched else (means0, covs0)
            dyn = (jax.tree_util.tree_map(lambda x: place(x, field_batched), fd),
                   place(m0, state_batched), place(c0, state_batched))
            exe, dt = _compiled(dyn, *targs, static, field_batched, state_batched, mesh)
            compile_s += dt
            start = time.perf_counter()
            out = jax.device_get(exe(dyn, *targs))
            run_s += time.perf_counter() - start
            n = min(chunk, len(members) - s)
            outs.append({k: np.asarray(v)[:n] for k, v in out.items()})
        raw = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
        return raw, compile_s, run_s

    def run_pass(members, solver, steps, first_pass):
        c = chunk
        if not first_pass:
            c = chunk // 4 if tail_chunk_size is None else int(tail_chunk_size)
            c = -(-min(max(c, 1), len(members)) // ndev) * ndev
        return run(members, c, steps, solver)

    passes_ = schedule(solver, stiff, passes[0], stiff_steps, int(max_steps))

    def run_lsoda(members, steps=int(max_steps)):
        return lsoda.lsoda_members(field, field_batched, means0, covs0, state_batched, members,
                                   (t0, t1, thr), ts_arr, rtol, atol, steps)

    fallback = None if last_resort is None else (lsoda.NAME, run_lsoda)
    raw, solvers, compile_s, run_s = run_schedule(passes_, B, run_pass, fallback,
                                                  {lsoda.NAME: run_lsoda})
    return result(raw, compile_s, run_s, ndev, chunk, solvers, "vmap")
