"""Measured error of the approximate closures (sigmoid, unnormalised, masked) against particles.

For each variant and three interaction strengths (beta small / moderate / large; d = 2, fixed
weights), run ``gf.validate`` (sigmoid, unnormalised) or the same protocol by hand on causal
particles (masked: block moments vs the positional closure), and print a Markdown table of the
closure's bias over time: at every saved time the error ``e(N)`` (cov: relative Frobenius;
mean: in units of the spread, see :mod:`gaussflow.validate`) is fitted over cloud sizes and seeds
as ``e^2 = b^2 + C^2 / N``; ``b`` is the bias, ``C / sqrt(N_max)`` the Monte Carlo noise left at
the largest cloud (the table flags rows where it is not below the bias).

Usage: ``python benchmarks/approx_error.py [--quick] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.optimize import nnls

import gaussflow as gf
from gaussflow import particles as P
from gaussflow.validate import moment_errors

REGIMES = {"small": 0.25, "moderate": 0.5, "large": 1.0}


def weights(d=2, seed=3):
    rng = np.random.default_rng(seed)
    Q = rng.normal(size=(d, d)) / np.sqrt(d)
    K = rng.normal(size=(d, d)) / np.sqrt(d)
    V = np.eye(d) + 0.3 * rng.normal(size=(d, d))
    return Q, K, V


def bias_fit(ns, E):
    """``e^2 = b^2 + C^2 / N`` by non-negative least squares; ``E`` is ``[n_N][n_seeds]``."""
    ns = np.asarray(ns, float)
    E = np.asarray(E, float)
    A = np.repeat(np.stack([np.ones_like(ns), 1.0 / ns], 1), E.shape[1], axis=0)
    coef, _ = nnls(A, (E ** 2).reshape(-1))
    return float(np.sqrt(coef[0])), float(np.sqrt(coef[1]))


def per_time(ns, curves, q):
    """Per saved time: (t, bias b, MC noise C / sqrt(N_max))."""
    # times reached by every run (a particle or closure run may stop early)
    n_t = min(len(c) for n in ns for c in curves[str(n)][q])
    ts = curves[str(ns[-1])]["ts"][:n_t] if n_t else []
    rows = []
    for k, t in enumerate(ts):
        E = [[c[k] for c in curves[str(n)][q]] for n in ns]
        b, C = bias_fit(ns, E)
        rows.append((t, b, C / np.sqrt(ns[-1])))
    return rows


def run_validate(field, g0, t1, ns, seeds, ts):
    tr = gf.solve(field, g0, t1, ts=ts)
    if tr.status != "completed":  # validate only where the closure exists
        t1 = float(ts[ts < tr.t_stop][-1])
        ts = ts[ts <= t1]
    rep = gf.validate(field, g0, t1, n_particles=ns, seeds=seeds, ts=ts)
    res = {q: per_time(ns, rep.curves, q) for q in ("mean", "cov")}
    res["closure"] = (tr.status, tr.t_stop)
    res["statuses"] = rep.statuses
    return res, rep


def run_masked(field, pg, t1, ns, seeds, ts):
    """Same protocol for ``gf.Masked``: causal particles vs the positional closure."""
    curves = {}
    for n in ns:
        cm, cc = [], []
        for s in seeds:
            X, pos = field.sample(pg, n, seed=s)
            B, d = pg.n_blocks, pg.dim
            Xb = X.reshape(B, n, d)
            m0 = Xb.mean(1)
            S0 = np.einsum("bni,bnj->bij", Xb - m0[:, None], Xb - m0[:, None]) / n
            tr = gf.solve(field, gf.PositionalGaussians(m0, S0), t1, ts=ts)
            pt = P.simulate(field, X, ts, positions=pos)
            Y = np.asarray(pt.xs).reshape(len(ts), B, n, d)
            mp = Y.mean(2)
            Sp = np.einsum("tbni,tbnj->tbij", Y - mp[:, :, None], Y - mp[:, :, None]) / n
            em = np.max([moment_errors(mp[:, b], Sp[:, b], tr.means[:, b], tr.covs[:, b])[0]
                         for b in range(B)], axis=0)
            ec = np.max([moment_errors(mp[:, b], Sp[:, b], tr.means[:, b], tr.covs[:, b])[1]
                         for b in range(B)], axis=0)
            cm.append(em.tolist())
            cc.append(ec.tolist())
        curves[str(n)] = {"ts": list(ts), "mean": cm, "cov": cc}
    return {q: per_time(ns, curves, q) for q in ("mean", "cov")}


def table(title, results, times):
    lines = [f"**{title}** — bias b of the closure (max over blocks for masked); MC noise at "
             "the largest N in parentheses", "",
             "| regime | beta | quantity | " + " | ".join(f"t = {t:g}" for t in times) + " |",
             "|---|---|---|" + "---|" * len(times)]
    for name, (beta, res) in results.items():
        for q in ("mean", "cov"):
            cells = []
            for t in times:
                status, t_stop = res.get("closure", ("completed", np.inf))
                if t > t_stop:
                    cells.append(f"{status} at t = {t_stop:.3g}")
                    continue
                row = min(res[q], key=lambda r: abs(r[0] - t))
                if abs(row[0] - t) > 1e-9:  # a particle or closure run stopped before t
                    cells.append("run stopped")
                    continue
                flag = "" if row[2] < row[1] else "*"
                cells.append(f"{row[1]:.1e} ({row[2]:.0e}){flag}")
            lines.append(f"| {name} | {beta:g} | {q} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("`*`: Monte Carlo noise not below the bias (the bias is below what these N resolve).")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small clouds (a smoke run)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default=None, help="sigmoid, unnormalized or masked")
    ap.add_argument("--n", default=None, help="comma-separated cloud sizes (default 512,2048,8192)")
    a = ap.parse_args(argv)
    ns = (256, 1024) if a.quick else (512, 2048, 8192)
    if a.n:
        ns = tuple(int(v) for v in a.n.split(","))
    seeds = (0, 1) if a.quick else (0, 1, 2)
    t1 = 2.0
    ts = np.linspace(0.0, t1, 5)
    times = ts[1:]
    Q, K, V = weights()
    g0 = gf.Gaussian([0.5, -0.25], [[0.6, 0.15], [0.15, 0.4]])
    out, texts = {}, []
    started = time.time()
    if a.only in (None, "sigmoid"):
        res = {}
        for name, beta in REGIMES.items():
            f = gf.Sigmoid(Q, K, V, beta=4 * beta, bias=-1.0)
            res[name] = (4 * beta, run_validate(f, g0, t1, ns, seeds, ts)[0])
        out["sigmoid"] = res
        texts.append(table("Sigmoid (bias = -1)", res, times))
        print(texts[-1], flush=True)
    if a.only in (None, "unnormalized"):
        res = {}
        for name, beta in REGIMES.items():
            f = gf.Unnormalized(Q, K, V, beta=beta)
            res[name] = (beta, run_validate(f, g0, t1, ns, seeds, ts)[0])
        out["unnormalized"] = res
        texts.append(table("Unnormalised", res, times))
        print(texts[-1], flush=True)
    if a.only in (None, "masked"):
        B = 4
        means = np.stack([g0.mean + 0.3 * b * np.array([1.0, -0.5]) for b in range(B)])
        covs = np.stack([np.asarray(g0.cov) * (1 + 0.25 * b) for b in range(B)])
        pg = gf.PositionalGaussians(means, covs)
        res = {}
        nb = tuple(max(64, n // B) for n in ns)
        for name, beta in REGIMES.items():
            f = gf.Masked(gf.Softmax(Q, K, V, beta=beta), n_blocks=B)
            res[name] = (beta, run_masked(f, pg, t1, nb, seeds, ts))
        out["masked"] = res
        texts.append(table(f"Masked softmax (B = {B} blocks, N per block = N/{B})", res, times))
        print(texts[-1], flush=True)
    print(f"clouds N = {list(ns)}, seeds {list(seeds)}, d = 2, t1 = {t1:g}; "
          f"{time.time() - started:.0f} s")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
