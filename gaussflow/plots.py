"""Figures (matplotlib, non-interactive Agg backend). Each function takes ``ax=`` and returns the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display anywhere gaussflow runs

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _axes(ax, **kw):
    if ax is None:
        fig, ax = plt.subplots(**kw)
    else:
        fig = ax.figure
    return fig, ax


def disk_coordinates(covs):
    """Normalised 2x2 covariances ``[[a, c], [c, b]] / (a + b)`` as ``(a - b, 2c)`` on the unit disk.

    Rank-one matrices lie on the unit circle, multiples of the identity at the centre.
    """
    covs = np.asarray(covs)
    a, b, c = covs[..., 0, 0], covs[..., 1, 1], covs[..., 0, 1]
    tr = a + b
    tr = np.where(tr > 0, tr, np.nan)
    return (a - b) / tr, 2 * c / tr


def unit_disk(trajectories, ax=None, labels=None, title=None, colors=None):
    """Normalised covariance paths of d = 2 trajectories on the unit disk (start: dot, end: cross)."""
    fig, ax = _axes(ax, figsize=(5, 5))
    th = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(th), np.sin(th), color="0.6", lw=1, label="rank one")
    cmap = plt.get_cmap("viridis")
    n = max(len(trajectories), 1)
    for i, tr in enumerate(trajectories):
        u, w = disk_coordinates(tr.covs)
        col = colors[i] if colors is not None else cmap(i / n)
        ax.plot(u, w, color=col, lw=1, label=None if labels is None else labels[i])
        ax.plot(u[0], w[0], "o", color=col, ms=3)
        ax.plot(u[-1], w[-1], "x", color=col, ms=5)
    ax.set_aspect("equal")
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.set_xlabel(r"$(a - b)/\mathrm{tr}\,\Sigma$")
    ax.set_ylabel(r"$2c/\mathrm{tr}\,\Sigma$")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


def eigenvalues(trajectories, ax=None, title=None, normalised=False, labels=None):
    """Eigenvalues of the covariance (or of ``Sigma / tr Sigma``) against time, log scale."""
    fig, ax = _axes(ax, figsize=(6, 4))
    cmap = plt.get_cmap("viridis")
    n = max(len(trajectories), 1)
    for i, tr in enumerate(trajectories):
        w = np.linalg.eigvalsh(np.asarray(tr.covs))
        if normalised:
            w = w / np.sum(w, axis=-1, keepdims=True)
        col = cmap(i / n)
        for j in range(w.shape[-1]):
            lab = labels[i] if (labels is not None and j == 0) else None
            ax.plot(tr.ts, np.clip(w[:, j], 1e-300, None), color=col, lw=1, label=lab)
    ax.set_yscale("log")
    ax.set_xlabel("depth t")
    ax.set_ylabel(r"eigenvalues of $\Sigma/\mathrm{tr}\,\Sigma$" if normalised
                  else r"eigenvalues of $\Sigma(t)$")
    if title:
        ax.set_title(title)
    if labels is not None:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(fig, path_stem):
    """Save ``fig`` as PNG and PDF next to each other; returns the PNG path."""
    png = f"{path_stem}.png"
    fig.savefig(png, dpi=120)
    fig.savefig(f"{path_stem}.pdf")
    plt.close(fig)
    return png
