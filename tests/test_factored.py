"""Softmax particle velocities through the head's factors (O(N^2 k)) equal the generic block pass
(O(N^2 d)) on the same cloud: plain, with particle weights (padding), causal, multi-head."""

import jax.numpy as jnp
import numpy as np

import gaussflow as gf
from gaussflow import particles as P
from gaussflow.particles.factored import factored_scores
from gaussflow.particles.kernels import Scores, kernel_spec


def _generic(field, X, ctx, positions=None, log_a=None):
    """The generic path: canonical-form scores with d x d matrices."""
    sc = Scores(kernel_spec(type(field)), field, X)
    return type(field).normalisation.particle_velocity(sc, ctx, positions, log_a)


def test_factored_softmax_equals_the_generic_pass():
    rng = np.random.default_rng(0)
    d, k, kv, n = 7, 2, 3, 41
    f = gf.Softmax(rng.normal(size=(k, d)), rng.normal(size=(k, d)), rng.normal(size=(kv, d)),
                   rng.normal(size=(d, kv)), beta=1.7)
    X = jnp.asarray(rng.normal(size=(n, d)))
    assert factored_scores(f, X) is not None
    log_a = jnp.asarray(np.where(np.arange(n) < 30, -np.log(30.0), -np.inf))
    pos = jnp.asarray(rng.integers(0, 9, size=n) / 9.0)
    for ctx in (P.Context(block=8), P.Context(dense=True)):
        for kw in ({}, {"log_a": log_a}, {"positions": pos}):
            got = np.asarray(P.particle_velocity(f, X, kw.get("positions"), ctx, kw.get("log_a")))
            want = np.asarray(_generic(f, X, ctx, kw.get("positions"), kw.get("log_a")))
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
    # multi-head: every head takes the factored path, the sum equals the generic heads' sum
    g = gf.Softmax(rng.normal(size=(k, d)), rng.normal(size=(k, d)), rng.normal(size=(kv, d)),
                   rng.normal(size=(d, kv)), beta=0.6)
    mh = f + g
    want = _generic(f, X, P.Context()) + _generic(g, X, P.Context())
    np.testing.assert_allclose(np.asarray(P.velocity(mh, X)), np.asarray(want), rtol=0,
                               atol=1e-12 * float(jnp.abs(want).max()))


def test_square_factors_keep_the_generic_path():
    rng = np.random.default_rng(1)
    d = 3
    f = gf.Softmax(rng.normal(size=(d, d)), rng.normal(size=(d, d)), np.eye(d))
    assert factored_scores(f, jnp.zeros((5, d))) is None
    assert factored_scores(gf.L2(np.eye(d)[:2], np.eye(d)[:2], np.eye(d)), jnp.zeros((5, d))) is None
