"""Benchmark 3: 10,000 softmax flows (d = 8) via ``gf.sweep`` vs a ``scipy.integrate.solve_ivp``
loop.

Random weights ``Q, K, V`` (entries N(0, 1/d)), ``beta = 1/sqrt(d)``, random initial states
(mean N(0, I), ``Sigma0 = G G^T / d + 0.1 I``), ``t1 = 0.5``, 11 save times, rtol 1e-8, atol 1e-10.
The baseline integrates the same moment ODE ``(mean, Sigma)`` with a NumPy right-hand side and
``solve_ivp`` (RK45, same tolerances, a terminal event when ``tr Sigma`` exceeds 1e8 times its
initial value); it runs on a subset and is extrapolated linearly to all flows (stated in the
output). Final covariances of the subset are compared. gaussflow runs a two-pass schedule (see
``FIRST`` below) with at most ``MAX_STEPS`` steps per flow; the step counts and the cost per
member-step (run time / the member-steps executed: chunk size x the slowest member's steps,
summed over the chunks of both passes) are reported.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from scipy.integrate import solve_ivp

import gaussflow as gf

from . import print_table

TITLE = "10,000 softmax flows (d = 8): gf.sweep vs scipy solve_ivp loop (extrapolated)"
TARGET = ">= 200x"
D, T1 = 8, 0.5
#: Members per chunk: a chunk runs as many steps as its slowest member and step counts are
#: heavy-tailed here (measured on 1024 flows: median 9, 99th percentile 30, max 265), so on CPU
#: small chunks win (1024 flows: 6.0 s in one chunk, 3.9 s in chunks of 256, 1.4 s of 64, 0.95 s
#: of 16). On a GPU larger chunks fill the device better.
CHUNK = 32
#: Two-pass schedule (``gf.sweep(first_pass_steps=, tail_chunk_size=)``): every member first runs
#: with a budget of ``FIRST`` steps in chunks of ``CHUNK_FIRST``; the ~10% that use it up are
#: rerun in chunks of ``CHUNK``: 6.3 s compiled instead of 9.7 s in one pass of chunks of 32
#: (a second compilation).
CHUNK_FIRST, FIRST = 128, 16
#: Step budget per flow (status ``max_steps`` beyond it): bounds the cost of the rare stiff member
#: (one eigenvalue of Sigma growing fast while another collapses).
MAX_STEPS = 4096


def problem(n, seed=0):
    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(D)
    Q, K, V = (rng.normal(size=(n, D, D)) * s for _ in range(3))
    G = rng.normal(size=(n, D, D))
    covs = G @ np.swapaxes(G, 1, 2) / D + 0.1 * np.eye(D)
    return Q, K, V, rng.normal(size=(n, D)), covs


def scipy_flow(Q, K, V, m0, S0, ts, rtol, atol):
    beta = 1 / np.sqrt(D)
    A = K.T @ Q
    tr0 = np.trace(S0)

    def rhs(t, y):
        m, S = y[:D], y[D:].reshape(D, D)
        J = beta * V @ S @ A
        JS = J @ S
        return np.concatenate([V @ m + J @ m, (JS + JS.T).ravel()])

    def blow(t, y):
        return np.trace(y[D:].reshape(D, D)) - 1e8 * tr0
    blow.terminal = True
    sol = solve_ivp(rhs, (0, ts[-1]), np.concatenate([m0, S0.ravel()]), t_eval=ts,
                    rtol=rtol, atol=atol, events=blow)
    return sol.y[D:, -1].reshape(D, D), sol.status


def _member_steps(res, first=None, tail=None):
    """Member-steps the sweep executed: each chunk runs its slowest member's step count; with a
    first pass of budget ``first``, the members above it run again in chunks of ``tail``."""
    steps, c = res.num_steps, res.chunk_size
    cap = steps if first is None else np.minimum(steps, first)
    total = sum(c * cap[i:i + c].max() for i in range(0, len(steps), c))
    if first is not None:
        redo = steps[steps > first]
        total += sum(tail * redo[i:i + tail].max() for i in range(0, len(redo), tail))
    return total


def run(quick=False):
    n = 64 if quick else 10_000
    n_base = 4 if quick else 100
    Q, K, V, m0, S0 = problem(n)
    ts = np.linspace(0, T1, 11)
    beta = 1 / np.sqrt(D)
    start = time.perf_counter()
    fields = jax.vmap(lambda q, k, v: gf.Softmax(q, k, v, beta=beta))(Q, K, V)
    opts = dict(chunk_size=CHUNK_FIRST, max_steps=MAX_STEPS, first_pass_steps=FIRST,
                tail_chunk_size=CHUNK)
    res = gf.sweep(fields, jax.vmap(gf.Gaussian)(m0, S0), T1, ts, **opts)
    t_gf = time.perf_counter() - start
    # Second call: compiled already (the cost of every later sweep of this shape).
    start = time.perf_counter()
    gf.sweep(fields, jax.vmap(gf.Gaussian)(m0, S0), T1, ts, **opts)
    t_warm = time.perf_counter() - start
    start = time.perf_counter()
    errs = []
    for i in range(n_base):
        S, status = scipy_flow(Q[i], K[i], V[i], m0[i], S0[i], ts, 1e-8, 1e-10)
        if status == 0 and res.status[i] == "completed":
            errs.append(np.abs(S - res.final_covs[i]).max() / np.abs(S).max())
    t_base = (time.perf_counter() - start) * n / n_base
    rows = [{"flows": n, "gaussflow s (incl. compile)": t_gf, "compile s": res.compile_seconds,
             "run s": res.run_seconds, "gaussflow s (compiled)": t_warm,
             f"scipy s (measured {n_base}, x{n / n_base:.0f})": t_base,
             "statuses": str(res.counts()),
             "steps median/p99/max": "/".join(f"{v:.0f}" for v in (
                 np.median(res.num_steps), np.percentile(res.num_steps, 99), res.num_steps.max())),
             "us per member-step": 1e6 * res.run_seconds / _member_steps(res, FIRST, CHUNK),
             "max rel diff (subset)": max(errs) if errs else float("nan")}]
    print_table(rows, list(rows[0]))
    print(f"\nratio incl. compilation {t_base / t_gf:.3g}x; compiled {t_base / t_warm:.3g}x "
          f"(devices: {res.n_devices}, chunks of {res.chunk_size} with a {FIRST}-step budget, "
          f"then chunks of {CHUNK})")
    return {"ratio": t_base / t_gf, "ratio_compiled": t_base / t_warm, "gaussflow_s": t_gf,
            "gaussflow_compiled_s": t_warm, "compile_s": res.compile_seconds,
            "baseline_s_extrapolated": t_base, "rows": rows}
