"""Shared test settings: float64 JAX, non-interactive matplotlib, small shared fixtures."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# No shared persistent compilation cache across test processes (xdist workers, CLI subprocesses);
# tests that exercise the cache pass their own folder.
os.environ.setdefault("GAUSSFLOW_CACHE_DIR", "off")
# The suite is dominated by XLA compile time; the lowest backend optimisation level halves it
# (results are the same computations; run time per step is slower, which tests do not measure).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_backend_optimization_level=0").strip()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gaussflow  # noqa: E402,F401  (turns on jax_enable_x64)


def random_spd(rng, d, floor=0.1):
    M = rng.normal(size=(d, d))
    return M @ M.T / d + floor * np.eye(d)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
