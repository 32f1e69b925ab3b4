r"""The d = 8 clustering reproduction: a random softmax layer schedule, closure against particles.

- `clustering_schedule` — layer $l$: $Q_l$ standard normal `(2, d)`, $K_l = -Q_l$,
  $V_l = I + 0.1 G_l$, $\beta = 1/\sqrt{d}$.
- `clustering` — the normalised spectrum $\operatorname{eig}(\Sigma)/\operatorname{tr}\Sigma$
  against depth from the closure and from a mirrored (antithetic) cloud, on the same axes.
- `clustering_gap` — the largest gap between the closure's and the particles' normalised
  spectra against $N$, for independent and for mirrored clouds, after one and after three
  layers.

**Why mirrored clouds.** $V_l$ close to $I$ expands the whole cloud, its mean included: the
mean of an independent cloud, $O(N^{-1/2})$ off at the start (and followed by the noise of its
mean velocity), moves away like $e^t$; the closure, started from the cloud's moments, follows it.
Once the mean is several spreads from the origin, the softmax tilt of a typical query ($K = -Q$:
the key mean shifted by $-\beta \Sigma Q^T Q x$, which grows with the query's distance from the
origin) lies beyond the sample: each query puts nearly all of its weight on one extreme key (the
median effective number of keys, `gaussflow.particles.effective_keys`, falls to about 1), the
particles' covariance stops contracting in the directions the closure still contracts, and the
normalised spectra part. More particles barely help (seed 0: the three-layer gap stays at 0.10-0.12
from N = 256 to 2048). A mirrored cloud (pairs $x$, $-x$ about the mean $0$) has its mean
exactly at $0$ and, since $K = -Q$ scores are even under $x \mapsto -x$ and $V$ is linear, keeps
it there: its queries keep many effective keys, and the gap stays at the level of its Monte Carlo
error (0.003-0.008 at N = 256 to 2048).
"""

from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np

from . import particles, theory
from .gaussian import Gaussian
from .integrate import solve
from .variants import Layers, Softmax

#: Number of equispaced saved times of the closure in the spectrum figure (besides the save
#: times of the particles, `spectrum_gap`'s `extra_times`).
N_SAVE = 101

#: Save times per layer of the particle runs (and of the gap).
SAVES_PER_LAYER = 4


def clustering_schedule(d: int = 8, n_layers: int = 6, seed: int = 0,
                        duration: float = 4.0) -> Layers:
    r"""A random softmax layer schedule: layer $l$ has $Q_l$ standard normal ($2 \times d$),
    $K_l = -Q_l$, $V_l = I + 0.1 G_l$ ($G_l$ standard normal), $\beta = 1/\sqrt{d}$, duration
    `duration`.

    Parameters
    ----------
    d : int
        Token dimension.
    n_layers : int
        Number of layers.
    seed : int
        Seed of the weights (`numpy.random.default_rng`).
    duration : float
        Depth of every layer.

    Returns
    -------
    Layers
        The schedule (total depth `n_layers * duration`).
    """
    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(n_layers):
        Q = rng.normal(size=(2, d))
        V = np.eye(d) + 0.1 * rng.normal(size=(d, d))
        layers.append((Softmax(Q, -Q, V, beta=1 / math.sqrt(d)), duration))
    return Layers(layers)


def spectrum_gap(sched: Layers, x0: np.ndarray, extra_times: int = 0) -> dict:
    r"""Closure against particles from the cloud `x0` through `sched`.

    The closure starts from the cloud's empirical moments (the validation protocol); both are
    saved at `SAVES_PER_LAYER` times per layer.

    Parameters
    ----------
    sched : Layers
        The layer schedule.
    x0 : numpy.ndarray
        The cloud, shape `(N, d)`.
    extra_times : int
        The closure is also saved at this many equispaced times (for a figure; one
        solve); the gap uses the common times only.

    Returns
    -------
    dict
        `gap`: $\max_t \max_k |\lambda_k(\Sigma(t)) - \lambda_k(S_N(t))|$ over the save
        times, $\lambda$ the normalised spectrum (eigenvalues of $S / \operatorname{tr} S$,
        decreasing); `keys_median`: the lowest median over queries of the effective number of
        keys at the save times; `mean_spreads`: $|\alpha(T)| / \sqrt{\mathrm{tr}\,\Sigma(T)}$
        of the closure at the end; `statuses` (closure, particles); the trajectories `closure`,
        `particles`.
    """
    T = sched.total
    ts = np.linspace(0.0, T, SAVES_PER_LAYER * len(sched.fields) + 1)
    tc = np.union1d(ts, np.linspace(0.0, T, extra_times)) if extra_times else ts
    m0, S0 = (np.asarray(a) for a in particles.empirical_moments(x0))
    tr = solve(sched, Gaussian(m0, S0), T, ts=tc)
    pt = particles.simulate(sched, x0, ts)
    _, Sp = pt.moments()
    k = min(len(pt.ts), int(np.sum(np.isin(ts, tr.ts))))
    common = np.searchsorted(tr.ts, ts[:k])
    gap = np.max(np.abs(theory.normalised_spectrum(tr.covs[common])
                        - theory.normalised_spectrum(Sp[:k])))
    keys = particles.effective_keys_path(sched, pt.ts, pt.xs)
    spread = np.sqrt(np.trace(tr.covs[-1]))
    return {"gap": float(gap), "keys_median": float(np.min(np.median(keys, axis=1))),
            "mean_spreads": float(np.linalg.norm(tr.means[-1]) / spread),
            "statuses": (tr.status, pt.status), "closure": tr, "particles": pt}


