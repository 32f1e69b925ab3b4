r"""The default study run by `gaussflow run`.

Softmax self-attention in $d = 2$ (the reference figures' convention $\beta = 1/\sqrt{d}$) from a
grid of trace-one initial covariances
$$\Sigma_0 = \frac{1}{2}\begin{pmatrix} 1 + u & w \\ w & 1 - u \end{pmatrix}, \qquad
u^2 + w^2 < 1,$$
for two choices of weights:

- *collapse*: $K = -Q$ with $Q$ uniform on $[0, 1)$ (seeded; redrawn until its smallest singular
  value is at least `MIN_SINGULAR`, so that $A + A^\top = -2 Q^\top Q$ is negative definite
  with a margin), $V = M M^\top$ ($M$ standard normal, seeded, redrawn the same way):
  $\Sigma \to 0$;
- *blow-up*: $A + A^\top$ positive definite, $V = I$: finite-time blow-up at
  $$T^* = 1/\lambda_{\max}\big(\beta\, \Sigma_0^{1/2} (A + A^\top) \Sigma_0^{1/2}\big).$$

Writes figures and `summary.json` / `summary.md` into the output folder.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from .gaussian import Gaussian
from .savetimes import solve_resolved
from .theory import classify
from .variants import Softmax


#: Smallest singular value of the collapse case's $Q$ (see the module docstring).
MIN_SINGULAR = 0.2


def trace_one_grid(n_radii: int = 3, n_angles: int = 8) -> list[np.ndarray]:
    r"""Trace-one 2x2 covariances on circles of radius < 1 in the $(u, w)$ disk, plus the centre.

    Parameters
    ----------
    n_radii : int
        Number of circles, radii evenly spaced in $[0.3, 0.9]$.
    n_angles : int
        Points per circle, evenly spaced in angle.

    Returns
    -------
    list of np.ndarray
        `1 + n_radii * n_angles` covariances of shape `(2, 2)`, the centre ($\Sigma_0 = I/2$)
        first.
    """
    pts = [(0.0, 0.0)]
    for r in np.linspace(0.3, 0.9, n_radii):
        for th in np.linspace(0, 2 * np.pi, n_angles, endpoint=False):
            pts.append((r * np.cos(th), r * np.sin(th)))
    return [np.array([[(1 + u) / 2, w / 2], [w / 2, (1 - u) / 2]]) for u, w in pts]


def default_weights(seed: int = 0) -> dict[str, tuple[Softmax, float]]:
    """The two weight choices of the study, as `{name: (field, t1)}`.

    `"collapse"` (`t1 = 1000`: the approach to 0 is like $1/t$) and `"blowup"` (`t1 = 10`); see the module docstring. `seed` draws
    the collapse case's weights.
    """
    rng = np.random.default_rng(seed)
    d = 2
    beta = 1 / np.sqrt(d)
    Q = rng.uniform(0, 1, size=(d, d))
    while np.linalg.svd(Q, compute_uv=False)[-1] < MIN_SINGULAR:
        Q = rng.uniform(0, 1, size=(d, d))  # a nearly singular Q gives a line, not a collapse
    M = rng.normal(size=(d, d))
    while np.linalg.svd(M, compute_uv=False)[-1] < MIN_SINGULAR:
        M = rng.normal(size=(d, d))  # a nearly singular V leaves a direction that barely moves
    collapse = Softmax(Q, -Q, M @ M.T, beta=beta)
    Qb = np.array([[1.0, 0.3], [-0.2, 0.8]])
    blowup = Softmax(Qb, np.eye(d), np.eye(d), beta=beta)  # A = Q, A + A^T > 0
    return {"collapse": (collapse, 1000.0), "blowup": (blowup, 10.0)}


def run_study(out_dir: str = "gaussflow-out", seed: int = 0, quick: bool = False) -> dict:
    """Run the default study; return the summary dict (also written to `out_dir`).

    Parameters
    ----------
    out_dir : str
        The output folder (created if missing): figures, `summary.json` and `summary.md`.
    seed : int
        Seed of the collapse case's weights.
    quick : bool
        A coarser grid (2 radii, 6 angles instead of 3 and 8).

    Returns
    -------
    dict
        The summary: per case the score matrix `A`, `beta`, `t1`, the runs (initial covariance,
        status, stop time, blow-up time, final trace) and the status counts; `seconds`, and
        `files`, the paths written.
    """
    from . import plots

    os.makedirs(out_dir, exist_ok=True)
    grid = trace_one_grid(2 if quick else 3, 6 if quick else 8)
    summary = {"variant": "softmax", "d": 2, "seed": seed, "cases": {}}
    files = []
    t_start = time.perf_counter()
    for name, (field, t1) in default_weights(seed).items():
        trajs = []
        rows = []
        for S0 in grid:
            g0 = Gaussian(np.zeros(2), S0)
            tr = solve_resolved(field, g0, t1, n_save=201)  # dense saves before a blow-up
            trajs.append(tr)
            rows.append({"cov0": S0.tolist(), "status": tr.status, "t_stop": tr.t_stop,
                         "blowup_time": tr.blowup_time, "regime": classify(tr).kind,
                         "final_trace": float(np.trace(tr.covs[-1]))})
        summary["cases"][name] = {
            "A": np.asarray(field.A).tolist(), "beta": float(field.beta), "t1": t1,
            "runs": rows,
            "statuses": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
            "regimes": {k: sum(r["regime"] == k for r in rows) for k in sorted({r["regime"] for r in rows})},
        }
        fig = plots.unit_disk(trajs, title=f"softmax, {name}: normalised covariance",
                              color_note="colour: initial $\\Sigma_0$, viridis in grid order\n"
                              "(dark: centre, then outward)")
        files.append(plots.save(fig, os.path.join(out_dir, f"disk_{name}")))
        fig = plots.eigenvalues(trajs, title=f"softmax, {name}: eigenvalues of Sigma(t)")
        files.append(plots.save(fig, os.path.join(out_dir, f"eigenvalues_{name}")))
    summary["seconds"] = time.perf_counter() - t_start
    with open(os.path.join(out_dir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    md = ["# gaussflow run: softmax, d = 2", ""]
    for name, case in summary["cases"].items():
        md.append(f"## {name} (t1 = {case['t1']})")
        md.append("")
        md.append("| # | status | regime | t_stop | blow-up time | final tr Sigma |")
        md.append("|---|---|---|---|---|---|")
        for i, r in enumerate(case["runs"]):
            bt = "—" if r["blowup_time"] is None else f"{r['blowup_time']:.6g}"
            md.append(f"| {i} | {r['status']} | {r['regime']} | {r['t_stop']:.4g} | {bt} | "
                      f"{r['final_trace']:.3g} |")
        md.append("")
    with open(os.path.join(out_dir, "summary.md"), "w") as fh:
        fh.write("\n".join(md))
    files += [os.path.join(out_dir, "summary.json"), os.path.join(out_dir, "summary.md")]
    summary["files"] = files
    return summary
