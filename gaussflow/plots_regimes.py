r"""Figures of regimes and studies (matplotlib): trajectories coloured by their classified regime
on the unit disk and in the PSD cone, rank histograms, spectra through depth, the clustering gap
against $N$, regime maps and blow-up times against the closed form. Each function returns its
figure; those taking `ax=` draw into it. Shared helpers (`figure_axes`, `save`) are in
`gaussflow.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
import numpy as np

from .plots import (disk_coordinates, disk_frame, disk_marker_handles, figure_axes,
                    particle_count_axes)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

    from .integrate import Trajectory


# ------------------------------------------------------------------ theory figures (gf.theory)
#: Colour of each regime of `gaussflow.theory.classify` in the reproduction figures.
REGIME_COLORS = {"collapse": "tab:green", "converge": "tab:blue", "stationary": "0.45",
                 "blowup": "tab:red", "growth": "tab:orange", "undetermined": "black"}


def cone_coordinates(covs: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""2x2 covariances $\begin{pmatrix} a & c \\ c & b \end{pmatrix}$ as
    $(x, y, z) = (a - b, 2c, a + b)$: the PSD cone is $\sqrt{x^2 + y^2} \le z$ and rank-one
    matrices lie on its boundary.

    Parameters
    ----------
    covs : array_like
        Covariances `(..., 2, 2)`.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]
        $x$, $y$, $z$, each of shape `(...)`.
    """
    covs = np.asarray(covs)
    a, b, c = covs[..., 0, 0], covs[..., 1, 1], covs[..., 0, 1]
    return a - b, 2 * c, a + b


def _regime_legend(ax, kinds, extra=(), **kw):

    handles = [Line2D([], [], color=REGIME_COLORS.get(k, "k"), lw=1.5, label=k) for k in kinds]
    handles += list(extra)
    if handles:
        ax.legend(handles=handles, **kw)


def regime_disk(trajectories: Sequence[Trajectory], kinds: Sequence[str], ax: Axes | None = None,
                limit_dirs: Sequence[ArrayLike] = (), title: str | None = None,
                diameters: bool = True) -> Figure:
    r"""Normalised $d = 2$ covariance paths on the unit disk, each coloured by its regime
    (`REGIME_COLORS`; start: dot, end: cross), with the rank-one limits the theory predicts.
    The legend names the colours (regimes) and the markers; `disk_frame` writes the definition
    of the coordinates in the figure.

    Parameters
    ----------
    trajectories : Sequence[Trajectory]
        Trajectories with `covs` of shape `(n_t, 2, 2)`.
    kinds : Sequence[str]
        The regime of each trajectory (`gaussflow.theory.classify(...).kind`).
    ax : Axes or None
        Axes to draw on; `None`: a new 5 x 5 in figure.
    limit_dirs : Sequence[array_like]
        Unit vectors $u$ whose rank-one limits $u u^\top$ the theory predicts: red stars on the
        circle.
    title : str or None
        Axes title.
    diameters : bool
        Also draw a dashed diameter through each predicted limit (and larger stars).

    Returns
    -------
    Figure
        The figure of `ax`.
    """

    fig, ax = figure_axes(ax, figsize=(5, 5))
    disk_frame(ax, 1.15)
    for tr, k in zip(trajectories, kinds):
        u, w = disk_coordinates(tr.covs)
        col = REGIME_COLORS.get(k, "k")
        ax.plot(u, w, color=col, lw=0.9, alpha=0.85)
        ax.plot(u[0], w[0], "o", color=col, ms=2.5)
        ax.plot(u[-1], w[-1], "x", color=col, ms=4)
    extra = [Line2D([], [], color="0.6", lw=1, label="rank one")] + disk_marker_handles()
    for i, d in enumerate(limit_dirs):
        t2 = 2 * np.arctan2(d[1], d[0])
        if diameters:
            ax.plot([-np.cos(t2), np.cos(t2)], [-np.sin(t2), np.sin(t2)], "--", color="crimson",
                    lw=0.8)
        ax.plot(np.cos(t2), np.sin(t2), "*", color="crimson", ms=11 if diameters else 7)
    if len(limit_dirs):
        extra.append(Line2D([], [], color="crimson", ls="--", marker="*", label="predicted limit"))
    if title:
        ax.set_title(title, fontsize=9)
    _regime_legend(ax, sorted(set(kinds)), extra, loc="lower left", fontsize=6, framealpha=0.8)
    return fig


