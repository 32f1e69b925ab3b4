"""The passes of a sweep: members that run out of steps are run again.

A sweep first runs every member with its solver and a first budget; the members whose status is
``"max_steps"`` run again from the start with the stiff (implicit) solver, and those that run
out again (not stiff: just many steps) with the first solver and the full budget. Shared by the
work queue (:mod:`gaussflow.queue`) and the vmapped path of :func:`gaussflow.sweep`.
"""

from __future__ import annotations

import numpy as np

from .integrate import status_of

#: The raw outputs ``solve.status_of`` reads.
SCALARS = ("event_nonfinite", "event_blowup", "event_domain", "event_escape", "result",
           "finite_ahead")


def schedule(solver, stiff, budget, stiff_steps, max_steps):
    """``[(solver, step budget), ...]``: the first pass runs every member, each later pass the
    members whose status after the previous one is ``"max_steps"``."""
    out = [(solver, budget)]
    if stiff is not None:
        out.append((stiff, max_steps if stiff_steps is None else stiff_steps))
    if budget < max_steps:
        out.append((solver, max_steps))
    return out


def run_schedule(schedule, B, run_pass):
    """Run the passes of :func:`schedule`; ``run_pass(members, solver, steps, first)`` returns
    ``(raw, compile s, run s)``. Returns ``(raw, solver names, compile s, run s)``."""
    members, raw, solvers, compile_s, run_s = np.arange(B), None, None, 0.0, 0.0
    for k, (solver, steps) in enumerate(schedule):
        if k and not members.size:
            break
        got, c, r = run_pass(members, solver, steps, k == 0)
        compile_s, run_s = compile_s + c, run_s + r
        if raw is None:
            raw, solvers = got, np.full(B, solver_name(solver), dtype=object)
        else:
            for key in raw:
                raw[key][members] = got[key]
            solvers[members] = solver_name(solver)
        members = members[used_up(got)]
    return raw, solvers, compile_s, run_s


def solver_name(solver) -> str:
    """``"tsit5"``, ``"kvaerno5"``, ...: the lower-cased class name."""
    return type(solver).__name__.lower()


def used_up(raw) -> np.ndarray:
    """Indices of the members whose status is ``"max_steps"``."""
    status = [status_of({k: raw[k][i] for k in SCALARS}) for i in range(len(raw["t_stop"]))]
    return np.flatnonzero(np.array(status) == "max_steps")


def pow2_at_most(n, cap):
    """The least power of two >= n, at most ``cap`` (few distinct buffer shapes: few
    compilations)."""
    return int(min(cap, 1 << max(0, int(n) - 1).bit_length()))