def clustering(out_dir: str, quick: bool = False, seed: int = 0,
               log: Callable = print) -> tuple[dict, list[str]]:
    """Normalised spectrum against depth, closure vs particles (a mirrored cloud), for
    `clustering_schedule` (8 layers, $N = 2048$; quick: 3 layers, $N = 256$).

    Parameters
    ----------
    out_dir : str
        Folder of the figure `clustering_spectrum.png` (and `.pdf`).
    quick : bool
        The small setting.
    seed : int
        Seed of the weights and of the cloud.
    log : Callable
        Progress lines.

    Returns
    -------
    tuple
        `(summary, files)`: the numbers (largest spectrum gap, effective ranks, lowest median
        effective keys, statuses) and the written PNG.
    """
    from . import plots, plots_regimes

    d = 8
    n_layers = 3 if quick else 8
    n_particles = 256 if quick else 2048
    sched = clustering_schedule(d=d, n_layers=n_layers, seed=seed)
    g0 = Gaussian(np.zeros(d), np.eye(d))
    x0 = particles.sample(g0, n_particles, seed=seed, method="antithetic")
    res = spectrum_gap(sched, x0, extra_times=N_SAVE)
    pt, tr = res["particles"], res["closure"]
    spec = theory.normalised_spectrum(tr.covs)
    spec_p = theory.normalised_spectrum(pt.moments()[1])
    fig = plots_regimes.spectrum_depth(tr.ts, spec, particles=(pt.ts, spec_p),
                               switch_times=sched.switch_times[:-1],
                               title=f"random {n_layers}-layer softmax schedule, d = {d}, "
                                     f"N = {n_particles} mirrored particles")
    path = plots.save(fig, os.path.join(out_dir, "clustering_spectrum"))
    er = theory.effective_rank(tr.covs)
    log(f"  clustering d={d}: closure status {tr.status}, particles {pt.status}; effective rank "
        f"{er[0]:.2f} -> {er[-1]:.2f}; max |spectrum closure - particles| = {res['gap']:.3g} "
        f"(mirrored cloud); lowest median effective keys {res['keys_median']:.3g}")
    return {"d": d, "layers": n_layers, "particles": n_particles, "sampler": "antithetic",
            "status": tr.status, "particle_status": pt.status,
            "effective_rank_start": float(er[0]), "effective_rank_end": float(er[-1]),
            "max_spectrum_gap": res["gap"], "effective_keys_median_min": res["keys_median"]}, [path]


def clustering_gap(out_dir: str, quick: bool = False, seed: int = 0, log: Callable = print,
                   n_particles: tuple[int, ...] | None = None,
                   cloud_seeds: tuple[int, ...] = (0,)) -> tuple[dict, list[str]]:
    """The spectrum gap against $N$, independent vs mirrored clouds, one and three layers of
    `clustering_schedule` (`seed`).

    The default run takes about two minutes on 2 cores, most of it the independent clouds through
    three layers (their particle ODE stiffens as the attention concentrates).

    Parameters
    ----------
    out_dir : str
        Folder of the figure `clustering_gap.png` (and `.pdf`).
    quick : bool
        Sizes $N = 128, 512$ instead of $256, 512, 1024, 2048$.
    seed : int
        Seed of the weights.
    log : Callable
        Progress lines.
    n_particles : tuple of int or None
        The sizes (overrides `quick`).
    cloud_seeds : tuple of int
        One cloud per size and seed.

    Returns
    -------
    tuple
        `(summary, files)`: `summary["cases"][case][sampler]` holds, per $N$ and cloud seed,
        the `gap`, the lowest median effective keys `keys_median`, the closure's final mean in
        spreads `mean_spreads` and the `statuses` (see `spectrum_gap`); `files` the
        written PNG.
    """
    from . import plots, plots_regimes

    d = 8
    ns = tuple(n_particles or ((128, 512) if quick else (256, 512, 1024, 2048)))
    cloud_seeds = tuple(cloud_seeds)
    full = clustering_schedule(d=d, n_layers=3, seed=seed)
    cases = {"1 layer": Layers([(full.fields[0], full.durations[0])]), "3 layers": full}
    g0 = Gaussian(np.zeros(d), np.eye(d))
    summary = {"d": d, "n_particles": list(ns), "cloud_seeds": list(cloud_seeds), "cases": {}}
    for case, sched in cases.items():
        out = {}
        for method in ("random", "antithetic"):
            rows = {"gap": [], "keys_median": [], "mean_spreads": [], "statuses": []}
            for n in ns:
                runs = [spectrum_gap(sched, particles.sample(g0, n, seed=s, method=method))
                        for s in cloud_seeds]
                for key in rows:
                    rows[key].append([r[key] for r in runs])
                log(f"  gap {case}, {method:10s} N={n:5d}: gap "
                    + ", ".join(f"{r['gap']:.4f}" for r in runs) + "; median keys "
                    + ", ".join(f"{r['keys_median']:.3g}" for r in runs) + "; mean/spread "
                    + ", ".join(f"{r['mean_spreads']:.3g}" for r in runs))
            out[method] = rows
        summary["cases"][case] = out
    fig = plots_regimes.gap_against_n(summary, title=f"closure vs particles, d = {d}, random softmax "
                                             f"layers (K = -Q, V = I + 0.1 G)")
    path = plots.save(fig, os.path.join(out_dir, "clustering_gap"))
    return summary, [path]