def psd_cone(trajectories: Sequence[Trajectory], kinds: Sequence[str], ax: Axes | None = None,
             limit_dirs: Sequence[ArrayLike] = (), title: str | None = None,
             zmax: float | None = None) -> Figure:
    r"""$d = 2$ covariance paths in the PSD cone $(a - b, 2c, a + b)$ (`cone_coordinates`, 3-D
    axes), coloured by regime (`REGIME_COLORS`; start: dot).

    Parameters
    ----------
    trajectories : Sequence[Trajectory]
        Trajectories with `covs` of shape `(n_t, 2, 2)`.
    kinds : Sequence[str]
        The regime of each trajectory (`gaussflow.theory.classify(...).kind`).
    ax : Axes or None
        3-D axes to draw on (`projection="3d"`); `None`: a new figure with one.
    limit_dirs : Sequence[array_like]
        Unit vectors $u$ of predicted rank-one limits $s\, u u^\top$, drawn as dashed rays on the
        cone's boundary.
    title : str or None
        Axes title.
    zmax : float or None
        Height at which the paths are clipped; default 1.5 times the largest starting trace.

    Returns
    -------
    Figure
        The figure of `ax`.
    """

    if ax is None:
        fig = plt.figure(figsize=(5.5, 5))
        ax = fig.add_subplot(projection="3d")
    fig = ax.figure
    z0 = max([float(np.trace(np.asarray(tr.covs[0]))) for tr in trajectories] + [1e-12])
    zmax = 1.5 * z0 if zmax is None else zmax
    th = np.linspace(0, 2 * np.pi, 60)
    for z in (zmax / 2, zmax):
        ax.plot(z * np.cos(th), z * np.sin(th), z, color="0.75", lw=0.6)
    for t in th[::10]:
        ax.plot([0, zmax * np.cos(t)], [0, zmax * np.sin(t)], [0, zmax], color="0.85", lw=0.5)
    for tr, k in zip(trajectories, kinds):
        x, y, z = cone_coordinates(tr.covs)
        keep = np.isfinite(z) & (z <= zmax)
        col = REGIME_COLORS.get(k, "k")
        ax.plot(x[keep], y[keep], z[keep], color=col, lw=0.9, alpha=0.85)
        ax.scatter([x[0]], [y[0]], [z[0]], color=col, s=4)
    for d in limit_dirs:
        t2 = 2 * np.arctan2(d[1], d[0])
        ax.plot([0, zmax * np.cos(t2)], [0, zmax * np.sin(t2)], [0, zmax], "--", color="crimson", lw=1.2)
    ax.set_box_aspect(None, zoom=0.82)  # keep the axis labels inside the panel
    ax.set_xlabel(r"$a - b$", fontsize=8)
    ax.set_ylabel(r"$2c$", fontsize=8)
    ax.set_zlabel(r"$a + b$", fontsize=8)
    ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=9)
    extra = [Line2D([], [], color="crimson", ls="--", label="predicted limit")] if len(limit_dirs) else []
    _regime_legend(ax, sorted(set(kinds)), extra, loc="upper left", fontsize=6, framealpha=0.8)
    return fig


