r"""Reproductions of the reference experiments (the 2-D regimes and rank histograms of the
reference code's figures) and a clustering figure.

`gaussflow reproduce [--out DIR] [--quick] [--only PART]` runs `reproduce`, which calls

- `regimes` — the six 2-D regimes for each listed variant: every trace-one initial covariance of
  a grid is solved, classified with `gaussflow.theory.classify`, and drawn on the unit disk
  $(a - b, 2c)/\operatorname{tr}\Sigma$ and in the PSD cone $(a - b, 2c, a + b)$. Paths are
  coloured by their classified regime (`gaussflow.plots_regimes.REGIME_COLORS`); red dashes mark the
  limits the theory predicts (the kernel of $A + A^\top$ for "line", the stationary lines
  $u^\top A u = 0$ for "two lines"/"either", the blow-up directions for softmax).
- `rank_histograms` — $d = 3, 4, 5$, $Q$ standard normal $\lfloor d/2 \rfloor \times d$,
  $K = -Q$, $V = I$ or $V = M^\top M$, softmax and L2: the rank of the limit covariance, from the
  exact limit (`gaussflow.theory.limit_rank`) for softmax with $V = I$ and from a converged
  solve + `gaussflow.theory.classify` otherwise. Every run is counted: runs that do not converge
  are reported under their regime (`collapse` = rank 0, `undetermined`, ...).
- `maps` (only when asked for: `parts=(..., "maps")`, `--only maps`) —
  `gaussflow.reproduce_maps.reproduce_maps`: regime maps (fraction of random weight draws in each
  regime against the scale and $d$) and blow-up times against the closed form.
- `meanfield` (only when asked for: `parts=(..., "meanfield")`, `--only meanfield`) —
  `gaussflow.reproduce_meanfield.meanfield`: the mean-field limit from compactly supported data,
  for every variant.
- `model` (only when asked for: `--only model`) — `gaussflow.model_report.whole_model`: a whole
  pretrained encoder (all-MiniLM-L6-v2; `--quick`: a random small one) predicted layer by layer by
  `gf.propagate` against its NumPy forward pass.
- `clustering` — a random multi-layer softmax schedule in $d = 8$ (`gf.Layers`); the normalised
  spectrum against depth from the closure and from a mirrored (antithetic) cloud, on the same
  axes; `clustering_gap` — the largest gap between the two spectra against $N$, for independent
  and for mirrored clouds, after one and three layers (both in `gaussflow.reproduce_clustering`,
  whose docstring explains why independent clouds part from the closure).

Scales (the reference code's): softmax $\beta = 1/\sqrt{d}$; L2 $c = 1/\sqrt{d}$; multi-head
($H = 2$) $\beta = 1/\sqrt{d/H}$; Sinkhorn $\beta = 1$, $\varepsilon = 1$. Seeds are fixed
(`seed`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import theory
from .gaussian import Gaussian
from .progress import WorkBar, reproduce_seconds
from .integrate import solve
from .savetimes import solve_resolved
from .study import trace_one_grid
from .reproduce_clustering import clustering, clustering_gap, clustering_schedule  # noqa: F401 (public here too)
from .depth_plot import depth_minilm
from .model_report import whole_model
from .reproduce_meanfield import meanfield
from .reproduce_maps import reproduce_maps
from .variants import L2, MultiHead, Sinkhorn, Softmax

if TYPE_CHECKING:
    from .field import Field

#: Number of saved times of every solve (one shape, so one compilation per field type).
N_SAVE = 101

_I2 = np.eye(2)


def _pad(q, rows=2):
    """Pad a `(k, d)` weight with zero rows to `rows` (same $A$, same compiled shapes)."""
    q = np.atleast_2d(np.asarray(q, float))
    return np.vstack([q, np.zeros((rows - q.shape[0], q.shape[1]))])


def _variants(Q, K, V, which, d=2):
    """The listed variants with the reference scales, built from one set of weights."""
    beta = 1 / math.sqrt(d)
    make = {
        "softmax": lambda: Softmax(Q, K, V, beta=beta),
        "l2": lambda: L2(Q, K, V, c=beta),
        "multihead": lambda: MultiHead.split(Q, K, V, None, 2, beta=1 / math.sqrt(d / 2)),
        "sinkhorn": lambda: Sinkhorn(Q, K, V, eps=1.0, beta=1.0),
    }
    return {name: make[name]() for name in which}


def regime_cases(seed: int = 1) -> list[dict]:
    """The six 2-D regimes of the reference figures.

    Parameters
    ----------
    seed : int
        Seed of the random weights of the "collapse" case (`numpy.random.default_rng`); the
        "two lines" and "either" cases use fixed seeds of their own.

    Returns
    -------
    list[dict]
        One dict per regime, with `name`, `title`, `fields` (`{variant: field}`), `t1`
        (`{variant: horizon}`), `expected` (`{variant: set of regime kinds}`) and, for the cases
        with a predicted limit rank, `rank`.
    """
    rng = np.random.default_rng(seed)
    Qc = rng.uniform(0, 1, size=(2, 2))
    M = rng.normal(size=(2, 2))
    q = _pad([[0.6, 0.8]])
    P = np.array([[0.0, 1.0], [1.0, 0.0]])
    Qb = np.array([[1.0, 0.3], [-0.2, 0.8]])
    Qi = np.array([[1.0, 0.0], [0.0, -1.0]])
    V_two = np.random.default_rng(0).normal(size=(2, 2))
    V_either = np.random.default_rng(3).normal(size=(2, 2))
    all4 = ("softmax", "l2", "multihead", "sinkhorn")
    cases = [
        dict(name="collapse", title="collapse: Q ~ U[0,1), K = -Q, V = M M^T",
             fields=_variants(Qc, -Qc, M @ M.T, all4), t1=1000.0,
             expected={v: {"collapse"} for v in all4}),
        dict(name="line", title="line: Q = q, K = -q, V = I",
             fields=_variants(q, -q, _I2, ("softmax", "l2")), t1=1000.0,
             expected={v: {"converge"} for v in ("softmax", "l2")}, rank=1),
        dict(name="plane", title="plane: H = 2 heads, Q = [e2; e1], K = -Q, V = I",
             fields=_variants(P, -P, _I2, ("multihead",)), t1=1000.0,
             expected={"multihead": {"converge", "stationary"}}, rank=2),
        dict(name="two_lines", title="two lines: A = diag(1, -1), V random",
             fields=_variants(Qi, _I2, V_two, ("softmax", "l2")), t1=300.0,
             expected={v: {"converge"} for v in ("softmax", "l2")}, rank=1),
        dict(name="blowup", title="blow-up: A + A^T > 0, V = I",
             fields=_variants(Qb, _I2, _I2, all4),
             t1={"softmax": 20.0, "l2": 20.0, "multihead": 20.0, "sinkhorn": 8.0},
             expected={"softmax": {"blowup"}, "multihead": {"blowup"}, "l2": {"growth"},
                       "sinkhorn": {"growth"}}),
        dict(name="either", title="either: A = diag(1, -1), V random",
             fields=_variants(Qi, _I2, V_either, ("softmax", "l2")),
             t1={"softmax": 100.0, "l2": 40.0},
             expected={"softmax": {"converge", "blowup"}, "l2": {"converge", "growth"}}),
    ]
    for c in cases:
        if not isinstance(c["t1"], dict):
            c["t1"] = {v: c["t1"] for v in c["fields"]}
    return cases


def predicted_directions(case: dict, variant: str, field: Field,
                         g0s: list[Gaussian]) -> list[np.ndarray]:
    r"""Unit vectors of the rank-one limits the theory gives for this case (may be empty).

    Parameters
    ----------
    case : dict
        A case of `regime_cases`.
    variant : str
        The variant's name (`"softmax"`, `"l2"`, `"multihead"`, `"sinkhorn"`).
    field : Field
        The case's field for this variant.
    g0s : list[Gaussian]
        The initial Gaussians of the grid.

    Returns
    -------
    list[numpy.ndarray]
        "line": the unit vector orthogonal to $q$ (the kernel of $A + A^\top$); "two lines" and
        "either": the stationary lines (`gaussflow.theory.stationary_lines`); "blowup" with
        softmax: the blow-up direction of each initial Gaussian
        (`gaussflow.theory.blowup_direction`); otherwise none.
    """
    name = case["name"]
    if name == "line":
        q = np.asarray(field.Q)[0]
        return [np.array([-q[1], q[0]]) / np.linalg.norm(q)]
    if name in ("two_lines", "either"):
        return list(theory.stationary_lines(field))
    if name == "blowup" and variant == "softmax":
        return [theory.blowup_direction(field, g) for g in g0s]
    return []


def _solve_grid(field, g0s, t1):
    trajs = [solve_resolved(field, g, t1, n_save=N_SAVE) for g in g0s]  # dense before a blow-up
    return trajs, [theory.classify(tr) for tr in trajs]


def regimes(out_dir: str, quick: bool = False, seed: int = 1,
            log: Callable = print) -> tuple[dict, list[str]]:
    """Run the six 2-D regimes; write one figure per regime.

    Parameters
    ----------
    out_dir : str
        Folder of the figures `regime_<name>.png` (and `.pdf`).
    quick : bool
        A coarser grid of trace-one initial covariances (`trace_one_grid(2, 4)` instead of
        `trace_one_grid(3, 8)`).
    seed : int
        Seed of `regime_cases`.
    log : Callable
        Called with one progress line per case and variant.

    Returns
    -------
    tuple[dict, list[str]]
        The summary (per case and variant: `t1`, the regime `counts`, `as_expected`, `expected`;
        softmax blow-up: `blowup_time_max_rel_err` against `gaussflow.theory.blowup_time`) and the
        PNG paths written.
    """
    import matplotlib.pyplot as plt

    from . import plots, plots_regimes

    grid = trace_one_grid(2, 4) if quick else trace_one_grid(3, 8)
    g0s = [Gaussian(np.zeros(2), S) for S in grid]
    summary, files = {}, []
    for case in regime_cases(seed):
        fields = case["fields"]
        n = len(fields)
        fig = plt.figure(figsize=(3.9 * n + 0.6, 7.6))
        res = {}
        for j, (vname, field) in enumerate(fields.items()):
            t1 = case["t1"][vname]
            trajs, regs = _solve_grid(field, g0s, t1)
            kinds = [r.kind for r in regs]
            counts = Counter(f"{r.kind}" + ("" if r.rank is None else f" (rank {r.rank})")
                             for r in regs)
            expected = case["expected"][vname]
            ok = all(k in expected for k in kinds)
            if "rank" in case:
                ok = ok and all(r.rank == case["rank"] for r in regs if r.kind == "converge")
            dirs = predicted_directions(case, vname, field, g0s)
            extra = {}
            if case["name"] == "blowup" and vname == "softmax":
                pred = np.array([theory.blowup_time(field, g) for g in g0s])
                got = np.array([r.blowup_time for r in regs], float)
                extra["blowup_time_max_rel_err"] = float(np.nanmax(np.abs(got / pred - 1)))
            res[vname] = {"t1": t1, "counts": dict(counts), "as_expected": bool(ok),
                          "expected": sorted(expected), **extra}
            log(f"  {case['name']:10s} {vname:10s} t1={t1:<6g} "
                + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                + ("" if ok else "  [NOT AS EXPECTED]"))
            ax1 = fig.add_subplot(2, n, j + 1)
            plots_regimes.regime_disk(trajs, kinds, ax=ax1, limit_dirs=dirs, title=f"{vname}",
                              diameters=case["name"] != "blowup")
            ax2 = fig.add_subplot(2, n, n + j + 1, projection="3d")
            plots_regimes.psd_cone(trajs, kinds, ax=ax2, limit_dirs=dirs, title=f"{vname}: PSD cone")
        fig.suptitle(case["title"], fontsize=11)
        fig.tight_layout()
        files.append(plots.save(fig, os.path.join(out_dir, f"regime_{case['name']}")))
        summary[case["name"]] = res
    return summary, files


def rank_histograms(out_dir: str, quick: bool = False, seed: int = 0,
                    dims: tuple[int, ...] = (3, 4, 5), n_draws: int | None = None,
                    t1: float = 1e4, log: Callable = print) -> tuple[dict, list[str]]:
    r"""Rank histograms of the limit covariance.

    For each $d$, variant (softmax, L2) and value choice ($V = I$, $V = M^\top M$) draw `n_draws`
    weights. Softmax with $V = I$: the exact rank $\dim\ker(A + A^\top)$
    (`gaussflow.theory.limit_rank`); otherwise: classify a solve to `t1`. Counts are by rank
    (converged and stationary runs, and collapses as rank 0) plus any other regime by name
    (nothing is dropped).

    Parameters
    ----------
    out_dir : str
        Folder of the figure `rank_histograms.png` (and `.pdf`).
    quick : bool
        8 draws instead of 100 (when `n_draws` is `None`).
    seed : int
        Seed of the weights (with $d$ and the value choice, `numpy.random.default_rng`).
    dims : tuple[int, ...]
        Dimensions $d$.
    n_draws : int or None
        Draws per $d$, variant and value choice; default 100 (quick: 8).
    t1 : float
        Horizon of the solves.
    log : Callable
        Called with one progress line per variant, value choice and $d$.

    Returns
    -------
    tuple[dict, list[str]]
        The summary (per variant and value choice, per $d$: `counts` by rank or regime, `source`
        of the counts, `"exact"` or `"solve"`, and `ceil_d_2` $= \lceil d/2 \rceil$) and the PNG
        paths written.
    """
    from . import plots, plots_regimes
    import matplotlib.pyplot as plt

    n_draws = (8 if quick else 100) if n_draws is None else int(n_draws)
    summary, files = {}, []
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for iv, vchoice in enumerate(("I", "MtM")):
        for jv, variant in enumerate(("softmax", "l2")):
            counts = {}
            key = f"{variant}, V = {'I' if vchoice == 'I' else 'M^T M'}"
            summary[key] = {}
            for d in dims:
                rng = np.random.default_rng([seed, d, iv])
                c = Counter()
                sources = Counter()
                for _ in range(n_draws):
                    Q = rng.normal(size=(d // 2, d))
                    M = rng.normal(size=(d, d))
                    V = np.eye(d) if vchoice == "I" else M.T @ M
                    f = _variants(Q, -Q, V, (variant,), d=d)[variant]
                    g0 = Gaussian(np.zeros(d), np.eye(d))
                    if variant == "softmax" and vchoice == "I":
                        c[theory.limit_rank(f)] += 1
                        sources["exact"] += 1
                        continue
                    tr = solve(f, g0, t1, ts=np.linspace(0, t1, N_SAVE))
                    r = theory.classify(tr)
                    sources["solve"] += 1
                    if r.kind in ("converge", "stationary", "collapse"):
                        c[r.rank] += 1
                    else:
                        c[r.kind] += 1
                counts[f"d = {d}"] = dict(c)
                summary[key][d] = {"counts": {str(k): v for k, v in c.items()},
                                   "source": dict(sources), "ceil_d_2": math.ceil(d / 2)}
                log(f"  ranks {key:18s} d={d}: "
                    + ", ".join(f"{k}: {v}" for k, v in sorted(c.items(), key=lambda kv: str(kv[0])))
                    + f"  ({', '.join(f'{s} {n}' for s, n in sources.items())})")
            plots_regimes.rank_histogram(counts, ax=axes[iv, jv],
                                 title=f"{key} ({n_draws} draws per d)")
    fig.suptitle("rank of the limit covariance, K = -Q, Q standard normal (floor(d/2) x d)")
    fig.tight_layout()
    files.append(plots.save(fig, os.path.join(out_dir, "rank_histograms")))
    return summary, files


#: The default parts of `reproduce`, in order (`"maps"`, `"meanfield"`, `"depth"` and `"model"`
#: run only when named).
PARTS = ("regimes", "ranks", "clustering", "clustering_gap")


def reproduce(out_dir: str = "gaussflow-reproduce", quick: bool = False, log: Callable = print,
              parts: tuple[str, ...] = PARTS, progress: bool = False) -> dict:
    """Run the reproductions into `out_dir`; write `summary.json`; return the summary.

    Parameters
    ----------
    out_dir : str
        Output folder (created if missing).
    quick : bool
        Small grids and fewer draws in every part.
    log : Callable
        Called with progress lines.
    parts : tuple[str, ...]
        The parts to run, in order: any of `"regimes"`, `"ranks"`, `"clustering"`,
        `"clustering_gap"`, `"maps"`, `"meanfield"`, `"depth"`, `"model"` (default `PARTS`).
    progress : bool
        One bar over the whole run with the elapsed and the estimated remaining time
        (`gaussflow.progress.WorkBar`, parts sized by `gaussflow.progress.REPRODUCE_SECONDS`);
        the `log` lines print above it.

    Returns
    -------
    dict
        `quick`, `files` (every file written, `summary.json` last), `seconds` (per part and
        `total`) and one entry per part with that part's summary.

    Raises
    ------
    ValueError
        For an unknown part.
    """
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.perf_counter()
    summary = {"quick": bool(quick), "files": [], "seconds": {}}
    steps = {"regimes": regimes, "ranks": rank_histograms, "clustering": clustering,
             "clustering_gap": clustering_gap, "maps": reproduce_maps, "meanfield": meanfield,
             "depth": depth_minilm, "model": whole_model}
    bad = [p for p in parts if p not in steps]
    if bad:
        raise ValueError(f"parts: unknown part {bad[0]!r}; choose from {sorted(steps)}")
    est = reproduce_seconds(parts, quick)
    bar = WorkBar(sum(est.values()), "reproduce", enabled=progress)
    log = bar.wrap_log(log)
    for name in parts:
        t = time.perf_counter()
        log(f"{name}:")
        with bar.stage(est[name]):
            res, files = steps[name](out_dir, quick=quick, log=log)
        summary[name] = res
        summary["files"] += files
        summary["seconds"][name] = round(time.perf_counter() - t, 2)
    bar.close()
    summary["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
    path = os.path.join(out_dir, "summary.json")
    with open(path, "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
    summary["files"].append(path)
    return summary
