"""`gf.sweep`'s use of the closed form: the members that have one are evaluated
(`gaussflow.closed_form`), the others integrated, and the two merged back in member order."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .closed_form import evaluate, plan, subset

if TYPE_CHECKING:
    from jax.typing import ArrayLike

    from .field import Field

__all__ = ["Split", "split", "merge"]


@dataclass(frozen=True)
class Split:
    """The members of a sweep evaluated in closed form (`cf`, raw outputs `raw`) and the
    others (`rest`, to integrate); `seconds` spent checking and evaluating."""

    B: int
    cf: np.ndarray
    rest: np.ndarray
    raw: dict | None
    seconds: float


def split(mode: str, field: Field, field_batched: bool, means0: ArrayLike, covs0: ArrayLike,
          state_batched: bool, B: int, ts: ArrayLike, t0: float, t1: float,
          thr: float) -> tuple[Split, Field, ArrayLike, ArrayLike]:
    """Evaluate the eligible members of a sweep; `(Split, field, means0, covs0)` with the field
    and states restricted to the members left to integrate.

    Parameters
    ----------
    mode : str
        `"auto"` or `"always"` (then a `ValueError` names the first member that is not
        eligible and why).
    field, field_batched, means0, covs0, state_batched, B, ts, t0, t1, thr
        As in `plan` and `evaluate`.

    Returns
    -------
    tuple
        `(Split, field, means0, covs0)`.
    """
    start = time.perf_counter()
    p = plan(field, field_batched, means0, covs0, state_batched, B, t0, t1)
    if mode == "always" and not p.eligible.all():
        i = int(np.argmin(p.eligible))
        raise ValueError(f"closed_form='always': member {i}: {p.reasons[i]}; pass "
                         "closed_form='auto' to integrate the members without a closed form")
    cf, rest = np.flatnonzero(p.eligible), np.flatnonzero(~p.eligible)
    raw = evaluate(p, cf, means0, covs0, state_batched, ts, t0, t1, thr) if cf.size else None
    sp = Split(B, cf, rest, raw, time.perf_counter() - start)
    if cf.size and rest.size:
        field = subset(field, field_batched, rest)
        if state_batched:
            means0, covs0 = np.asarray(means0)[rest], np.asarray(covs0)[rest]
    return sp, field, means0, covs0


def merge(sp: Split, raw_rest: dict | None,
          solvers_rest: ArrayLike | None) -> tuple[dict, np.ndarray]:
    """`(raw, solvers)` of all `sp.B` members: the closed-form ones (solver
    `"closed_form"`) and the integrated ones, in member order."""
    solvers = np.full(sp.B, "closed_form", dtype=object)
    if raw_rest is None:
        return sp.raw, solvers
    solvers[sp.rest] = np.asarray(solvers_rest, dtype=object)
    out = {}
    for k, a in raw_rest.items():
        a, b = np.asarray(a), np.asarray(sp.raw[k])
        if a.ndim > 1 and b.shape[1] < a.shape[1]:  # saved-time axis: pad as not reached
            pad = [(0, 0), (0, a.shape[1] - b.shape[1])] + [(0, 0)] * (a.ndim - 2)
            b = np.pad(b, pad, constant_values=np.inf)
        full = np.empty((sp.B,) + a.shape[1:], dtype=np.result_type(a, b))
        full[sp.rest], full[sp.cf] = a, b
        out[k] = full
    return out, solvers