def rank_histogram(counts: Mapping[str, Mapping[int | str, int]], ax: Axes | None = None,
                   title: str | None = None) -> Figure:
    """Grouped bars of the ranks of limit covariances: one group of bars per rank, one colour per
    label.

    Parameters
    ----------
    counts : Mapping[str, Mapping[int | str, int]]
        `counts[label][r]` = number of runs whose limit has rank `r`. Labels such as `"d = 3"`;
        non-integer keys (e.g. `"undetermined"`) are drawn after the ranks.
    ax : Axes or None
        Axes to draw on; `None`: a new figure.
    title : str or None
        Axes title.

    Returns
    -------
    Figure
        The figure of `ax`.
    """
    fig, ax = figure_axes(ax, figsize=(5, 3.5))
    keys = sorted({k for c in counts.values() for k in c}, key=lambda k: (isinstance(k, str), k))
    labels = list(counts)
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(keys))
    for i, lab in enumerate(labels):
        vals = [counts[lab].get(k, 0) for k in keys]
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, vals, width, label=lab)
    ax.set_xticks(x)
    ax.set_xticklabels([str(k) for k in keys], fontsize=8)
    ax.set_xlabel("rank of the limit covariance")
    ax.set_ylabel("number of runs")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def spectrum_depth(ts: ArrayLike, spectra: ArrayLike, ax: Axes | None = None,
                   particles: tuple[ArrayLike, ArrayLike] | None = None, title: str | None = None,
                   switch_times: Sequence[float] = ()) -> Figure:
    r"""Normalised spectrum $\operatorname{eig}(\Sigma)/\operatorname{tr}\Sigma$ against depth (log
    scale): lines from the closure, markers from particles, one colour per eigenvalue index;
    dotted verticals at the layer switches.

    Parameters
    ----------
    ts : array_like
        Depths `(n_t,)` of the closure's spectra.
    spectra : array_like
        The closure's normalised spectra `(n_t, d)`.
    ax : Axes or None
        Axes to draw on; `None`: a new figure.
    particles : tuple[array_like, array_like] or None
        `(ts_p, spectra_p)`: the particles' depths and normalised spectra `(n_p, d)`.
    title : str or None
        Axes title.
    switch_times : Sequence[float]
        Depths of the layer switches.

    Returns
    -------
    Figure
        The figure of `ax`.
    """

    fig, ax = figure_axes(ax, figsize=(6.5, 4))
    spectra = np.asarray(spectra)
    cmap = plt.get_cmap("viridis")
    d = spectra.shape[-1]
    for j in range(d):
        col = cmap(j / max(d - 1, 1))
        ax.plot(ts, np.clip(spectra[:, j], 1e-300, None), color=col, lw=1.2)
        if particles is not None:
            tp, sp = particles
            ax.plot(tp, np.clip(np.asarray(sp)[:, j], 1e-300, None), "o", color=col, ms=3,
                    mfc="none")
    for s in switch_times:
        ax.axvline(s, color="0.8", lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("depth t")
    ax.set_ylabel(r"eigenvalues of $\Sigma/\mathrm{tr}\,\Sigma$")
    handles = [Line2D([], [], color="k", lw=1.2, label="Gaussian closure")]
    if particles is not None:
        handles.append(Line2D([], [], color="k", marker="o", mfc="none", ls="", label="particles"))
    ax.legend(handles=handles, fontsize=7, loc="best")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def gap_against_n(summary: dict, title: str | None = None) -> Figure:
    """Closure-vs-particle spectrum gap against $N$ (log-log), one panel per case of
    `gaussflow.reproduce_clustering.clustering_gap`'s summary: every cloud seed (dots) and their
    mean (line), independent clouds against mirrored (antithetic) ones.

    Parameters
    ----------
    summary : dict
        `clustering_gap`'s summary (`n_particles` and `cases`).
    title : str or None
        Figure title.

    Returns
    -------
    Figure
        A new figure.
    """
    cases = summary["cases"]
    ns = np.asarray(summary["n_particles"], float)
    fig, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 4), squeeze=False)
    labels = {"random": "independent clouds", "antithetic": "mirrored clouds (x, 2 alpha - x)"}
    for ax, (case, rows) in zip(axes[0], cases.items()):
        for (method, r), col in zip(rows.items(), ("C3", "C0")):
            G = np.asarray(r["gap"], float)
            for j in range(G.shape[1]):
                ax.plot(ns, G[:, j], "o", color=col, ms=3, alpha=0.6)
            ax.plot(ns, G.mean(axis=1), "-", color=col, lw=1.5, label=labels.get(method, method))
        particle_count_axes(ax, ns)
        ax.set_ylabel("max |normalised spectrum closure - particles|")
        ax.set_title(case, fontsize=10)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------ regime maps (gf.theory.maps)
def _map_color(label):
    """Colour of a regime-map label: ranks in shades of blue, other kinds as `REGIME_COLORS`."""
    if label.startswith("rank "):
        r = int(label.split()[1])
        return plt.get_cmap("Blues")(0.35 + 0.13 * min(r, 5))
    return REGIME_COLORS.get(label, "magenta")


