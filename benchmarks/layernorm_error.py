"""Measured error of `gf.layer_norm_gaussian` (delta-method orders 0 to 4, derived by the engine)
against the exact moments (`order="exact"`, one-dimensional Laplace integrals), d = 32 ... 768;
the exact moments themselves against Monte Carlo.

State: alpha ~ 0.5 + N(0, I), Sigma = G diag(U(0.2, 2)) G^T + 0.1 I with G ~ N(0, 1/d) (seed d).
Monte Carlo with a control variate: LN(X) minus the leading-order affine map of the same X,
whose moments are known exactly; N samples; the noise is the spread between two halves.
Relative errors: mean |m - m_MC| / |m_MC|, covariance in the Frobenius norm.
Run: `python benchmarks/layernorm_error.py [N]`.
"""

import sys
import time

import numpy as np

from gaussflow.layernorm import layer_norm, ln_moments, ln_moments_exact


def state(d):
    rng = np.random.default_rng(d)
    a = 0.5 + rng.normal(size=d)
    G = rng.normal(size=(d, d)) / np.sqrt(d)
    return a, G @ np.diag(rng.uniform(0.2, 2, d)) @ G.T + 0.1 * np.eye(d), rng


def monte_carlo(d, n, batch=10_000):
    """Two half-sample estimates of the LN mean and covariance (control variate)."""
    al, Sig, rng = state(d)
    P = np.eye(d) - 1.0 / d
    a, S = P @ al, P @ Sig @ P
    L = np.linalg.cholesky(Sig)
    f0 = 1 / np.sqrt((np.trace(S) + a @ a) / d + 1e-12)
    halves = []
    for _ in range(2):
        dm, dC, k = np.zeros(d), np.zeros((d, d)), 0
        while k < n // 2:
            X = al + rng.normal(size=(batch, d)) @ L.T
            Y = layer_norm(X, 1.0, 0.0)
            A = (X - X.mean(1, keepdims=True)) * f0
            dm += (Y - A).sum(0)
            dC += Y.T @ Y - A.T @ A
            k += batch
        m = f0 * a + dm / k
        halves.append((m, f0 ** 2 * (S + np.outer(a, a)) + dC / k - np.outer(m, m)))
    return a, S, halves


def rel(x, y):
    return np.linalg.norm(x - y) / np.linalg.norm(y)


def main(n=200_000, dims=(32, 64, 128, 256, 768)):
    orders = (0, 1, 2, 3, 4)
    print("| d | mean error, order " + " / ".join(map(str, orders)) + " | cov error, order "
          + " / ".join(map(str, orders)) + " | exact vs MC (mean, cov) | MC noise (mean, cov) |")
    print("|---|---|---|---|---|")
    for d in dims:
        t = time.time()
        a, S, (h1, h2) = monte_carlo(d, n)
        m_mc, C_mc = (h1[0] + h2[0]) / 2, (h1[1] + h2[1]) / 2
        noise = rel(h1[0], h2[0]) / 2, rel(h1[1], h2[1]) / 2
        m_ex, C_ex = ln_moments_exact(a, S)
        errs = [(rel(m, m_ex), rel(C, C_ex)) for m, C in (ln_moments(a, S, o) for o in orders)]
        print(f"| {d} | " + " / ".join(f"{e[0]:.1e}" for e in errs) + " | "
              + " / ".join(f"{e[1]:.1e}" for e in errs)
              + f" | {rel(m_ex, m_mc):.0e}, {rel(C_ex, C_mc):.0e} | {noise[0]:.0e}, {noise[1]:.0e} |"
              f"  ({time.time() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:2]])
