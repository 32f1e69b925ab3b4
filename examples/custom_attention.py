"""Declare your own attention variants, from outside the package, and get everything else.

Three declarations, each a few lines: linear attention (exact closure found by the engine), softmax
with a depth schedule beta(t) = beta0 (1 + t) (time-dependent weights), and an unnormalised Gaussian
kernel (no exact closure: the engine reports its moment projection). Each is derived (text and
LaTeX), solved, simulated with particles and validated; the figure compares closure and particles.

    python examples/custom_attention.py [--quick] [--out DIR]
"""
import argparse
import os
import sys

import numpy as np
import sympy as sp

import gaussflow as gf
from gaussflow.attention.symbols import K, Q, V, W_O, beta, c, t, x, y


class Linear(gf.Attention):
    """Linear attention: weights beta <Q x, K y>, not normalised."""

    name = "linear"
    score = beta * (Q * x).T * (K * y)
    normalisation = gf.NoNormalisation("linear")
    defaults = {"W_O": "identity"}


beta0 = sp.Symbol("beta0", real=True)


class ScheduledSoftmax(gf.Attention):
    """Softmax attention whose score scale grows with depth: beta(t) = beta0 (1 + t)."""

    name = "softmax_schedule"
    score = beta0 * (1 + t) * (Q * x).T * (K * y)
    normalisation = gf.SoftmaxNormalisation()
    defaults = {"W_O": "identity", "beta0": 1.0}


class GaussianKernel(gf.Attention):
    """Unnormalised Gaussian kernel exp(-c |Q x - K y|^2): not closed, moment-projected."""

    name = "gaussian_kernel"
    score = -c * (Q * x - K * y).T * (Q * x - K * y)
    normalisation = gf.NoNormalisation("exp")
    defaults = {"W_O": "identity", "c": 0.5}


def problems(d=2, seed=0):
    """One moderate problem ``(field, g0, t1)`` per declaration."""
    rng = np.random.default_rng(seed)
    A = 0.5 * rng.normal(size=(d, d)) / np.sqrt(d)
    g0 = gf.Gaussian(0.5 * rng.normal(size=d), np.eye(d) + 0.2 * A @ A.T)
    I = np.eye(d)
    return {
        "linear": (Linear(A, -A.T, -0.5 * I, beta=0.5), g0, 1.0),
        "softmax_schedule": (ScheduledSoftmax(A, -A, I, beta0=0.5), g0, 1.0),
        "gaussian_kernel": (GaussianKernel(A, A, -0.5 * I, c=0.5), g0, 1.0),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small clouds, two seeds")
    p.add_argument("--out", default="figures", help="output folder (default ./figures)")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    ns, seeds = ((64, 256), (0, 1)) if a.quick else ((256, 1024, 4096), (0, 1, 2))
    reports, files = {}, []
    for name, (field, g0, t1) in problems().items():
        D = gf.derive(field)
        print(D.text(), "\n")
        traj = gf.solve(field, g0, t1)
        rep = gf.validate(field, g0, t1, n_particles=ns, seeds=seeds)
        reports[name] = rep
        print(f"{name}: exact={field.exact} status={traj.status} verdict={rep.verdict}\n")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, (name, rep) in zip(axes, reports.items()):
        for n in rep.n_particles:
            cv = rep.curves[str(n)]
            err = np.sqrt(np.mean(np.square(cv["cov"]), axis=0))  # rms over seeds
            ax.semilogy(cv["ts"], np.maximum(err, 1e-16), label=f"N = {n}")
        ax.set_title(f"{name} ({'exact' if rep.exact else 'approximate'})")
        ax.set_xlabel("t")
        ax.set_ylabel("covariance error, closure vs particles")
        ax.legend()
    fig.tight_layout()
    for ext in ("png", "pdf"):
        path = os.path.join(a.out, f"custom_attention.{ext}")
        fig.savefig(path, dpi=120)
        if ext == "png":
            files.append(path)
    plt.close(fig)
    print("\n".join(files))
    return files


if __name__ == "__main__":
    main(sys.argv[1:])