def regime_maps(maps: Sequence[Any], axes: np.ndarray | None = None) -> Figure:
    """Stacked bars of the fraction of runs in each regime: one row per regime map
    (`gf.theory.maps.RegimeMap`), one column per dimension $d$, one bar per scale value.

    Every run is drawn (the bars of a cell sum to 1); the legend of a row lists its labels
    (`"rank r"`: converged to a rank-$r$ limit).

    Parameters
    ----------
    maps : Sequence[RegimeMap]
        The regime maps (`gf.theory.maps.regime_map`).
    axes : numpy.ndarray or None
        A grid of axes, one row per map and one column per dimension (over all maps); `None`: a
        new figure. Cells of a dimension a map does not have are hidden.

    Returns
    -------
    Figure
        The figure of `axes`.
    """
    maps = list(maps)
    dims = sorted({d for m in maps for d in m.dims})
    if axes is None:
        fig, axes = plt.subplots(len(maps), len(dims), figsize=(2.6 * len(dims) + 1.6,
                                                                2.2 * len(maps)), squeeze=False)
    else:
        axes = np.atleast_2d(axes)
        fig = axes.flat[0].figure
    for i, m in enumerate(maps):
        labels = m.all_labels()
        counts = m.counts()
        for j, d in enumerate(dims):
            ax = axes[i, j]
            if d not in m.dims:
                ax.set_visible(False)
                continue
            x = np.arange(len(m.params))
            bottom = np.zeros(len(m.params))
            for lab in labels:
                frac = np.array([counts[(p, d)].get(lab, 0) / len(m.labels[(p, d)])
                                 for p in m.params])
                ax.bar(x, frac, 0.8, bottom=bottom, color=_map_color(lab), label=lab,
                       edgecolor="white", linewidth=0.3)
                bottom += frac
            ax.set_xticks(x)
            ax.set_xticklabels([f"{p:g}" for p in m.params], fontsize=7)
            ax.set_ylim(0, 1)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_title(f"{m.name}, d = {d}", fontsize=8)
            if i == len(maps) - 1 or (i + 1 < len(maps) and maps[i + 1].param != m.param):
                ax.set_xlabel(m.param, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"fraction ({m.n_draws} draws)", fontsize=7)
        axes[i, -1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5),
                           frameon=False)
    fig.tight_layout()
    return fig


def blowup_times(times: Sequence[tuple[float, int, float, float]],
                 ax: Sequence[Axes] | None = None, title: str | None = None) -> Figure:
    r"""Blow-up times from a sweep against the closed form. Left: histogram of $\beta T^*$
    (closed form, outline) and of $\beta t_\mathrm{sweep}$ (filled); right: the relative error
    $|t_\mathrm{sweep} / T^* - 1|$ against $\beta T^*$.

    Parameters
    ----------
    times : Sequence[tuple[float, int, float, float]]
        `(p, d, T*, t_sweep)` per blow-up, $p$ the regime map's scale value (softmax: $\beta$)
        (`gf.theory.maps.closed_form_agreement`'s `blowup_times`).
    ax : Sequence[Axes] or None
        Two axes (left, right); `None`: a new figure.
    title : str or None
        Figure title.

    Returns
    -------
    Figure
        The figure of `ax`.
    """
    arr = np.array([(p, T, t) for p, _, T, t in times], float).reshape(-1, 3)
    if ax is None:
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    else:
        ax = np.atleast_1d(ax)
        fig = ax[0].figure
    if len(arr):
        scaled_T, scaled_t = arr[:, 0] * arr[:, 1], arr[:, 0] * arr[:, 2]
        bins = np.geomspace(max(scaled_T.min(), 1e-6) / 1.2, scaled_T.max() * 1.2, 30)
        ax[0].hist(scaled_t, bins=bins, color="tab:red", alpha=0.5, label="sweep")
        ax[0].hist(scaled_T, bins=bins, histtype="step", color="k", lw=1.2,
                   label="closed form")
        ax[0].set_xscale("log")
        err = np.abs(arr[:, 2] / arr[:, 1] - 1)
        ax[1].loglog(scaled_T, np.maximum(err, 1e-17), ".", ms=3, color="tab:red")
        ax[1].set_title(f"max relative error {err.max():.2g} ({len(arr)} blow-ups)", fontsize=9)
    ax[0].set_xlabel(r"$\beta T^*$")
    ax[0].set_ylabel("runs")
    ax[0].legend(fontsize=7)
    ax[1].set_xlabel(r"$\beta T^*$ (closed form)")
    ax[1].set_ylabel(r"$|t_\mathrm{sweep} / T^* - 1|$")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
