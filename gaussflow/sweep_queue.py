"""`gf.sweep` on one device: the passes of `gaussflow.passes` run by the NumPy engine
(`gaussflow.numpy_engine`), the JAX work queue (`gaussflow.queue`) and LSODA (`gaussflow.lsoda`).
"""

from __future__ import annotations

from typing import Any

import diffrax
import equinox as eqx
import jax
import numpy as np

from . import lsoda, numpy_engine, queue
from .field import StaticKey
from .passes import pow2_at_most, run_schedule, schedule
from .stepping import end_clip_floor

__all__ = ["sweep_queue"]


def sweep_queue(field: Any, field_batched: bool, means0: np.ndarray, covs0: np.ndarray,
                state_batched: bool, B: int, d: int, ts_arr: np.ndarray,
                times: tuple[float, float, float], solver: diffrax.AbstractSolver,
                stiff: diffrax.AbstractSolver | str | None, opts: tuple, chunk_size: int | None,
                slots: int | None, device: Any, progress: bool = False,
                last_resort: str | None = "lsoda", use_numpy: bool = False
                ) -> tuple[dict[str, np.ndarray], float, float, int, np.ndarray]:
    """`gf.sweep`'s queue path (one device): the passes of `gaussflow.passes`, each
    through `run`.

    `times` is `(t0, t1, blowup threshold)`, `opts` is
    `(rtol, atol, max_steps, first_pass_steps, stiff_steps, time_scale)`; the other arguments
    are `gaussflow.sweep`'s after checking and batching (`last_resort`: `"lsoda"` runs the
    members still `"max_steps"` after the passes by `gaussflow.lsoda`). Returns
    `(raw, compile seconds, run seconds, chunk size, solver names)`, which `gaussflow.sweep`
    turns into its result.
    """
    t0, t1, thr = times
    rtol, atol, max_steps, first, stiff_steps, time_scale = opts
    budget = max_steps if first is None else min(first, max_steps)
    n_ts = len(ts_arr)
    if chunk_size is None:  # saved states of a chunk under about 256 MB
        chunk_size = max(1, 2**25 // (n_ts * (1 + d + d * d)))
    chunk = min(int(chunk_size), B)
    if not state_batched:
        means0 = np.broadcast_to(means0, (B,) + means0.shape)
        covs0 = np.broadcast_to(covs0, (B,) + covs0.shape)
    field_dyn, field_static = eqx.partition(field, eqx.is_array)
    log = time_scale == "log"
    to_s = (lambda t: np.log1p(t - t0)) if log else (lambda t: t)
    s1 = float(to_s(t1))
    floor = end_clip_floor(s1)  # diffrax's end-time clipping threshold
    targs = dict(t0=t0, t1=t1, s0=float(to_s(t0)), s1=s1, floor=floor, thr=thr,
                 ts_s=to_s(np.asarray(ts_arr, float)), ts_t=np.asarray(ts_arr, float))
    with jax.default_device(device):
        nslots = min(128 if slots is None else int(slots), chunk)

        sf = numpy_engine.stacked_field(field, field_batched) if use_numpy else None

        def run_lsoda(m, steps=max_steps):
            return lsoda.lsoda_members(field, field_batched, means0, covs0, True, m, times, ts_arr,
                                       rtol, atol, steps, stacked=sf)

        def run_pass(members, solver, steps, first_pass):
            if sf is not None and isinstance(solver, diffrax.Tsit5):
                raw, run_s = numpy_engine.run(sf, means0, covs0, members, times, ts_arr, rtol,
                                              atol, steps, time_scale, chunk=chunk,
                                              progress=progress)
                return raw, 0.0, run_s
            eng = queue.Engine(StaticKey(field_static), field_batched, solver, rtol, atol, steps, time_scale)
            c = chunk if first_pass else pow2_at_most(len(members), chunk)
            return queue.run(eng, field_dyn, means0, covs0, targs, chunk=c, slots=min(nslots, c),
                       members=members, progress=progress)

        passes = schedule(solver, stiff, budget, stiff_steps, max_steps)
        fallback = None if last_resort is None else (lsoda.NAME, run_lsoda)
        raw, solvers, compile_s, run_s = run_schedule(passes, B, run_pass, fallback,
                                                      {lsoda.NAME: run_lsoda})
    return raw, compile_s, run_s, chunk, solvers
