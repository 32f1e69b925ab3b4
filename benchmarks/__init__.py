"""gaussflow benchmarks: each compares gaussflow with a baseline measured in the same process.

Run ``python -m benchmarks [--quick] [NAMES...]`` from a checkout (or ``gaussflow bench``). Each
benchmark module defines ``TITLE``, ``TARGET`` (the figure it aims at) and ``run(quick) -> dict``
with at least ``"ratio"`` (baseline time / gaussflow time, or the quantity named in
``"ratio_of"``); every run prints its table and a final ``ratio`` line. Times are medians over
repeats (:func:`median_time`); compile and run times are reported separately where both exist.
``--quick`` shrinks every size so the whole set runs in the test suite (the targets are judged
from full runs only).
"""

from __future__ import annotations

import importlib
import os
import platform
import statistics
import time

#: Benchmark name -> module (in the order of issue 7).
NAMES = ("rank_sweep", "rhs_codegen", "many_flows", "particle_step", "closure_vs_particles",
         "cli_cold", "sinkhorn_speed", "layout", "scaling")


def load(name: str):
    if name not in NAMES:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")


def median_time(fn, repeats: int = 5, block=None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (``block(out)`` waits for results)."""
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = fn()
        if block is not None:
            block(out)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    """One line: CPU count, load average, JAX backend and devices."""
    import jax

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    devs = jax.devices()
    return (f"{platform.machine()} {os.cpu_count()} cores, load {load[0]:.1f}, "
            f"jax {jax.__version__} {devs[0].platform} x{len(devs)} ({devs[0].device_kind})")


def print_table(rows: list[dict], cols: list[str]) -> None:
    """A Markdown table of ``rows`` (dicts) restricted to ``cols``."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")


def run(names=None, quick: bool = False) -> list[dict]:
    """Run the named benchmarks (default all); print each and return their result dicts."""
    results = []
    print(f"# gaussflow benchmarks ({'quick' if quick else 'full'}) — {machine()}")
    for name in names or NAMES:
        mod = load(name)
        print(f"\n## {name}: {mod.TITLE}\n")
        start = time.perf_counter()
        res = mod.run(quick=quick)
        res.update(name=name, target=mod.TARGET, seconds=time.perf_counter() - start)
        print(f"\nratio ({res.get('ratio_of', 'baseline / gaussflow')}): {res['ratio']:.4g}  "
              f"[target: {mod.TARGET}]  ({res['seconds']:.1f} s)")
        results.append(res)
    return results
