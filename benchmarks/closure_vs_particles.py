"""Benchmark 5: the closure vs particles for one question — the final covariance of a softmax
flow (d = 8, t1 = 1) to 1% relative (Frobenius) accuracy.

The closure answers with one ``gf.solve``. Particles: ``gf.particles.simulate`` from
``N`` samples of the initial Gaussian (N doubled from 1024 to at most 8192 until the empirical
final covariance is within 1% of the closure's); the time of the smallest sufficient N is
reported, or, when 8192 does not suffice, the N needed and its time extrapolated from the largest
run (Monte Carlo error ~ ``N^{-1/2}``, cost ~ ``N^2``), stated in the output. Both include
compilation (shown separately for the closure).
"""

from __future__ import annotations

import time

import numpy as np

import gaussflow as gf
from gaussflow import particles as P

from . import print_table

TITLE = "closure vs particles: final covariance to 1% (softmax, d = 8)"
TARGET = "report the ratio of wall times (particles / closure)"


def run(quick=False):
    d, t1 = 8, 1.0
    rng = np.random.default_rng(1)
    Q, K, V = (rng.normal(size=(d, d)) / np.sqrt(d) for _ in range(3))
    f = gf.Softmax(Q, -Q, V @ V.T, beta=1 / np.sqrt(d))
    g0 = gf.Gaussian(np.zeros(d), np.eye(d))
    ts = np.array([0.0, t1])
    start = time.perf_counter()
    ref = gf.solve(f, g0, t1, ts)
    t_cold = time.perf_counter() - start
    start = time.perf_counter()
    ref = gf.solve(f, g0, t1, ts)
    t_warm = time.perf_counter() - start
    S_ref = ref.covs[-1]
    rows = []
    ns = (256,) if quick else (1024, 2048, 4096, 8192)
    for n in ns:
        start = time.perf_counter()
        x0 = P.sample(g0, n, seed=0)
        tr = P.simulate(f, x0, ts)
        _, S = tr.moments()
        el = time.perf_counter() - start
        err = np.linalg.norm(S[-1] - S_ref) / np.linalg.norm(S_ref)
        rows.append({"N": n, "particles s": el, "rel. error": err})
        if err <= 0.01:
            break
    print_table(rows, list(rows[0]))
    last = rows[-1]
    ok = last["rel. error"] <= 0.01
    if ok:
        n_need, t_part = last["N"], last["particles s"]
        how = f"reach 1% at N = {n_need}"
    else:
        # Monte Carlo error ~ N^{-1/2}; one simulation costs ~ N^2 (all pairs).
        n_need = int(np.ceil(last["N"] * (last["rel. error"] / 0.01) ** 2))
        t_part = last["particles s"] * (n_need / last["N"]) ** 2
        how = (f"did not reach 1% up to N = {last['N']}; extrapolated (error ~ N^-1/2, time ~ "
               f"N^2): N ~ {n_need}, {t_part:.3g} s")
    print(f"\nclosure: {t_cold:.3g} s incl. compilation, {t_warm:.3g} s compiled; particles {how}")
    return {"ratio": t_part / t_cold, "ratio_of": "particles / closure (both incl. compilation)",
            "ratio_compiled_closure": t_part / t_warm, "closure_s": t_cold,
            "closure_compiled_s": t_warm, "particles_s": t_part, "reached_1pct": ok,
            "n_needed": n_need, "extrapolated": not ok, "rows": rows}
