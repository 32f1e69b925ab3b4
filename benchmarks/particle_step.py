"""Benchmark 4: one particle velocity evaluation (softmax, N = 16384, d = 16) vs the two
``N x N x d`` matmuls it needs (scores ``(X Q^T)(X K^T)^T`` and weights times values): the
BLAS-bound lower limit. ``gf.particles.particle_velocity`` (block-wise, log-sum-exp stable) is
jitted; peak memory is the compiled function's temporary buffer size (XLA memory analysis).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gaussflow as gf
from gaussflow import particles as P

from . import median_time, print_table

TITLE = "particle step (softmax, N = 16384, d = 16) vs its two N x N x d matmuls"
TARGET = "within 2x (ratio gaussflow / matmuls <= 2)"


def run(quick=False):
    N, d = (2048, 16) if quick else (16384, 16)
    rng = np.random.default_rng(0)
    Q, K, V = (rng.normal(size=(d, d)) / np.sqrt(d) for _ in range(3))
    f = gf.Softmax(Q, K, V, beta=1 / np.sqrt(d))
    X = jnp.asarray(rng.normal(size=(N, d)))
    step = jax.jit(lambda X: P.particle_velocity(f, X))
    Wt = jnp.asarray(rng.random(size=(N, N)))

    @jax.jit
    def matmuls(X, Wt):
        S = (X @ f.Q.T) @ (X @ f.K.T).T      # N x N x d
        return S, Wt @ (X @ f.V.T)           # N x N x d

    lowered = step.lower(X)
    mem = lowered.compile().memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", float("nan")) if mem is not None else float("nan")
    block = jax.block_until_ready
    block(step(X)), block(matmuls(X, Wt))
    reps = 3 if quick else 5
    t_step = median_time(lambda: step(X), reps, block)
    t_mm = median_time(lambda: matmuls(X, Wt), reps, block)
    rows = [{"N": N, "d": d, "particle step s": t_step, "two matmuls s": t_mm,
             "ratio step/matmuls": t_step / t_mm, "step temp MiB": temp / 2**20,
             "N x N float64 MiB": N * N * 8 / 2**20}]
    print_table(rows, list(rows[0]))
    return {"ratio": t_step / t_mm, "ratio_of": "particle step / two matmuls", "rows": rows}
