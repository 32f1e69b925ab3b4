"""Benchmark 1: the rank-histogram sweep of DESIGN.md section 6.

600 softmax flows: d = 3, 4, 5; 100 draws each of ``V = I`` and ``V = M^T M``; ``Q`` in
``R^{floor(d/2) x d}`` standard normal, ``K = -Q`` (so ``A + A^T = -2 Q^T Q <= 0``),
``beta = 1/sqrt(d)``, ``Sigma0 = G G^T / d`` with ``G`` standard normal, mean 0.

- gaussflow: one ``gf.sweep`` of all 600 flows, embedded in dimension 5 (:func:`pad`: zero
  rows/columns/blocks, ``V = I`` padded with the identity; the padded flow is the unpadded one
  plus zeros), so one compilation serves every d. The ``V = I`` flows take the closed-form fast
  path (:mod:`gaussflow.closed_form`; ``W_O V = I`` holds after padding); the same sweep with
  ``closed_form="never"`` (every flow integrated) is timed in the same run, side by side, for
  all 600 flows and for the 300 ``V = I`` flows alone; Tsit5, rtol 1e-8, atol 1e-10, to ``t1 = 1e10`` (adaptive steps grow like t: the
  ``O(1/t)`` approach costs ``O(log t1)`` steps for V = I), at most 2048 explicit steps per
  flow (the default engine: NumPy, no compilation); the flows that use them up (some
  V = M^T M flows are stiff near their limit) are rerun by the sweep's stiff pass (column
  "implicit reruns": LSODA, the NumPy engine's default; Kvaerno5 on the JAX queue); end to end
  including compilation.
  The quick run keeps ``t1 = 1e10`` (fewer draws and dimensions): ranks are counted against a
  relative threshold of 1e-6 and the collapsing eigenvalues decay like ``1/t``, so a shorter
  horizon reports rank d for V = I. Also, in new processes with a fresh persistent compilation
  cache: cold (compiles, fills the cache) and warm (loads it).
- baseline: what the reference code does, in NumPy: explicit Euler on Sigma with step
  0.09 / 0.05 / 0.02 (d = 3 / 4 / 5), symmetrised and clipped to PSD (eigenvalues < 0 -> 0) after
  each step, stopped when ``||dSigma/dt||_F < 1e-4`` (or 10^6 steps); it diverges for some
  V = M^T M draws (step too large for their largest eigenvalue): counted as not finite.

For ``V = I`` both are compared with the closed-form limit
``Sigma0 - Sigma0 R (R^T Sigma0 R)^{-1} R^T Sigma0`` (R spans range(A + A^T)); the max-entry error
is reported, and gaussflow's error against the exact ``Sigma(t1) = (Sigma0^{-1} + 2 t1 beta
Q^T Q)^{-1}`` (its integration error; the rest is the ``O(1/t1)`` distance to the limit, at most
about 2e-9 at ``t1 = 1e10`` for these draws). The solver's right-hand side forms ``K Phi``,
``Q Phi`` first; with ``J`` formed from ``Sigma`` first the round-off grew like ``eps t`` (about
1e-7 at ``t1 = 1e8``, 1e-5 at 1e10).
Ranks count eigenvalues above 1e-6 (gaussflow) / 1e-2
(baseline: its residual eigenvalues are ~1e-3) times the largest.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np

import gaussflow as gf

TITLE = "rank-histogram sweep (600 softmax flows, d = 3, 4, 5) vs NumPy projected Euler"
TARGET = ">= 100x end to end incl. compilation; error vs closed form <= 1e-8"
STEP = {3: 0.09, 4: 0.05, 5: 0.02}
T1 = 1e10
RTOL = 1e-8
MAX_STEPS = 2048
#: Budget of the stiff rerun (LSODA; Kvaerno5 on the JAX queue) of the members that use up
#: MAX_STEPS explicit steps.
STIFF_STEPS = 16384


def draws(d, n, seed):
    """``n`` draws for each V kind: lists of (Q, V, Sigma0, kind)."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in ("I", "MtM"):
        for _ in range(n):
            Q = rng.normal(size=(d // 2, d))
            M = rng.normal(size=(d, d))
            G = rng.normal(size=(d, d))
            out.append((Q, np.eye(d) if kind == "I" else M.T @ M, G @ G.T / d, kind))
    return out


def limit(Q, S0):
    """Closed-form limit for V = I: ``S0 - S0 R (R^T S0 R)^{-1} R^T S0``, R spanning range(Q^T Q)."""
    U, s, _ = np.linalg.svd(Q.T @ Q)
    R = U[:, s > 1e-12 * s[0]]
    return S0 - S0 @ R @ np.linalg.solve(R.T @ S0 @ R, R.T @ S0)


def exact_at(Q, S0, beta, t):
    """Closed form at time t for V = I: ``(S0^{-1} + 2 t beta Q^T Q)^{-1}``, written without
    inverting S0: ``S0 - S0 Q^T (I / (2 t beta) + Q S0 Q^T)^{-1} Q S0``."""
    QS = Q @ S0
    return S0 - QS.T @ np.linalg.solve(np.eye(len(Q)) / (2 * t * beta) + QS @ Q.T, QS)


def baseline(Q, V, S0, beta, dt, tol=1e-4, max_iter=10**6):
    """Projected explicit Euler on Sigma, as in the reference code; None if it diverges."""
    A = -Q.T @ Q
    S = S0.copy()
    for _ in range(max_iter):
        rhs = beta * (V @ S @ A @ S + S @ A.T @ S @ V.T)
        if np.linalg.norm(rhs) < tol:
            break
        S = S + dt * rhs
        if not np.all(np.isfinite(S)):  # explicit Euler unstable for this step size
            return None
        w, U = np.linalg.eigh((S + S.T) / 2)
        S = (U * np.clip(w, 0, None)) @ U.T
    return S


def rank(S, rel):
    w = np.linalg.eigvalsh(S)
    return int(np.sum(w > rel * w[-1]))


def pad(Q, V, S0, D):
    """Embed a d-dimensional problem in dimension D >= d: Q gets zero rows/columns, Sigma0 a zero
    block, V a zero block (the identity block when V = I, so that W_O V = I holds and the
    closed form applies). The padded flow is the unpadded one plus zeros (A = -Q^T Q, the mean
    and Sigma stay zero outside the leading d x d block, so the velocity there is V times zero;
    Phi stays the identity there), so one compiled sweep of shape D serves every d."""
    d = S0.shape[0]
    Qp, Sp = np.zeros((D // 2, D)), np.zeros((D, D))
    Vp = np.eye(D) if np.array_equal(V, np.eye(d)) else np.zeros((D, D))
    Qp[:Q.shape[0], :d], Vp[:d, :d], Sp[:d, :d] = Q, V, S0
    return Qp, Vp, Sp


def inputs(cases, kinds=("I", "MtM")):
    """``(members, fields, g0s)``: the cases of these V kinds, padded and batched."""
    D = max(cases)
    members = [(d, i, c) for d, cs in cases.items() for i, c in enumerate(cs) if c[3] in kinds]
    members.sort(key=lambda m: m[2][3] != "I")  # stable: V = I first
    padded = [pad(c[0], c[1], c[2], D) for _, _, c in members]
    Qs, Vs, S0s = (np.stack(x) for x in zip(*padded))
    betas = np.array([1 / np.sqrt(d) for d, _, _ in members])
    fields = jax.vmap(lambda Q, V, b: gf.Softmax(Q, -Q, V, beta=b))(Qs, Vs, betas)
    g0s = jax.vmap(gf.Gaussian)(np.zeros((len(members), D)), S0s)
    return members, fields, g0s


def run_gaussflow(cases, t1, rtol, atol=1e-10, max_steps=MAX_STEPS, closed_form="auto",
                  kinds=("I", "MtM")):
    """All cases in one padded sweep (dimension max d; the work queue, so a slow member holds
    no other): Tsit5 with ``max_steps`` steps, then the members that used them up (V = M^T M
    flows are stiff near their limits) rerun by the stiff pass with ``STIFF_STEPS``. Returns final
    covariances per d (unpadded), statuses, steps, solvers, and the timings."""
    start = time.perf_counter()
    members, fields, g0s = inputs(cases, kinds)
    res = gf.sweep(fields, g0s, t1, np.array([0.0, t1]), rtol=rtol, atol=atol,
                   first_pass_steps=max_steps, max_steps=STIFF_STEPS, closed_form=closed_form)
    elapsed = time.perf_counter() - start
    finals = {d: [None] * len(cs) for d, cs in cases.items()}  # None: kind not run
    for j, (d, i, _) in enumerate(members):
        finals[d][i] = (res.final_covs[j][:d, :d], str(res.status[j]), int(res.num_steps[j]),
                        str(res.solvers[j]))
    return finals, elapsed, res.compile_seconds, res.run_seconds


def side_by_side(cases, t1, rtol):
    """The sweep with the closed-form fast path and with ``closed_form="never"``, for all flows
    and for the ``V = I`` flows alone (each timed end to end, its compile time apart; the main
    run before it has compiled the fast path's probe functions), with the
    ``V = I`` flows' max error against the exact ``Sigma(t1)``."""
    out = {}
    for key, kinds in (("I", ("I",)), ("all", ("I", "MtM"))):
        out[key] = {}
        inputs(cases, kinds)  # untimed: first batch of this size (the weights' checks compile)
        for mode, cf in (("closed_form", "auto"), ("integrate", "never")):
            finals, sec, comp, run_s = run_gaussflow(cases, t1, rtol, closed_form=cf,
                                                     kinds=kinds)
            err = max(np.abs(finals[d][i][0] - exact_at(c[0], c[2], 1 / np.sqrt(d), t1)).max()
                      for d, cs in cases.items() for i, c in enumerate(cs) if c[3] == "I")
            out[key][mode] = {"seconds": sec, "compile_s": comp, "run_s": run_s, "err": err,
                              "flows": sum(f is not None for fs in finals.values() for f in fs)}
    return out


def _child(dims, n, t1, rtol, cache):
    """In a new process: enable the persistent compilation cache at ``cache`` and time the sweep
    (fields, compilation or cache load, integration); prints the seconds."""
    from gaussflow.cache import enable

    enable(cache)
    cases = {d: draws(d, n, seed=d) for d in dims}
    _, elapsed, comp, _ = run_gaussflow(cases, t1, rtol)
    print(json.dumps({"seconds": elapsed, "compile_s": comp}))


def cold_warm(dims, n, t1, rtol):
    """Seconds of the sweep in two new processes sharing a fresh persistent compilation cache:
    the first compiles (and fills the cache), the second loads the executable."""
    import os
    import subprocess
    import sys
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (f"import sys; sys.path.insert(0, {root!r}); from benchmarks.rank_sweep import _child; "
            f"_child({tuple(dims)!r}, {n}, {t1!r}, {rtol!r}, sys.argv[1])")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        os.makedirs(cache, mode=0o700)
        for _ in range(2):
            proc = subprocess.run([sys.executable, "-c", code, cache], capture_output=True,
                                  text=True, cwd=root)
            if proc.returncode != 0:
                raise RuntimeError(f"rank_sweep child failed: {proc.stderr[-1000:]}")
            out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def run(quick=False):
    n = 2 if quick else 100
    n_base = 1 if quick else 10  # baseline draws per (d, V); the rest is extrapolated
    dims = (3, 4) if quick else (3, 4, 5)
    # The quick run keeps the full horizon: ranks are read against a 1e-6 threshold, and the
    # collapsing eigenvalues decay like 1 / t (at t1 = 1e4 they are still ~1e-4: rank d).
    t1, rtol = T1, RTOL
    cases = {d: draws(d, n, seed=d) for d in dims}
    finals, t_gf, t_comp, t_run = run_gaussflow(cases, t1, rtol)
    side = side_by_side(cases, t1, rtol)
    rows, t_base, n_b, n_total, base_fail = [], 0.0, 0, 0, 0
    na = "n/a"
    for d, cs in cases.items():
        beta = 1 / np.sqrt(d)
        for kind in ("I", "MtM"):
            idx = [i for i, c in enumerate(cs) if c[3] == kind]
            err_gf, err_t, err_b, ranks_gf, ranks_b = [], [], [], [], []
            for j, i in enumerate(idx):
                Q, V, S0, _ = cs[i]
                cov = finals[d][i][0]
                ranks_gf.append(rank(cov, 1e-6))
                if kind == "I":
                    err_gf.append(np.abs(cov - limit(Q, S0)).max())
                    err_t.append(np.abs(cov - exact_at(Q, S0, beta, t1)).max())
                if j < n_base:
                    start = time.perf_counter()
                    Sb = baseline(Q, V, S0, beta, STEP[d])
                    t_base += time.perf_counter() - start
                    n_b += 1
                    if Sb is None:
                        base_fail += 1
                        continue
                    ranks_b.append(rank(Sb, 1e-2))
                    if kind == "I":
                        err_b.append(np.abs(Sb - limit(Q, S0)).max())
            n_total += len(idx)
            hist = np.bincount(ranks_gf, minlength=d + 1)[1:]
            statuses = [finals[d][i][1] for i in idx]
            rows.append({"d": d, "V": kind, "runs": len(idx),
                         "statuses": ",".join(f"{k}: {statuses.count(k)}"
                                              for k in sorted(set(statuses))),
                         "max steps": max(finals[d][i][2] for i in idx),
                         "rank hist (1..d)": "/".join(map(str, hist)),
                         "baseline rank hist": "/".join(
                             map(str, np.bincount(ranks_b, minlength=d + 1)[1:]))
                         + (f" ({len(ranks_b)}/{min(n_base, len(idx))} finite)"
                            if len(ranks_b) < min(n_base, len(idx)) else ""),
                         "closed form": sum(finals[d][i][3] == "closed_form" for i in idx),
                         "implicit reruns": sum(finals[d][i][3] in ("kvaerno5", "lsoda")
                                                for i in idx),
                         # no closed form for V = M^T M: "n/a", not a number
                         "max err gaussflow": max(err_gf) if err_gf else na,
                         "median err gaussflow": float(np.median(err_gf)) if err_gf else na,
                         "max err vs Sigma(t1)": max(err_t) if err_t else na,
                         "max err baseline": (max(err_b) if err_b else float("nan"))
                         if kind == "I" else na})
    t_base_all = t_base * n_total / n_b  # == t_base when every draw ran the baseline
    from . import print_table

    print_table(rows, list(rows[0]))
    err = max(r["max err gaussflow"] for r in rows if r["V"] == "I")
    err_t = max(r["max err vs Sigma(t1)"] for r in rows if r["V"] == "I")
    print(f"\ngaussflow: {n_total} flows in one padded sweep (d = {max(dims)}), end to end "
          f"{t_gf:.3g} s (compile {t_comp:.3g} s, run {t_run:.3g} s); baseline: {n_b} flows "
          f"{t_base:.3g} s" + ("" if n_b == n_total else
                              f", extrapolated to {n_total}: {t_base_all:.3g} s"))
    print(f"ratio end to end {t_base_all / t_gf:.3g}x; excluding compilation "
          f"{t_base_all / t_run:.3g}x; max error vs closed form (V = I): gaussflow {err:.2e}, "
          f"baseline {max(r['max err baseline'] for r in rows if r['V'] == 'I'):.2e}; gaussflow vs "
          f"the exact Sigma(t1) {err_t:.2e} (integration error; the rest is the O(1/t) distance "
          f"to the limit at t1 = {t1:.3g})")
    for label, key in (("all flows", "all"), ("V = I flows only", "I")):
        a, b = side[key]["closed_form"], side[key]["integrate"]
        print(f"{label} ({a['flows']}): closed-form fast path {a['seconds']:.3g} s (compile "
              f"{a['compile_s']:.3g} s, run {a['run_s']:.3g} s) vs forced integration "
              f"{b['seconds']:.3g} s (compile {b['compile_s']:.3g} s, run {b['run_s']:.3g} s): "
              f"{b['seconds'] / a['seconds']:.3g}x end to end, {b['run_s'] / a['run_s']:.3g}x "
              "run only (compile: what the call compiled; same shapes reuse executables)")
    print(f"V = I, error vs the exact Sigma(t1): fast path {side['I']['closed_form']['err']:.2e}, "
          f"forced integration {side['I']['integrate']['err']:.2e}")
    out = {"ratio": t_base_all / t_gf, "ratio_run_only": t_base_all / t_run,
           "fast_path_vs_integration": side,
           "gaussflow_s": t_gf, "compile_s": t_comp, "run_s": t_run,
           "baseline_s": t_base_all, "baseline_measured_runs": n_b, "max_error": err,
           "max_error_vs_exact_t1": err_t,
           "rows": rows}
    if not quick:  # new processes: persistent compilation cache cold, then warm
        cold, warm = cold_warm(dims, n, t1, rtol)
        print(f"new process, persistent cache: cold {cold['seconds']:.3g} s (compile "
              f"{cold['compile_s']:.3g} s), warm {warm['seconds']:.3g} s (compile/load "
              f"{warm['compile_s']:.3g} s): ratio warm {t_base_all / warm['seconds']:.3g}x")
        out.update(cold_process_s=cold["seconds"], warm_process_s=warm["seconds"],
                   ratio_warm_cache=t_base_all / warm["seconds"])
    return out
