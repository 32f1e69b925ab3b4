"""Benchmark 3: many softmax flows (d = 5 and d = 8): ``gf.sweep`` on its engines, the vmapped
``gf.sweep`` and a ``scipy.integrate.solve_ivp`` loop, side by side in one process.

Random weights ``Q, K, V`` (entries N(0, 1/d)), ``beta = 1/sqrt(d)``, random initial states
(mean N(0, I), ``Sigma0 = G G^T / d + 0.1 I``), ``t1 = 0.5``, 11 save times, rtol 1e-8, atol
1e-10. Step counts are heavy-tailed (most members need about ten steps; at d = 5 one member of
2,000 needs 30,000: one eigenvalue of Sigma grows to ~1e7 while another collapses).

- **numpy** (the default: ``method="queue"``, ``engine="auto"``, which picks the NumPy engine
  on a CPU): every running member's Tsit5 step in whole-stack NumPy operations, no compilation;
  its default schedule: 1,024 explicit steps, then the members that used them up run by LSODA
  (NumPy right-hand side and Jacobian). Timed first in the process, so its "incl. compile"
  figure holds the one-time costs (the softmax derivation and its generated programs).
- **jax queue** (``engine="jax"``): the compiled work queue, a pool of slots refilled as members
  finish, survivors moved to smaller pools; ``first_pass_steps = FIRST`` explicit (Tsit5) steps,
  then the members that used them up rerun with Kvaerno5 (``stiff_steps = FIRST``), then those
  that used these up too with Tsit5 and ``MAX_STEPS``. Also without the implicit pass
  (``stiff_solver=None``), to show what it costs.
- **vmap** (``method="vmap"``, the previous default): chunks under ``jax.vmap``; a chunk runs as
  many steps as its slowest member, so a two-pass schedule: a budget of ``VMAP_FIRST`` steps in
  chunks of ``VMAP_CHUNK``, then the members that used it up in chunks of ``VMAP_TAIL`` with
  ``MAX_STEPS`` (no implicit pass).
- **scipy**: the same moment ODE ``(mean, Sigma)`` with a NumPy right-hand side and
  ``solve_ivp`` (RK45, same tolerances, a terminal event when ``tr Sigma`` exceeds 1e8 times its
  initial value), on every member (quick run: the first 4, extrapolated; a linear extrapolation
  from a subset misses the heavy tail). Final covariances are compared with the sweeps'.

Each sweep is timed twice: the first call includes compilation (end to end), the second reuses
it (compiled). ``us per member-step``: run seconds over the steps the members needed (the sum of
``num_steps``; for the vmapped path it includes the steps of members waiting on their chunk's
slowest, for the queue the idle slots).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from scipy.integrate import solve_ivp

import gaussflow as gf

from . import print_table

TITLE = ("2,000 softmax flows at d = 5 and d = 8: gf.sweep (NumPy engine, JAX queue, vmapped) "
         "vs solve_ivp")
TARGET = ">= 200x"
T1 = 0.5
#: Step budgets: explicit first pass and implicit rerun (``FIRST``), last explicit pass
#: (``MAX_STEPS``: enough for every member here, so none ends in ``max_steps``).
FIRST, MAX_STEPS = 4096, 65536
#: The vmapped path's two passes (measured best on this CPU for the previous default).
VMAP_CHUNK, VMAP_FIRST, VMAP_TAIL = 128, 16, 32


def problem(n, d, seed=0):
    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(d)
    Q, K, V = (rng.normal(size=(n, d, d)) * s for _ in range(3))
    G = rng.normal(size=(n, d, d))
    covs = G @ np.swapaxes(G, 1, 2) / d + 0.1 * np.eye(d)
    return Q, K, V, rng.normal(size=(n, d)), covs


def scipy_flow(Q, K, V, m0, S0, ts, rtol, atol):
    d = len(m0)
    beta = 1 / np.sqrt(d)
    A = K.T @ Q
    tr0 = np.trace(S0)

    def rhs(t, y):
        m, S = y[:d], y[d:].reshape(d, d)
        J = beta * V @ S @ A
        JS = J @ S
        return np.concatenate([V @ m + J @ m, (JS + JS.T).ravel()])

    def blow(t, y):
        return np.trace(y[d:].reshape(d, d)) - 1e8 * tr0
    blow.terminal = True
    sol = solve_ivp(rhs, (0, ts[-1]), np.concatenate([m0, S0.ravel()]), t_eval=ts,
                    rtol=rtol, atol=atol, events=blow)
    return sol.y[d:, -1].reshape(d, d), sol.status


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def flops_per_step(d):
    """Floating-point operations of one Tsit5 step of one member, counted from the generated
    stacked programs: 6 new right-hand sides (``flow_rhs``) and one event check (``closure``
    and ``Sigma = Phi Sigma0 Phi^T``), every product counted as a ``d x d`` by ``d x d`` one
    (``2 d^3``; the matrix-vector products make this a slight overcount)."""
    from gaussflow.field import program_source

    src = program_source(gf.Softmax.derivation(), "stacked")
    count = {name: body.count(" @ ") for name, body in (
        (chunk.split("(")[0], chunk) for chunk in src.split("def ")[1:])}
    return (6 * count["flow_rhs"] + count["closure"] + 2) * 2 * d ** 3


def matmul_rates(d, n=2000):
    """GFLOP/s of NumPy's stacked product of ``n`` ``d x d`` pairs and of one 1000 x 1000
    product: the machine's rates for this work and at large sizes."""
    import timeit

    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(n, d, d)), rng.normal(size=(n, d, d))
    small = min(timeit.repeat(lambda: A @ B, number=20, repeat=5)) / 20
    X = rng.normal(size=(1000, 1000))
    big = min(timeit.repeat(lambda: X @ X, number=3, repeat=3)) / 3
    return 2 * d ** 3 * n / small / 1e9, 2e9 / big / 1e9


