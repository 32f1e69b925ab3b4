r"""The mean-field limit from compactly supported data, for every variant (`gaussflow reproduce
--only meanfield`).

For each of softmax, multi-head, L2, Sinkhorn, sigmoid and masked softmax (the validation example
of each variant, `gaussflow.validation.example`, in $d = 2$), token clouds of growing $N$ drawn
uniformly from the ball of radius $\sqrt{d + 2}$ (covariance $I$, compact support, not Gaussian)
are run against a reference cloud of $N_{\mathrm{ref}}$ tokens with
`gaussflow.particles.mean_field_convergence`: $W_2$ against $N$ at each time, the fitted rate $p$
of $W_2 \propto N^{-p}$ with its spread over repeats, how far the reference cloud is from Gaussian
over time, and the Gaussian closure started from the cloud's moments against the cloud.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np

from . import particles
from .validation import example
from .variants import Masked

#: The variants of the study (the masked one wraps the softmax example, 2 position blocks).
VARIANTS = ("softmax", "multihead", "l2", "sinkhorn", "sigmoid", "masked")


def study_fields(d: int = 2, seed: int = 0) -> dict:
    """`{name: (field, t1)}` for the variants of `VARIANTS` (validation examples in dimension
    `d`; `t1` the example's horizon, at most 1)."""
    out = {}
    for name in VARIANTS:
        base = "softmax" if name == "masked" else name
        field, _, t1 = example(base, d=d, seed=seed)
        if name == "masked":
            field = Masked(field, 2)
        out[name] = (field, min(float(t1), 1.0))
    return out


def meanfield(out_dir: str, quick: bool = False, seed: int = 0,
              log: Callable[[str], None] = print) -> tuple[dict, list[str]]:
    r"""Run the study; write the figure `meanfield.png`.

    Parameters
    ----------
    out_dir : str
        Output folder (exists).
    quick : bool
        $N \in \{32, 64, 128\}$ against 2048 tokens, 2 repeats, softmax, L2 and Sinkhorn only;
        otherwise $N \in \{64, 128, 256, 512\}$ against 4096, 3 repeats, every variant (the
        reference must be much larger than every $N$: its own sampling error bounds the
        distances from below and flattens the fitted rate).
    seed : int
        Seed of the weights and of the clouds.
    log : callable
        Receives one line per variant.

    Returns
    -------
    tuple
        `(summary, files)`: per variant the fitted rates, $W_2$ per $N$ at the final time, the
        distance from Gaussian and the closure's covariance error over time.
    """
    import matplotlib.pyplot as plt

    from . import plots

    d = 2
    ns, n_ref, repeats = ((32, 64, 128), 2048, 2) if quick else ((64, 128, 256, 512), 4096, 3)
    fields = study_fields(d, seed)
    if quick:
        fields = {k: fields[k] for k in ("softmax", "l2", "sinkhorn")}
    measure = particles.uniform_ball(d, radius=math.sqrt(d + 2))
    summary, reports = {}, {}
    for name, (field, t1) in fields.items():
        rep = particles.mean_field_convergence(field, measure, ns, t1, n_ref=n_ref, n_times=3,
                                               repeats=repeats, seed=seed)
        reports[name] = rep
        summary[name] = {
            "t1": t1, "ns": rep.ns.tolist(), "n_ref": n_ref, "ts": rep.ts.tolist(),
            "rate": rep.rate.tolist(), "rate_spread": rep.rate_spread.tolist(),
            "w2_final": rep.w2[:, :, -1].mean(axis=1).tolist(),
            "gaussian_distance": rep.gaussian_distance.tolist(),
            "gaussian_floor": rep.gaussian_floor.tolist(),
            "closure_cov_error": rep.closure_cov_error.tolist(),
            "closure_status": rep.closure_status,
        }
        log(f"  meanfield {name:9s} rate at t = 0, t1: {rep.rate[0]:.2f}, {rep.rate[-1]:.2f} "
            f"(+- {rep.rate_spread[-1]:.2f}); W2 to Gaussian {rep.gaussian_distance[-1]:.3f} "
            f"(floor {rep.gaussian_floor[-1]:.3f}); closure cov error "
            f"{rep.closure_cov_error[-1]:.2g}")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for name, rep in reports.items():
        w = rep.w2[:, :, -1].mean(axis=1)
        axes[0].loglog(rep.ns, w, "o-", label=f"{name} (p = {rep.rate[-1]:.2f})")
        axes[1].plot(rep.ts, rep.gaussian_distance, "o-", label=name)
        axes[2].semilogy(rep.ts[1:], np.maximum(rep.closure_cov_error[1:], 1e-16), "o-",
                         label=name)
    ref = reports[next(iter(reports))]
    axes[0].loglog(ref.ns, ref.w2[0, :, -1].mean() * (ref.ns / ref.ns[0]) ** -0.5, "k--",
                   label="$N^{-1/2}$")
    axes[1].plot(ref.ts, ref.gaussian_floor, "k--", label="two Gaussian samples")
    axes[0].set(xlabel="N", ylabel="$W_2$ to the reference cloud at $t_1$",
                title=f"uniform ball, d = {d}, reference N = {n_ref}")
    axes[1].set(xlabel="t", ylabel="$W_2$ to the moment-matched Gaussian",
                title="reference cloud vs Gaussian")
    axes[2].set(xlabel="t", ylabel="relative covariance error",
                title="Gaussian closure vs the cloud")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    files = [plots.save(fig, os.path.join(out_dir, "meanfield"))]
    return summary, files
