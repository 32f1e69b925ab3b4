"""Benchmark 6: a new process, cold (empty persistent compilation cache) and warm (the cache
filled by the cold run; ``GAUSSFLOW_CACHE_DIR`` points both at a fresh temporary folder):
``gaussflow run`` (the CLI) and a Python program that sweeps 600 softmax flows (d = 3,
``K = -Q``, ``V = M^T M``, ``t1 = 1``) through ``gf.sweep``; the time is from process start to
result (imports, derivation, compilation or cache loading, integration). Target: cold <= 20 s on
2 cores. ``--quick`` (for the test suite) times ``gaussflow derive softmax`` instead (process
start, imports and derivation; no compilation).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from . import print_table

TITLE = "cold vs warm `gaussflow run` (new process, persistent compilation cache)"
TARGET = "cold <= 20 s (2 cores); ratio cold / warm reported"


_API_SWEEP = """
import numpy as np
import gaussflow as gf
rng = np.random.default_rng(0)
fields = []
for _ in range(600):
    Q, M = rng.normal(size=(1, 3)), rng.normal(size=(3, 3))
    fields.append(gf.Softmax(Q, -Q, M.T @ M))
res = gf.sweep(fields, gf.Gaussian.standard(3), 1.0)
assert set(res.status) == {"completed"}, set(res.status)
"""


def _time_run(cache, out, quick, api=False):
    env = dict(os.environ, GAUSSFLOW_CACHE_DIR=cache)
    cmd = [sys.executable]
    if api:
        cmd += ["-c", _API_SWEEP]
    else:
        cmd += ["-m", "gaussflow.cli"]
        cmd += ["derive", "softmax"] if quick else ["run", "--out", out]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:3])} failed: {proc.stderr[-1000:]}")
    return time.perf_counter() - start


def run(quick=False):
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        cold = _time_run(cache, os.path.join(tmp, "out1"), quick)
        warm = _time_run(cache, os.path.join(tmp, "out2"), quick)
        n_files = sum(len(f) for _, _, f in os.walk(cache))
    rows = [{"command": "gaussflow derive softmax" if quick else "gaussflow run", "cold s": cold,
             "warm s": warm, "cache entries": n_files}]
    if not quick:
        with tempfile.TemporaryDirectory() as tmp:
            cache = os.path.join(tmp, "cache")
            a_cold = _time_run(cache, None, False, api=True)
            a_warm = _time_run(cache, None, False, api=True)
            n_api = sum(len(f) for _, _, f in os.walk(cache))
        rows.append({"command": "python: gf.sweep of 600 flows", "cold s": a_cold,
                     "warm s": a_warm, "cache entries": n_api})
    print_table(rows, list(rows[0]))
    return {"ratio": cold / warm, "ratio_of": "cold / warm", "cold_s": cold, "warm_s": warm,
            "rows": rows}
