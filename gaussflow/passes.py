"""The passes of a sweep: members that run out of steps are run again.

A sweep first runs every member with its solver and a first budget; the members whose status is
`"max_steps"` run again from the start with the stiff (implicit) solver, and those that run
out again (not stiff: just many steps) with the first solver and the full budget. Shared by the
work queue (`gaussflow.queue`) and the vmapped path of `gaussflow.sweep`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import time
from typing import Any

import diffrax
import numpy as np

from .integrate import statuses_of

#: The raw outputs `statuses_of` (`gaussflow.integrate`) reads.
SCALARS = ("event_nonfinite", "event_blowup", "event_domain", "event_escape", "result",
           "finite_ahead")


def schedule(solver: diffrax.AbstractSolver, stiff: diffrax.AbstractSolver | str | None,
             budget: int,
             stiff_steps: int | None,
             max_steps: int) -> list[tuple[diffrax.AbstractSolver, int]]:
    """`[(solver, step budget), ...]`: the first pass runs every member, each later pass the
    members whose status after the previous one is `"max_steps"`.

    Parameters
    ----------
    solver : diffrax.AbstractSolver
        The solver of the first pass, and of the last when `budget < max_steps`.
    stiff : diffrax.AbstractSolver, str or None
        The stiff (implicit) solver of the second pass (`"lsoda"`: SciPy's LSODA,
        `gaussflow.lsoda`); `None`: no such pass.
    budget : int
        The step budget of the first pass.
    stiff_steps : int or None
        The step budget of the stiff pass; `None`: `max_steps`.
    max_steps : int
        The full budget; a last pass with `solver` and `max_steps` when `budget < max_steps`.

    Returns
    -------
    list of (diffrax.AbstractSolver, int)
        The passes in order.
    """
    out = [(solver, budget)]
    if stiff is not None:
        out.append((stiff, max_steps if stiff_steps is None else stiff_steps))
    if budget < max_steps:
        out.append((solver, max_steps))
    return out


def run_schedule(schedule: Sequence[tuple[diffrax.AbstractSolver, int]], B: int,
                 run_pass: Callable[..., tuple[dict[str, np.ndarray], float, float]],
                 last_resort: tuple[str, Callable[[np.ndarray], dict[str, np.ndarray]]]
                 | None = None,
                 runners: Mapping[str, Callable[[np.ndarray, int], dict[str, np.ndarray]]]
                 | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, float, float]:
    """Run the passes of `schedule`.

    Parameters
    ----------
    schedule : sequence of (diffrax.AbstractSolver, int)
        The passes, as `schedule` returns them.
    B : int
        The number of members.
    run_pass : callable
        `run_pass(members, solver, steps, first)` runs the members with indices `members` and
        returns `(raw, compile s, run s)`; `first` is `True` on the first pass.
    last_resort : (str, callable), optional
        `(name, run)`: the members still `"max_steps"` after the passes are run again by
        `run(members)` (raw outputs of those members; its time counts as run time), e.g.
        SciPy's LSODA (`gaussflow.lsoda`); their solver name is `name`. Skipped when a pass of
        the schedule was that solver already.
    runners : mapping of str to callable, optional
        The runners of the passes named by a string (e.g. `"lsoda"` as the stiff pass):
        `runners[name](members, steps)` returns their raw outputs (its time counts as run time);
        `run_pass` runs the others.

    Returns
    -------
    tuple
        `(raw, solver names, compile s, run s)`: the raw outputs of every member from its last
        pass, the name of the solver of that pass per member (`solver_name`) and the summed
        seconds.
    """
    members, raw, solvers, compile_s, run_s = np.arange(B), None, None, 0.0, 0.0
    for k, (solver, steps) in enumerate(schedule):
        if k and not members.size:
            break
        if isinstance(solver, str):
            start = time.perf_counter()
            got, c, r = runners[solver](members, steps), 0.0, time.perf_counter() - start
        else:
            got, c, r = run_pass(members, solver, steps, k == 0)
        compile_s, run_s = compile_s + c, run_s + r
        if raw is None:
            raw, solvers = got, np.full(B, solver_name(solver), dtype=object)
        else:
            for key in raw:
                raw[key][members] = got[key]
            solvers[members] = solver_name(solver)
        members = members[used_up(got)]
    ran = {solver for solver, _ in schedule if isinstance(solver, str)}
    if last_resort is not None and last_resort[0] not in ran and members.size and raw is not None:
        name, run = last_resort
        start = time.perf_counter()
        got = run(members)
        run_s += time.perf_counter() - start
        for key in raw:
            raw[key][members] = got[key]
        solvers[members] = name
    return raw, solvers, compile_s, run_s


def solver_name(solver: diffrax.AbstractSolver | str) -> str:
    """`"tsit5"`, `"kvaerno5"`, ...: the lower-cased class name (a pass named by a string, such
    as `"lsoda"`, keeps its name)."""
    return solver if isinstance(solver, str) else type(solver).__name__.lower()


def used_up(raw: Mapping[str, Any]) -> np.ndarray:
    """Indices of the members whose status is `"max_steps"`."""
    return np.flatnonzero(statuses_of({k: raw[k] for k in SCALARS}) == "max_steps")


def pow2_at_most(n: int, cap: int) -> int:
    r"""The least power of two $\geq n$, at most `cap` (few distinct buffer shapes: few
    compilations)."""
    return int(min(cap, 1 << max(0, int(n) - 1).bit_length()))
