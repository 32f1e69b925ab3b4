"""jax.grad through gf.solve against central finite differences (softmax, L2, Sinkhorn, affine)."""

import jax
import jax.numpy as jnp
import numpy as np

import gaussflow as gf
from test_exact_variants import SOLVE, TS, _spd, sum_of_variants


def test_grad_of_final_covariance_matches_finite_differences():
    """One solve of softmax + L2 + Sinkhorn + affine; the derivative along a random direction in
    each summand's weights ((Q, K, V) of each attention field; (W, b)) is checked separately,
    relative 1e-5."""
    d = 2
    rng = np.random.default_rng(60)
    g = gf.Gaussian(rng.normal(size=d), _spd(rng, d))
    base = sum_of_variants(d, 61)
    sm, l2, sk, aff = base.parts
    p0 = {f"{tag}{n}": np.asarray(getattr(f, n)) for tag, f in (("s", sm), ("l", l2), ("k", sk))
          for n in ("Q", "K", "V")}
    p0.update(W=np.asarray(aff.W), b=np.asarray(aff.b))
    Wt = _spd(rng, d)
    u = rng.normal(size=d)
    statuses = []

    def loss(p):
        f = (gf.Softmax(p["sQ"], p["sK"], p["sV"], beta=float(sm.beta))
             + gf.L2(p["lQ"], p["lK"], p["lV"], c=float(l2.c))
             + gf.Sinkhorn(p["kQ"], p["kK"], p["kV"], eps=float(sk.eps))
             + gf.Affine(p["W"], p["b"]))
        tr = gf.solve(f, g, 1.0, ts=TS, **SOLVE)
        statuses.append(tr.status)
        return jnp.sum(tr.covs[-1] * Wt) + tr.means[-1] @ u

    grads = jax.grad(loss)(p0)
    assert statuses[-1] == "traced"
    loss(p0)
    assert statuses[-1] == "completed"
    h = 1e-5
    groups = {"softmax": ("sQ", "sK", "sV"), "l2": ("lQ", "lK", "lV"),
              "sinkhorn": ("kQ", "kK", "kV"), "affine": ("W", "b")}
    for name, keys in groups.items():  # a random direction in the weights of one summand
        D = {k: (rng.normal(size=v.shape) if k in keys else np.zeros_like(v)) for k, v in p0.items()}
        plus = {k: p0[k] + h * D[k] for k in p0}
        minus = {k: p0[k] - h * D[k] for k in p0}
        fd = (float(loss(plus)) - float(loss(minus))) / (2 * h)
        ad = float(sum(np.sum(np.asarray(grads[k]) * D[k]) for k in keys))
        assert abs(ad - fd) <= 1e-5 * abs(fd), (name, ad, fd)
