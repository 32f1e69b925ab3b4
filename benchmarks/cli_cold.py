"""Benchmark 6: ``gaussflow run`` in a new process — cold (empty persistent compilation cache)
and warm (the cache filled by the cold run; ``GAUSSFLOW_CACHE_DIR`` points both at a fresh
temporary folder). Target: cold <= 20 s on 2 cores. ``--quick`` (for the test suite) times
``gaussflow derive softmax`` instead (process start, imports and derivation; no compilation).
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


def _time_run(cache, out, quick):
    env = dict(os.environ, GAUSSFLOW_CACHE_DIR=cache)
    cmd = [sys.executable, "-m", "gaussflow.cli"]
    cmd += ["derive", "softmax"] if quick else ["run", "--out", out]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gaussflow run failed: {proc.stderr[-1000:]}")
    return time.perf_counter() - start


def run(quick=False):
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        cold = _time_run(cache, os.path.join(tmp, "out1"), quick)
        warm = _time_run(cache, os.path.join(tmp, "out2"), quick)
        n_files = sum(len(f) for _, _, f in os.walk(cache))
    rows = [{"command": "gaussflow derive softmax" if quick else "gaussflow run", "cold s": cold,
             "warm s": warm, "cache entries": n_files}]
    print_table(rows, list(rows[0]))
    return {"ratio": cold / warm, "ratio_of": "cold / warm", "cold_s": cold, "warm_s": warm,
            "rows": rows}
