"""The figure of `gaussflow.depth` and the MiniLM study (`depth_minilm`, a reproduce part)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .depth import DepthReport, attention_through_depth
from .minilm import minilm_folder
from .weights import write_random_bert


def plot_depth(report: DepthReport, title: str | None = None) -> Any:
    r"""Six panels over depth, one colour per initial cloud; closure solid, particles dashed.

    Panels: relative covariance error $\|\Sigma_{\mathrm{clo}} - \Sigma_N\|_F / \|\Sigma_N\|_F$
    (log scale), effective rank, top normalised eigenvalue $\lambda_1 / \operatorname{tr}\Sigma$,
    alignment $|\langle e_1^{\mathrm{clo}}, e_1^N\rangle|$ of the top eigenvectors, mean cosine
    similarity between tokens, and growth $\operatorname{tr}\Sigma_t / \operatorname{tr}\Sigma_0$.
    Layer switches are marked by dotted lines.

    Parameters
    ----------
    report : DepthReport
        The result of `gaussflow.depth.attention_through_depth`.
    title : str, optional
        The figure's title (default: checkpoint, `d`, heads, $N$).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (save it with `gaussflow.plots.save`).
    """
    import matplotlib.pyplot as plt  # lazy: matplotlib adds start-up time

    fig, axs = plt.subplots(2, 3, figsize=(15, 8))
    axs = axs.ravel()
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(report.runs), 1)))
    for r, c in zip(report.runs, colors):
        m, ts = r.metrics, r.ts
        axs[0].semilogy(ts[1:], m["cov_error"][1:], "o-", ms=3, color=c, label=r.label)
        for ax, key in ((axs[1], "rank"), (axs[4], "cos")):
            ax.plot(ts, m[f"{key}_closure"], "-", color=c, label=f"{r.label} closure")
            ax.plot(ts, m[f"{key}_particles"], "--", color=c, label=f"{r.label} tokens")
        axs[2].plot(ts, m["top_closure"][:, 0], "-", color=c)
        axs[2].plot(ts, m["top_particles"][:, 0], "--", color=c)
        axs[3].plot(ts, m["alignment"], "o-", ms=3, color=c, label=r.label)
        axs[5].semilogy(ts, m["trace_closure"] / m["trace_closure"][0], "-", color=c)
        axs[5].semilogy(ts, m["trace_particles"] / m["trace_particles"][0], "--", color=c)
    labels = ["relative covariance error, closure vs tokens", "effective rank",
              r"top normalised eigenvalue $\lambda_1 / \mathrm{tr}\,\Sigma$",
              "alignment of top eigenvectors, closure vs tokens",
              "mean cosine similarity between tokens",
              r"$\mathrm{tr}\,\Sigma_t / \mathrm{tr}\,\Sigma_0$"]
    n_layers = report.info["layers"]
    for ax, lab in zip(axs, labels):
        ax.set_title(lab, fontsize=10)
        ax.set_xlabel("depth (layers)")
        for k in range(1, n_layers):
            ax.axvline(k, color="0.8", ls=":", lw=0.8)
        ax.set_xlim(0, n_layers)
    axs[0].legend(fontsize=8, title="initial cloud")
    axs[1].plot([], [], "k-", label="closure")
    axs[1].plot([], [], "k--", label=f"N = {report.info['n_tokens']} tokens")
    handles = axs[1].get_legend_handles_labels()
    axs[1].legend(handles[0][-2:], handles[1][-2:], fontsize=8)
    axs[3].set_ylim(0, 1.05)
    i = report.info
    fig.suptitle(title or (f"attention-only flow through {i['layers']} layers "
                           f"(d = {i['d']}, {i['heads']} heads): Gaussian closure vs "
                           f"{i['n_tokens']} tokens"), fontsize=12)
    fig.tight_layout()
    return fig


#: Full and quick settings of `depth_minilm`.
FULL = {"scales": (0.05, 0.2, 0.5), "n_tokens": 1024, "steps_per_layer": 4}
QUICK = {"scales": (0.1, 1.0, 3.0), "n_tokens": 256, "steps_per_layer": 2}


def depth_minilm(out_dir: str | os.PathLike, quick: bool = False, seed: int = 0,
                 with_bias: bool = False, checkpoint: str | os.PathLike | None = None,
                 log: Callable[[str], Any] = print) -> tuple[dict[str, Any], list[str]]:
    """all-MiniLM-L6-v2's six attention layers through depth: figure, table and summary.

    Runs `attention_through_depth` on the installed MiniLM checkpoint (`minilm_folder`), or with
    `quick=True` on a random BERT-like checkpoint (`d = 8`, 2 heads, 3 layers) written into
    `out_dir`, and writes `depth_minilm.png` / `.pdf` (`plot_depth`), `depth_minilm.md` (the
    table) and `depth_minilm.json` (`DepthReport.to_dict`).

    Parameters
    ----------
    out_dir : str or os.PathLike
        The output folder (created if missing).
    quick : bool
        The random small checkpoint and small settings (`QUICK`) instead of MiniLM (`FULL`).
    seed : int
        Seed of the tokens (and of the random checkpoint).
    with_bias : bool
        Keep the value and output biases.
    checkpoint : str or os.PathLike, optional
        Another BERT-style checkpoint to use instead (with the `FULL` settings unless `quick`).
    log : callable
        Called with each progress line.

    Returns
    -------
    tuple of (dict, list of str)
        The summary (`DepthReport.to_dict` plus `agreeing`, the clouds within 5 % at every depth,
        and wall times) and the written PNG path.

    Raises
    ------
    ModuleNotFoundError
        Without `quick` or `checkpoint`, if the MiniLM package is not installed (see
        `minilm_folder`).
    """
    from . import plots  # lazy: matplotlib

    os.makedirs(out_dir, exist_ok=True)
    if checkpoint is None:
        checkpoint = (os.path.dirname(write_random_bert(os.path.join(out_dir, "random-bert"), d=8,
                                                        heads=2, layers=3, seed=seed, scale=0.6))
                      if quick else minilm_folder())
    settings = QUICK if quick else FULL
    t = time.perf_counter()
    log(f"attention through depth: {checkpoint} ({'quick' if quick else 'full'} settings)")
    rep = attention_through_depth(checkpoint, with_bias=with_bias, seed=seed, log=log, **settings)
    seconds = time.perf_counter() - t
    log(str(rep))
    for layer, parts in rep.dropped.items():
        for s in parts:
            log(f"  layer {layer} dropped: {s}")
    fig = plot_depth(rep)
    stem = os.path.join(out_dir, "depth_minilm")
    png = plots.save(fig, stem)
    with open(stem + ".md", "w") as fh:
        fh.write(rep.table() + "\n")
    summary = rep.to_dict()
    summary["agreeing"] = rep.agreeing(0.05)
    summary["seconds"] = seconds
    with open(stem + ".json", "w") as fh:
        json.dump(summary, fh, indent=1, default=float)
    log(f"  within 5 % at every depth: {summary['agreeing']} [{seconds:.0f} s]")
    return summary, [png]
