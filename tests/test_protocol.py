"""The attention protocol: variants declared from outside the package (examples/custom_attention.py)
get a derivation, generated JAX, a particle system and validation; time is threaded everywhere."""

import os
import runpy

import numpy as np
import pytest
import sympy as sp

import gaussflow as gf
from gaussflow import registry
from gaussflow.attention.symbols import K, Q, beta, x, y

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "custom_attention.py")


@pytest.fixture(scope="module")
def custom():
    return runpy.run_path(EXAMPLE, run_name="custom_attention")


def test_linear_attention_exact_closure_found(custom):
    f, g0, _ = custom["problems"]()["linear"]
    assert f.exact and gf.derive(f).projection is None
    a, S = np.asarray(g0.mean), np.asarray(g0.cov)
    W = np.asarray(f.W_O @ f.V)
    xs = np.array([[0.3, -1.2], [2.0, 0.5]])
    expected = float(f.beta) * (W @ (S + np.outer(a, a)) @ np.asarray(f.K).T @ np.asarray(f.Q)
                                @ xs.T).T
    np.testing.assert_allclose(f.velocity(g0, xs), expected, rtol=1e-12, atol=1e-14)
    # The particle field tends to it: a large Sobol cloud of g0, velocity at its own points.
    X = gf.particles.sample(g0, 2**14, seed=1, method="sobol")
    v = np.asarray(gf.particles.velocity(f, X))
    closure = np.asarray(f.velocity(g0, X))
    assert np.max(np.abs(v - closure)) < 2e-2 * np.max(np.abs(closure))
    assert "linear: exact closure" in gf.derive(f).text()
    assert r"\Gamma" in gf.derive(f).latex() or "Sigma" in gf.derive(f).latex()


def test_schedule_matches_closed_form_and_generated_increment(custom):
    f, g0, _ = custom["problems"]()["softmax_schedule"]
    D = gf.derive(f)
    assert D.exact and D.time_dependent
    b0 = float(f.beta0)
    A = np.asarray(f.A)
    for t in (0.4, 1.0):
        B = b0 * (t + t**2 / 2)  # int_0^t beta0 (1 + s) ds
        inc = np.asarray(D.functions["inverse_increment"](t, *f._args()))
        np.testing.assert_allclose(inc, -B * (A + A.T), rtol=1e-12, atol=1e-14)
    traj = gf.solve(f, g0, 1.0, ts=[0.0, 0.5, 1.0], rtol=1e-10, atol=1e-12)
    assert traj.status == "completed"
    for t, S in zip(traj.ts, traj.covs):
        B = b0 * (t + t**2 / 2)
        S_exact = np.linalg.inv(np.linalg.inv(np.asarray(g0.cov)) - B * (A + A.T))
        np.testing.assert_allclose(S, S_exact, rtol=1e-7, atol=1e-10)
    # At time t the field is softmax at scale beta0 (1 + t): closure and particles.
    s = gf.Softmax(f.Q, f.K, f.V, beta=b0 * 1.7)
    np.testing.assert_allclose(f.moment_rhs(g0, t=0.7)[1], s.moment_rhs(g0)[1], rtol=1e-12)
    X = gf.particles.sample(g0, 64, seed=0)
    from gaussflow.particles import particle_velocity

    np.testing.assert_allclose(particle_velocity(f, X, t=0.7), particle_velocity(s, X),
                               rtol=1e-12, atol=1e-14)


def test_schedule_validates_against_particles(custom):
    f, g0, t1 = custom["problems"]()["softmax_schedule"]
    rep = gf.validate(f, g0, t1, n_particles=(256, 1024), seeds=(0, 1, 2))
    assert rep.verdict == "consistent", str(rep)


def test_approximate_variant_names_its_projection(custom):
    f, g0, t1 = custom["problems"]()["exp_key_bias"]
    D = gf.derive(f)
    assert not f.exact and "moment projection" in D.projection and "closed form" in D.projection
    assert "approximate" in D.text() and "integrability" in D.functions
    traj = gf.solve(f, g0, t1)
    assert traj.status == "completed"
    rep = gf.validate(f, g0, 0.5, n_particles=(128, 512), seeds=(0, 1))
    assert rep.verdict == "approximate"
    # The closure's error against particles is measured and small at moderate scores.
    assert max(rep.cov.rms) < 0.05, str(rep)


