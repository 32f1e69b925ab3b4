"""Benchmark 9: how ``gf.sweep`` scales with the number of members and with d.

The random softmax flows of benchmark 3 (``Q, K, V`` entries N(0, 1/d), ``beta = 1/sqrt(d)``,
``t1 = 0.5``, 11 save times, rtol 1e-8, atol 1e-10; the default sweep: the NumPy engine's Tsit5
with 1,024 steps, then LSODA for the members that use them up, ``max_steps = 65,536``; with
``ENGINE = "jax"`` the JAX work queue, ``first_pass_steps = 4096``, no implicit pass, a last
explicit pass of up to 65,536 steps): 1,000 / 10,000 / 100,000 members at
d = 5, and 1,000 members at d = 3, 4, 6, 8, 12, 16. Each row: the first call (with compilation),
the second (compiled), us per member-step (run seconds over the sum of ``num_steps``), the step
counts and the statuses. The "ratio" is the per-member-step cost at 1,000 members over that at
the largest count (>= 1: the queue's fixed costs are amortised as the sweep grows).
"""

from __future__ import annotations

import time

import jax
import numpy as np

import gaussflow as gf

from . import print_table
from .many_flows import FIRST, MAX_STEPS, T1, problem

TITLE = "gf.sweep: scaling with members (1k, 10k, 100k at d = 5) and d (3..16)"
#: The engine measured: "auto" (the NumPy engine here) or "jax" (the compiled work queue).
ENGINE = "auto"
TARGET = "cost per member-step flat or falling with the number of members (reported)"


def _row(d, n, chunk=None):
    Q, K, V, m0, S0 = problem(n, d)
    beta = 1 / np.sqrt(d)
    fields = jax.vmap(lambda q, k, v: gf.Softmax(q, k, v, beta=beta))(Q, K, V)
    g0s = jax.vmap(gf.Gaussian)(m0, S0)
    ts = np.linspace(0, T1, 11)
    opts = dict(max_steps=MAX_STEPS, chunk_size=chunk)
    if ENGINE == "jax":
        opts.update(engine="jax", first_pass_steps=FIRST, stiff_solver=None)
    start = time.perf_counter()
    first = gf.sweep(fields, g0s, T1, ts, **opts)
    t_first = time.perf_counter() - start
    start = time.perf_counter()
    res = gf.sweep(fields, g0s, T1, ts, **opts)
    t_warm = time.perf_counter() - start
    steps = res.num_steps
    return {"d": d, "members": n, "s incl. compile": t_first, "compile s": first.compile_seconds,
            "s compiled": t_warm, "us per member-step": 1e6 * res.run_seconds / steps.sum(),
            "us per member": 1e6 * t_warm / n,
            "steps median/p99/max": "/".join(f"{v:.0f}" for v in (
                np.median(steps), np.percentile(steps, 99), steps.max())),
            "statuses": ", ".join(f"{s}: {c}" for s, c in res.counts().items()),
            "finished by": ", ".join(f"{s}: {c}" for s, c in zip(
                *np.unique(res.solvers, return_counts=True)))}


def run(quick=False):
    """Quick (the test suite): 16 and 32 members at d = 5 in chunks of 16 (one compilation)."""
    counts = (16, 32) if quick else (1000, 10000, 100000)
    dims = () if quick else (3, 4, 6, 8, 12, 16)
    rows = [_row(5, n, 16 if quick else None) for n in counts]
    rows += [_row(d, counts[0]) for d in dims]
    print_table(rows, list(rows[0]))
    by_n = [r for r in rows if r["d"] == 5]
    ratio = by_n[0]["us per member-step"] / by_n[-1]["us per member-step"]
    return {"ratio": ratio, "ratio_of": f"us per member-step at {counts[0]} members / at "
            f"{counts[-1]} (d = 5)", "rows": rows}
