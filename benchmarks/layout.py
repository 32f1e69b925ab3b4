"""Benchmark 8: the right-hand side's product layout by dimension, in a many-member sweep.

The generated code multiplies matrices through ``gaussflow.codegen.compile.matmul_by_size``:
``k`` broadcast multiply-adds when the inner dimension ``k <= UNROLL_MAX``, ``A @ B`` above.
Under ``jax.vmap`` (a sweep) XLA on CPU runs batches of small ``A @ B`` slowly; this benchmark
measures both layouts side by side in one process:

- **RHS**: the softmax ``flow_rhs`` (random weights, ``M`` members, vmapped) of
  ``Derivation.functions`` (layout by size) and ``Derivation.matmul_functions`` (every product
  ``@``), each inside one jitted ``lax.fori_loop`` of 20 Euler-like updates; ns per member and
  evaluation, median of 5 interleaved repeats, d = 2 .. 16;
- **sweep**: ``gf.sweep(engine="jax")`` (the compiled work queue, whose right-hand side this
  layout is for) of the random softmax flows of benchmark 3 (``t1 = 0.5``), with the
  layout by size and with ``UNROLL_MAX = 0`` (every product ``@``), compiled run time (second
  call) and us per member-step; the largest relative difference of the final covariances over
  the members both complete, and the number of members with equal statuses.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import gaussflow as gf
import gaussflow.codegen.compile as cg
from gaussflow import queue

from . import median_time, print_table
from .many_flows import FIRST, MAX_STEPS, T1, problem

TITLE = "RHS product layout by dimension: multiply-adds vs batched matmul (vmapped, CPU)"
TARGET = "layout by size >= 1x all-matmul at every d (the threshold UNROLL_MAX is right)"
STEPS = 20


def _rhs_loop(fn, d):
    def one(m, P, S0, Q, K, V, W, beta):
        def body(_, y):
            dm, dP = fn(0.0, y[0], y[1], S0, Q, K, V, W, beta)
            return y[0] + 1e-3 * dm, y[1] + 1e-3 * dP
        return jax.lax.fori_loop(0, STEPS, body, (m, P))
    return jax.jit(jax.vmap(one))


def rhs_rows(dims, members):
    D = gf.Softmax.derivation()
    rows = []
    for d in dims:
        rng = np.random.default_rng(d)
        s = 1 / np.sqrt(d)
        mk = lambda *shape: jnp.asarray(rng.normal(size=(members,) + shape) * s)  # noqa: E731
        args = (mk(d, 1), jnp.broadcast_to(jnp.eye(d), (members, d, d)), mk(d, d) @ jnp.swapaxes(
            mk(d, d), 1, 2) + 0.1 * jnp.eye(d), mk(d, d), mk(d, d), mk(d, d),
            jnp.broadcast_to(jnp.eye(d), (members, d, d)), jnp.full((members,), s))
        by_size, matmul = (_rhs_loop(D.functions["flow_rhs"], d),
                           _rhs_loop(D.matmul_functions["flow_rhs"], d))
        a, b = by_size(*args), matmul(*args)  # compile both
        diff = float(max(jnp.max(jnp.abs(x - y)) for x, y in zip(a, b)))
        ts = {"by size": [], "matmul": []}
        for _ in range(5):  # interleaved
            for name, f in (("by size", by_size), ("matmul", matmul)):
                ts[name].append(median_time(lambda: f(*args), repeats=1,
                                            block=jax.block_until_ready))
        t_by, t_mm = np.median(ts["by size"]), np.median(ts["matmul"])
        per = 1e9 / (members * STEPS)
        rows.append({"d": d, "layout chosen": "multiply-adds" if d <= cg.UNROLL_MAX else "matmul",
                     "by size ns/eval": t_by * per, "matmul ns/eval": t_mm * per,
                     "speed-up": t_mm / t_by, "max diff": diff})
    return rows


def _sweep(d, n, unroll_max):
    Q, K, V, m0, S0 = problem(n, d)
    beta = 1 / np.sqrt(d)
    fields = jax.vmap(lambda q, k, v: gf.Softmax(q, k, v, beta=beta))(Q, K, V)
    g0s = jax.vmap(gf.Gaussian)(m0, S0)
    ts = np.linspace(0, T1, 11)
    old = cg.UNROLL_MAX
    cg.UNROLL_MAX = unroll_max
    queue.clear_cache()
    jax.clear_caches()
    try:
        opts = dict(engine="jax", max_steps=MAX_STEPS, first_pass_steps=FIRST, stiff_solver=None)
        gf.sweep(fields, g0s, T1, ts, **opts)  # compile
        start = time.perf_counter()
        res = gf.sweep(fields, g0s, T1, ts, **opts)
        wall = time.perf_counter() - start
    finally:
        cg.UNROLL_MAX = old
        queue.clear_cache()
        jax.clear_caches()
    return res, wall


def sweep_rows(dims, n):
    rows = []
    for d in dims:
        a, wa = _sweep(d, n, cg.UNROLL_MAX)
        b, wb = _sweep(d, n, 0)
        both = (a.status == "completed") & (b.status == "completed")
        ca, cb = a.final_covs[both], b.final_covs[both]
        diff = float(np.max(np.abs(ca - cb).max(axis=(1, 2)) / np.abs(cb).max(axis=(1, 2))))
        rows.append({"d": d, "flows": n, "by size s": wa, "matmul s": wb, "speed-up": wb / wa,
                     "by size us/member-step": 1e6 * a.run_seconds / a.num_steps.sum(),
                     "matmul us/member-step": 1e6 * b.run_seconds / b.num_steps.sum(),
                     "max rel diff (completed)": diff,
                     "statuses equal": int(np.sum(a.status == b.status))})
    return rows


def run(quick=False):
    """Full: both parts. Quick (the test suite): the RHS part at d = 3, 8 only (the sweep part
    clears JAX's caches, which would cost the rest of a test process its compilations)."""
    dims = (3, 8) if quick else (2, 3, 4, 5, 6, 7, 8, 10, 12, 16)
    rows = rhs_rows(dims, 32 if quick else 1024)
    print_table(rows, list(rows[0]))
    if quick:
        small = [r["speed-up"] for r in rows if r["d"] <= cg.UNROLL_MAX]
        return {"ratio": min(small), "ratio_of": "all-matmul RHS / layout-by-size RHS, "
                f"worst d <= {cg.UNROLL_MAX}", "rhs": rows}
    srows = sweep_rows((3, 4, 5, 6, 8), 2000)
    print()
    print_table(srows, list(srows[0]))
    small = [r["speed-up"] for r in srows if r["d"] <= cg.UNROLL_MAX]
    return {"ratio": min(small), "ratio_of": "all-matmul sweep / layout-by-size sweep, compiled, "
            f"worst d <= {cg.UNROLL_MAX}", "rhs": rows, "sweep": srows}