def test_declaration_errors_are_clear():
    with pytest.raises(TypeError, match="score"):
        type("NoKey", (gf.Attention,), {"name": "nokey", "score": beta * (Q * x).T * (K * x),
                                        "normalisation": gf.SoftmaxNormalisation()})
    with pytest.raises(TypeError, match="normalisation"):
        type("NoNorm", (gf.Attention,), {"name": "nonorm", "score": beta * (Q * x).T * (K * y),
                                         "normalisation": "softmax"})
    with pytest.raises(ValueError, match="taken by the built-in"):
        type("Mine", (gf.Attention,), {"name": "softmax", "score": beta * (Q * x).T * (K * y),
                                       "normalisation": gf.SoftmaxNormalisation()})
    assert registry.lookup("softmax") is gf.Softmax
    with pytest.raises(ValueError, match="K has shape"):
        gf.Softmax(np.eye(2), np.eye(3), np.eye(2))
    with pytest.raises(ValueError, match="c must be"):
        gf.L2(np.eye(2), np.eye(2), np.eye(2), c=-1.0)
    with pytest.raises(TypeError):
        gf.Softmax(np.eye(2), np.eye(2), np.eye(2), np.eye(2), 0.5)  # scales are keyword-only


def test_constructor_signature_read_from_declaration():
    sig = str(gf.Sinkhorn.signature())
    assert sig.startswith("(Q, K, V, W_O=None, *") and "eps=1.0" in sig and "beta=1.0" in sig
    f = gf.Sinkhorn(np.eye(2), -np.eye(2), np.eye(2), eps=2.0)
    assert float(f.eps) == 2.0 and float(f.beta) == 1.0


def test_masked_documents_the_inner_variant_and_refuses_what_it_cannot_take():
    I = np.eye(2)
    m = gf.Masked(gf.L2(I, -I, I, c=0.5), 3)
    D = gf.derive(m)
    assert "l2" in D.name and "block_closure" in D.functions
    assert D.velocity.has(sp.Symbol("c", positive=True)) and "beta" not in str(D.velocity)
    g = gf.PositionalGaussians.repeat(gf.Gaussian([0.0, 1.0], I), 3)
    dm, dS = m.moment_rhs(g)
    d1, S1 = gf.L2(I, -I, I, c=0.5).moment_rhs(g.block(0))
    np.testing.assert_allclose(dm[2], d1, rtol=1e-12)  # equal blocks: the unmasked closure
    np.testing.assert_allclose(dS[2], S1, rtol=1e-12)
    # Sinkhorn: its particle system has a causal (per-prefix) Sinkhorn; the block velocity is the
    # Sinkhorn closure of the prefix Gaussian
    Ds = gf.derive(gf.Masked(gf.Sinkhorn(I, -I, I), 3))
    assert "sinkhorn" in Ds.name and "_sqrtm_psd(Sigma_p)" in Ds.jax_source
    with pytest.raises(ValueError, match="approximate"):
        gf.Masked(gf.Sigmoid(I, -I, I), 3)
    with pytest.raises(ValueError, match="cannot take"):
        gf.Masked(gf.Layers([(gf.Softmax(I, -I, I), 1.0)]), 3)


def test_start_outside_the_integrable_domain_is_not_integrable():
    """Unnormalised weights with the integrals already divergent at t0: the documented status,
    found before integrating, and moment_rhs refuses instead of returning NaN."""
    I = np.eye(2)
    f = gf.Unnormalized(I, I, I, beta=5.0)
    g = gf.Gaussian([0.1, 0.0], np.diag([0.5, 0.3]))
    assert f.integrability_margin(g) < 0
    tr = gf.solve(f, g, 1.0)
    assert tr.status == "not_integrable" and tr.t_stop == 0.0 and tr.num_steps == 0
    assert np.all(np.isfinite(tr.covs))
    with pytest.raises(ValueError, match="integrability margin"):
        f.moment_rhs(g)
