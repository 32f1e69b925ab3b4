"""A Sinkhorn regime-map member that used to stall at max_steps: solve it, and at its saved states
compare d Sigma/dt = J Sigma + Sigma J^T (the field's closure) and the literal formula
(I + (I + 4 H^T H)^{1/2})^{-1} in NumPy with 50-digit arithmetic, per eigen-direction of Sigma
(error / sqrt(l_i l_j)). Usage: python docs/runs/sinkhorn_stall.py D DRAW BETA_OVER_EPS"""
import sys, time
import jax.numpy as jnp, mpmath as mp, numpy as np
import gaussflow as gf
from gaussflow.theory.maps import draw_weights, save_times

d, i, p = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
w = draw_weights(d, 32, 0, 1.0)
f = gf.Sinkhorn(w["Q"][i], w["K"][i], np.eye(d), beta=p, eps=1.0)
G = p * w["Q"][i].T @ w["K"][i]  # x^T G y = (beta/eps) <Q x, K y>
t = time.perf_counter()
tr = gf.solve(f, gf.Gaussian(np.zeros(d), np.eye(d)), 500 / p, ts=save_times(500 / p, 101))
print(f"{tr.status} at t = {tr.t_stop:.4g}, {tr.num_steps} steps, {time.perf_counter() - t:.1f} s")


def sqrt_psd(X, mod):
    E, U = mod.eigsy(X) if mod is mp else np.linalg.eigh(X)
    if mod is mp:
        return U * mp.diag([mp.sqrt(max(e, 0)) for e in E]) * U.T
    return (U * np.sqrt(np.clip(E, 0, None))) @ U.T


def literal(S, mod):
    """C + C^T, C = 2 R H (I + (I + 4 H^T H)^{1/2})^{-1} R, H = R G R (mpmath or NumPy)."""
    if mod is mp:
        with mp.workdps(50):
            R = sqrt_psd(mp.matrix(S.tolist()), mp); H = R * mp.matrix(G.tolist()) * R
            C = R * (2 * H * mp.inverse(mp.eye(d) + sqrt_psd(mp.eye(d) + 4 * H.T * H, mp))) * R
            return np.array((C + C.T).tolist(), dtype=float)
    R = sqrt_psd(S, np); H = R @ G @ R
    C = R @ (2 * H @ np.linalg.inv(np.eye(d) + sqrt_psd(np.eye(d) + 4 * H.T @ H, np))) @ R
    return C + C.T


for k in range(0, len(tr.ts), 10):
    S = (tr.covs[k] + tr.covs[k].T) / 2
    lam, U = np.linalg.eigh(S)
    ref = literal(S, mp)
    J = np.asarray(f._closure(0.0, jnp.zeros(d), jnp.asarray(S))[1])
    err = lambda X: np.max(np.abs(U.T @ (X - ref) @ U) / np.sqrt(np.outer(lam, lam)))  # noqa: E731
    print(f"t = {tr.ts[k]:.4g}: tr/tr0 {np.trace(S) / d:.3g}, cond {lam[-1] / lam[0]:.3g}; "
          f"field {err(J @ S + S @ J.T):.2g}, literal (NumPy) {err(literal(S, np)):.2g}")
