"""Benchmark 1: the rank-histogram sweep of DESIGN.md section 6.

600 softmax flows: d = 3, 4, 5; 100 draws each of ``V = I`` and ``V = M^T M``; ``Q`` in
``R^{floor(d/2) x d}`` standard normal, ``K = -Q`` (so ``A + A^T = -2 Q^T Q <= 0``),
``beta = 1/sqrt(d)``, ``Sigma0 = G G^T / d`` with ``G`` standard normal, mean 0.

- gaussflow: one ``gf.sweep`` per d (Tsit5, rtol 1e-10, atol 1e-14) to ``t1 = 1e10``
  (adaptive steps grow like t, so the ``O(1/t)`` approach to the limit costs ``O(log t1)``
  steps), end to end including compilation.
- baseline: what the reference code does, in NumPy: explicit Euler on Sigma with step
  0.09 / 0.05 / 0.02 (d = 3 / 4 / 5), symmetrised and clipped to PSD (eigenvalues < 0 -> 0) after
  each step, stopped when ``||dSigma/dt||_F < 1e-4`` (or 10^6 steps).

For ``V = I`` both are compared with the closed-form limit
``Sigma0 - Sigma0 R (R^T Sigma0 R)^{-1} R^T Sigma0`` (R spans range(A + A^T)); the max-entry error
is reported. Ranks count eigenvalues above 1e-6 (gaussflow) / 1e-2 (baseline: its residual
eigenvalues are ~1e-3) times the largest.
"""

from __future__ import annotations

import time

import jax
import numpy as np

import gaussflow as gf

TITLE = "rank-histogram sweep (600 softmax flows, d = 3, 4, 5) vs NumPy projected Euler"
TARGET = ">= 100x end to end incl. compilation; error vs closed form <= 1e-8"
STEP = {3: 0.09, 4: 0.05, 5: 0.02}
T1 = 1e10


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


def baseline(Q, V, S0, beta, dt, tol=1e-4, max_iter=10**6):
    """Projected explicit Euler on Sigma, as in the reference code."""
    A = -Q.T @ Q
    S = S0.copy()
    for _ in range(max_iter):
        rhs = beta * (V @ S @ A @ S + S @ A.T @ S @ V.T)
        if np.linalg.norm(rhs) < tol:
            break
        S = S + dt * rhs
        w, U = np.linalg.eigh((S + S.T) / 2)
        S = (U * np.clip(w, 0, None)) @ U.T
    return S


def rank(S, rel):
    w = np.linalg.eigvalsh(S)
    return int(np.sum(w > rel * w[-1]))


def run_gaussflow(cases, t1, rtol):
    """One sweep per d; returns final covariances per d and the timings."""
    finals, comp, runt = {}, 0.0, 0.0
    start = time.perf_counter()
    for d, cs in cases.items():
        beta = 1 / np.sqrt(d)
        Qs = np.stack([c[0] for c in cs])
        Vs = np.stack([c[1] for c in cs])
        fields = jax.vmap(lambda Q, V: gf.Softmax(Q, -Q, V, beta=beta))(Qs, Vs)
        g0s = jax.vmap(gf.Gaussian)(np.zeros((len(cs), d)), np.stack([c[2] for c in cs]))
        res = gf.sweep(fields, g0s, t1, np.array([0.0, t1]), rtol=rtol, atol=1e-14,
                       max_steps=16384)
        finals[d] = (res.final_covs, res.status)
        comp += res.compile_seconds
        runt += res.run_seconds
    return finals, time.perf_counter() - start, comp, runt


def run(quick=False):
    n = 3 if quick else 100
    n_base = 2 if quick else 10  # baseline draws per (d, V); the rest is extrapolated
    dims = (3,) if quick else (3, 4, 5)
    cases = {d: draws(d, n, seed=d) for d in dims}
    finals, t_gf, t_comp, t_run = run_gaussflow(cases, 1e4 if quick else T1,
                                                1e-8 if quick else 1e-10)
    rows, t_base, n_b, n_total = [], 0.0, 0, 0
    for d, cs in cases.items():
        beta = 1 / np.sqrt(d)
        covs, status = finals[d]
        for kind in ("I", "MtM"):
            idx = [i for i, c in enumerate(cs) if c[3] == kind]
            err_gf, err_b, ranks_gf, ranks_b = [], [], [], []
            for j, i in enumerate(idx):
                Q, V, S0, _ = cs[i]
                ranks_gf.append(rank(covs[i], 1e-6))
                if kind == "I":
                    err_gf.append(np.abs(covs[i] - limit(Q, S0)).max())
                if j < n_base:
                    start = time.perf_counter()
                    Sb = baseline(Q, V, S0, beta, STEP[d])
                    t_base += time.perf_counter() - start
                    n_b += 1
                    ranks_b.append(rank(Sb, 1e-2))
                    if kind == "I":
                        err_b.append(np.abs(Sb - limit(Q, S0)).max())
            n_total += len(idx)
            hist = np.bincount(ranks_gf, minlength=d + 1)[1:]
            rows.append({"d": d, "V": kind, "runs": len(idx),
                         "statuses": ",".join(sorted(set(status[idx]))),
                         "rank hist (1..d)": "/".join(map(str, hist)),
                         "baseline rank hist": "/".join(map(str, np.bincount(ranks_b, minlength=d + 1)[1:])),
                         "max err gaussflow": max(err_gf) if err_gf else float("nan"),
                         "max err baseline": max(err_b) if err_b else float("nan")})
    t_base_all = t_base * n_total / n_b  # == t_base when every draw ran the baseline
    from . import print_table

    print_table(rows, list(rows[0]))
    err = max(r["max err gaussflow"] for r in rows if r["V"] == "I")
    print(f"\ngaussflow: {n_total} flows end to end {t_gf:.3g} s (compile {t_comp:.3g} s, run "
          f"{t_run:.3g} s); baseline: {n_b} flows {t_base:.3g} s"
          + ("" if n_b == n_total else f", extrapolated to {n_total}: {t_base_all:.3g} s"))
    print(f"ratio end to end {t_base_all / t_gf:.3g}x; excluding compilation "
          f"{t_base_all / t_run:.3g}x; max error vs closed form (V = I): gaussflow {err:.2e}, "
          f"baseline {max(r['max err baseline'] for r in rows if r['V'] == 'I'):.2e}")
    return {"ratio": t_base_all / t_gf, "ratio_run_only": t_base_all / t_run,
            "gaussflow_s": t_gf, "compile_s": t_comp, "run_s": t_run,
            "baseline_s": t_base_all, "baseline_measured_runs": n_b, "max_error": err,
            "rows": rows}