def run_d(d, n, n_base, quick=False):
    Q, K, V, m0, S0 = problem(n, d)
    ts = np.linspace(0, T1, 11)
    beta = 1 / np.sqrt(d)
    fields = jax.vmap(lambda q, k, v: gf.Softmax(q, k, v, beta=beta))(Q, K, V)
    g0s = jax.vmap(gf.Gaussian)(m0, S0)
    configs = {
        "numpy": dict(max_steps=MAX_STEPS),
        "jax queue": dict(engine="jax", max_steps=MAX_STEPS, first_pass_steps=FIRST,
                          stiff_steps=FIRST),
        "jax queue, no implicit pass (compiled above)": dict(
            engine="jax", max_steps=MAX_STEPS, first_pass_steps=FIRST, stiff_solver=None),
        "vmap (two passes)": dict(method="vmap", chunk_size=VMAP_CHUNK, max_steps=MAX_STEPS,
                                  first_pass_steps=VMAP_FIRST, tail_chunk_size=VMAP_TAIL,
                                  stiff_solver=None),
    }
    if quick:  # the test suite's time: the default engine only
        configs = {"numpy": configs["numpy"]}
    results = {}
    for name, opts in configs.items():
        res, t_first = _timed(lambda: gf.sweep(fields, g0s, T1, ts, **opts))
        res2, t_warm = _timed(lambda: gf.sweep(fields, g0s, T1, ts, **opts))
        results[name] = (res, t_first, t_warm, res2.run_seconds)
    errs = {k: [] for k in configs}
    start = time.perf_counter()
    for i in range(n_base):
        S, status = scipy_flow(Q[i], K[i], V[i], m0[i], S0[i], ts, 1e-8, 1e-10)
        for k, (res, *_) in results.items():
            if status == 0 and res.status[i] == "completed":
                errs[k].append(np.abs(S - res.final_covs[i]).max() / np.abs(S).max())
    t_base = (time.perf_counter() - start) * n / n_base
    rows = []
    for k, (res, t_first, t_warm, run_s) in results.items():
        steps = res.num_steps
        solvers = dict(zip(*np.unique(res.solvers, return_counts=True)))
        rows.append({
            "d": d, "flows": n, "method": k, "s incl. compile": t_first,
            "compile s": res.compile_seconds, "s compiled": t_warm,
            "ratio incl. compile": t_base / t_first, "ratio compiled": t_base / t_warm,
            "us per member-step": 1e6 * run_s / steps.sum(),
            "GFLOP/s": flops_per_step(d) * steps.sum() / run_s / 1e9,
            "statuses": ", ".join(f"{s}: {c}" for s, c in res.counts().items()),
            "finished by": ", ".join(f"{s}: {c}" for s, c in solvers.items()),
            "steps median/p99/max": "/".join(f"{v:.0f}" for v in (
                np.median(steps), np.percentile(steps, 99), steps.max())),
            "max rel diff vs scipy": max(errs[k]) if errs[k] else float("nan"),
        })
    small, big = matmul_rates(d)
    print(f"d = {d}: NumPy matmul rate {small:.3g} GFLOP/s on 2,000 stacked {d} x {d} products, "
          f"{big:.3g} GFLOP/s on 1000 x 1000; a Tsit5 step of one member: about "
          f"{flops_per_step(d)} flops")
    rows.append({"d": d, "flows": n, "method": "scipy" if n_base == n else
                 f"scipy (measured {n_base}, x{n / n_base:.0f})",
                 "s incl. compile": t_base, "s compiled": t_base})
    return rows, t_base


def run(quick=False):
    n = 64 if quick else 2000
    n_base = 4 if quick else n  # every member: the step counts are heavy-tailed
    rows, out = [], {}
    for d in (8,) if quick else (5, 8):  # quick: one dimension (the test suite's time)
        r, t_base = run_d(d, n, n_base, quick)
        rows += r
        out[f"d{d}"] = {x["method"]: {k: v for k, v in x.items() if k != "method"} for x in r}
        out[f"d{d}"]["scipy_s_extrapolated"] = t_base
    print_table(rows, list(rows[0]))
    q = [r for r in rows if r["method"] == "numpy"]
    ratio = min(r["ratio incl. compile"] for r in q)
    print(f"\ndefault sweep (NumPy engine) vs solve_ivp loop: end to end (incl. compilation) "
          + ", ".join(f"d = {r['d']}: {r['ratio incl. compile']:.3g}x" for r in q)
          + "; compiled " + ", ".join(f"d = {r['d']}: {r['ratio compiled']:.3g}x" for r in q)
          + f" (devices: 1; the CPU may be shared: compare ratios measured together)")
    return {"ratio": ratio, "ratio_of": "solve_ivp loop / default sweep (NumPy engine), incl. "
            "compilation, worst d", "results": out, "rows": rows}
