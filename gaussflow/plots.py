"""Figures (matplotlib). The drawing functions take the axes to draw on (`ax=`, or `axes=` for
`regime_maps`; `gap_against_n` makes its own) and return the figure; `save` writes a figure as
PNG and PDF; `disk_coordinates` and `cone_coordinates` are the coordinates the covariance
figures use.

Importing this module leaves matplotlib's backend alone (in a notebook, figures keep displaying
inline); the command-line tool selects the non-interactive Agg backend for itself
(`MPLBACKEND=Agg` unless the environment names another).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter
import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

    from .gaussian import Gaussian
    from .integrate import Trajectory


#: The most entries a legend gets; past this the figures draw a colour bar or a note instead.
LEGEND_MAX = 10


def figure_axes(ax: Axes | None, **kw: object) -> tuple[Figure, Axes]:
    """`(figure, ax)`: a new figure and axes (`plt.subplots(**kw)`) when `ax` is `None`, else
    `ax` and its figure."""
    if ax is None:
        fig, ax = plt.subplots(**kw)
    else:
        fig = ax.figure
    return fig, ax


def disk_coordinates(covs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    r"""Normalised 2x2 covariances $\begin{pmatrix} a & c \\ c & b \end{pmatrix} / (a + b)$ as
    $(a - b, 2c)/(a + b)$ on the unit disk.

    Rank-one matrices lie on the unit circle, multiples of the identity at the centre.

    Parameters
    ----------
    covs : array_like
        Covariances `(..., 2, 2)`.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        The two coordinates, each of shape `(...)`; NaN where the trace is not positive.
    """
    covs = np.asarray(covs)
    a, b, c = covs[..., 0, 0], covs[..., 1, 1], covs[..., 0, 1]
    tr = a + b
    tr = np.where(tr > 0, tr, np.nan)
    return (a - b) / tr, 2 * c / tr


#: The caption of the unit-disk figures: what the coordinates are (`disk_frame` writes it).
DISK_CAPTION = (r"$\Sigma = [[a,\,c],[c,\,b]]$, $x = (a-b)/(a+b)$, $y = 2c/(a+b)$"
                "\n" r"circle: rank one; centre: $\Sigma \propto I$")


def disk_frame(ax: Axes, lim: float, label: str | None = None, caption: bool = True) -> None:
    r"""The frame of the unit-disk figures: the unit circle (rank-one covariances; legend entry
    `label`), equal aspect, limits $[-\mathrm{lim}, \mathrm{lim}]^2$, the axis labels and
    (`caption`) the definition of the coordinates, `DISK_CAPTION`, in the upper-left corner:
    $\Sigma = \begin{pmatrix} a & c \\ c & b \end{pmatrix}$ is drawn at
    $(x, y) = (a - b, 2c)/(a + b)$ (`disk_coordinates`)."""
    th = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(th), np.sin(th), color="0.6", lw=1, label=label)
    ax.set_aspect("equal")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel(r"$x = (a - b)/(a + b)$")
    ax.set_ylabel(r"$y = 2c/(a + b)$")
    if caption:
        ax.text(0.01, 0.99, DISK_CAPTION, transform=ax.transAxes, va="top", ha="left",
                fontsize=5.5, color="0.25", linespacing=1.3)


def disk_marker_handles(color: str = "0.3") -> list:
    """Legend entries of the unit-disk markers: the dot at the start of a path ($t = 0$) and the
    cross at its end (the last saved time: $t_1$, or the stop of a run that blew up or left the
    integrable domain)."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], ls="", marker="o", ms=3, color=color, label="start, t = 0"),
            Line2D([], [], ls="", marker="x", ms=5, color=color, label="end (last saved t)")]


def unit_disk(trajectories: Sequence[Trajectory], ax: Axes | None = None,
              labels: Sequence[str] | None = None, title: str | None = None,
              colors: Sequence | None = None, color_note: str | None = None) -> Figure:
    """Normalised covariance paths of $d = 2$ trajectories on the unit disk (start: dot, end:
    cross; coordinates of `disk_coordinates`, defined in the figure by `disk_frame`).

    The legend explains the markers and the colours: the `labels` when there are at most
    `LEGEND_MAX`, else (and for the default colours without labels) one line saying how the
    colours are assigned.

    Parameters
    ----------
    trajectories : Sequence[Trajectory]
        Trajectories with `covs` of shape `(n_t, 2, 2)`.
    ax : Axes or None
        Axes to draw on; `None`: a new 5 x 6 in figure (the legend goes below the disk).
    labels : Sequence[str] or None
        One legend label per trajectory.
    title : str or None
        Axes title.
    colors : Sequence or None
        One matplotlib colour per trajectory; default: viridis by index.
    color_note : str or None
        What the colours mean, for the legend (when the labels do not say it); default: how
        they are assigned.

    Returns
    -------
    Figure
        The figure of `ax`.
    """
    from matplotlib.lines import Line2D

    fig, ax = figure_axes(ax, figsize=(5, 6))
    disk_frame(ax, 1.1)
    cmap = plt.get_cmap("viridis")
    n = max(len(trajectories), 1)
    handles = [Line2D([], [], color="0.6", lw=1, label="rank one")]
    readable = labels is not None and len(labels) <= LEGEND_MAX
    for i, tr in enumerate(trajectories):
        u, w = disk_coordinates(tr.covs)
        col = colors[i] if colors is not None else cmap(i / n)
        line, = ax.plot(u, w, color=col, lw=1, label=labels[i] if readable else None)
        if readable:
            handles.append(line)
        ax.plot(u[0], w[0], "o", color=col, ms=3)
        ax.plot(u[-1], w[-1], "x", color=col, ms=5)
    handles += disk_marker_handles()
    if color_note or (not readable and len(trajectories) > 1):
        how = color_note or ("colour: viridis, in the order given (dark: first)"
                             if colors is None else "colour: one per path")
        handles.append(Line2D([], [], ls="", label=how))
    if title:
        ax.set_title(title)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2,
              fontsize=6.5, frameon=False)  # below the disk: no path hidden
    fig.tight_layout()
    return fig


def eigenvalues(trajectories: Sequence[Trajectory], ax: Axes | None = None,
                title: str | None = None, normalised: bool = False,
                labels: Sequence[str] | None = None,
                spectra: Sequence[ArrayLike] | None = None) -> Figure:
    r"""Eigenvalues of the covariance (or of $\Sigma / \operatorname{tr}\Sigma$) against time, log
    scale.

    Several trajectories: one colour per trajectory (`labels` in the legend). One trajectory
    without `labels`: one colour per eigenvalue, $\lambda_1 \le \dots \le \lambda_d$ in the legend
    when $d \le$ `LEGEND_MAX`, else a colour bar over the index $i$ of $\lambda_i$. A legend
    with more than `LEGEND_MAX` labels cannot be read: it is replaced by a note.

    Parameters
    ----------
    trajectories : Sequence[Trajectory]
        Trajectories with `ts` and `covs` of shape `(n_t, d, d)`.
    ax : Axes or None
        Axes to draw on; `None`: a new figure.
    title : str or None
        Axes title.
    normalised : bool
        Draw the eigenvalues of $\Sigma / \operatorname{tr}\Sigma$.
    labels : Sequence[str] or None
        One legend label per trajectory.
    spectra : Sequence[array_like] or None
        The eigenvalues of each trajectory's covariances, shape `(n_t, d)` in increasing order
        (`np.linalg.eigvalsh(tr.covs)`), when the caller has them already (large $d$: the
        decomposition dominates); default: computed here.

    Returns
    -------
    Figure
        The figure of `ax`.
    """
    fig, ax = figure_axes(ax, figsize=(6, 4))
    cmap = plt.get_cmap("viridis")
    n = max(len(trajectories), 1)
    per_eig = len(trajectories) == 1 and labels is None
    d = 0
    for i, tr in enumerate(trajectories):
        w = (np.linalg.eigvalsh(np.asarray(tr.covs)) if spectra is None
             else np.asarray(spectra[i], dtype=float))
        if normalised:
            w = w / np.sum(w, axis=-1, keepdims=True)
        d = w.shape[-1]
        for j in range(d):
            if per_eig:
                col, lab = plt.get_cmap("plasma")(0.85 * j / max(d - 1, 1)), rf"$\lambda_{{{j + 1}}}$"
                lab = lab if d <= LEGEND_MAX else None
            else:
                col = cmap(i / n)
                lab = labels[i] if (labels is not None and j == 0) else None
            ax.plot(tr.ts, np.clip(w[:, j], 1e-300, None), color=col, lw=1, label=lab)
    ax.set_yscale("log")
    ax.set_xlabel("depth t")
    ax.set_ylabel(r"eigenvalues of $\Sigma/\mathrm{tr}\,\Sigma$" if normalised
                  else r"eigenvalues of $\Sigma(t)$")
    if title:
        ax.set_title(title)
    if per_eig and d > LEGEND_MAX:  # one colour per index: a colour bar, not a legend
        from matplotlib.colors import ListedColormap

        cmap_i = ListedColormap(plt.get_cmap("plasma")(np.linspace(0, 0.85, 256)))
        sm = plt.cm.ScalarMappable(cmap=cmap_i, norm=plt.Normalize(1, d))
        bar = fig.colorbar(sm, ax=ax, fraction=0.05, pad=0.02)
        bar.set_label(r"index $i$ of $\lambda_i$ (increasing order)", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    elif labels is not None and len(labels) > LEGEND_MAX:
        legend_note(ax, f"{len(labels)} trajectories, one colour each (viridis by index)")
    elif labels is not None or (per_eig and len(trajectories[0].ts)):
        ax.legend(fontsize=7, loc="upper left", ncol=1 + (per_eig and d > 6))
    fig.tight_layout()
    return fig


def legend_note(ax: Axes, text: str) -> None:
    """A short note in the corner of `ax`, in place of a legend too long to read."""
    ax.text(0.01, 0.99, text, transform=ax.transAxes, va="top", ha="left", fontsize=7,
            bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.8})


def save(fig: Figure, path_stem: str) -> str:
    """Save `fig` as PNG and PDF next to each other, then close it.

    Parameters
    ----------
    fig : Figure
        The figure.
    path_stem : str
        Path without the extension: writes `path_stem.png` (120 dpi) and `path_stem.pdf`.

    Returns
    -------
    str
        The PNG path.
    """
    png = f"{path_stem}.png"
    fig.savefig(png, dpi=120)
    fig.savefig(f"{path_stem}.pdf")
    plt.close(fig)
    return png


def particle_count_axes(ax: Axes, ns: Sequence[int]) -> None:
    """Log-log axes over particle counts: one labelled tick per $N$ in `ns`, no minor labels,
    the x label "number of particles N"."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ns)
    ax.set_xticklabels([str(int(n)) for n in ns])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("number of particles N")


def validation_errors(report: Any, ax: Axes | None = None) -> Figure:
    """Closure-vs-particle error against the number of particles (log-log), for a
    `gaussflow.validation.ValidationReport`: every seed (dots), the root mean square over seeds
    (line) and the $N^{-1/2}$ Monte Carlo reference through the smallest $N$ (dashed), for the
    mean and for the covariance.

    Parameters
    ----------
    report : ValidationReport
        The report (`gf.validate`).
    ax : Axes or None
        Axes to draw on; `None`: a new figure.

    Returns
    -------
    Figure
        The figure of `ax`.
    """
    fig, ax = figure_axes(ax, figsize=(5.5, 4))
    ns = np.asarray(report.n_particles, float)
    for q, col in (("mean", "C0"), ("cov", "C3")):
        st = report.stats(q)
        E = np.asarray(st.errors, float)
        for j in range(E.shape[1]):
            ax.plot(ns, E[:, j], "o", color=col, ms=3, alpha=0.5)
        lab = f"{q} (slope {st.slope:+.2f})" if not st.at_floor else f"{q} (at solver accuracy)"
        ax.plot(ns, st.rms, "-", color=col, lw=1.5, label=lab)
        ref = st.rms[0] * np.sqrt(ns[0] / ns)
        ax.plot(ns, ref, "--", color=col, lw=1, alpha=0.7)
    ax.plot([], [], "--", color="0.4", lw=1, label=r"$N^{-1/2}$ reference")
    particle_count_axes(ax, ns)
    ax.set_ylabel("relative error (max over time)")
    ax.set_title(f"{report.field_name}: closure vs particles ({report.verdict})", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ellipses(particles_at_times: ArrayLike, gaussians: Sequence[Gaussian],
             ax: Axes | None = None, times: Sequence[float] | None = None,
             n_std: Sequence[float] = (1.0, 2.0), max_points: int = 2000) -> Figure:
    r"""Particles ($d = 2$) overlaid with covariance ellipses of Gaussians at the same times.

    The ellipses are $\{x : (x - \mu)^\top \Sigma^{-1} (x - \mu) = k^2\}$ for $k$ in `n_std`
    ($\mu$, $\Sigma$: the mean and covariance of each Gaussian).

    Parameters
    ----------
    particles_at_times : array_like
        Clouds `(n_t, N, 2)` (e.g. `simulate(...).xs[idx]`).
    gaussians : Sequence[Gaussian]
        `n_t` `gaussflow.Gaussian`s (e.g. from a closure trajectory), one per cloud.
    ax : Axes or None
        Axes to draw on; `None`: a new figure.
    times : Sequence[float] or None
        The `n_t` times, for the legend (no legend without them).
    n_std : Sequence[float]
        The levels $k$ of the ellipses, in standard deviations.
    max_points : int
        At most about this many particles drawn per cloud (every `len(X) // max_points`-th).

    Returns
    -------
    Figure
        The figure of `ax`.

    Raises
    ------
    ValueError
        If the clouds are not of shape `(n_t, N, 2)` or there is not one Gaussian per cloud.
    """
    clouds = np.asarray(particles_at_times, float)
    if clouds.ndim != 3 or clouds.shape[-1] != 2:
        raise ValueError(f"particles_at_times must have shape (n_t, N, 2), got {clouds.shape}")
    if len(gaussians) != len(clouds):
        raise ValueError(f"gaussians must hold one Gaussian per time ({len(clouds)}), got "
                         f"{len(gaussians)}")
    fig, ax = figure_axes(ax, figsize=(5.5, 5))
    cmap = plt.get_cmap("viridis")
    th = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(th), np.sin(th)])
    n_t = len(clouds)
    for i, (X, g) in enumerate(zip(clouds, gaussians)):
        col = cmap(i / max(n_t - 1, 1))
        step = max(1, len(X) // max_points)
        lab = None if times is None else f"t = {times[i]:.3g}"
        ax.plot(X[::step, 0], X[::step, 1], ".", color=col, ms=2, alpha=0.35, label=lab)
        w, U = np.linalg.eigh(np.asarray(g.cov))
        root = U * np.sqrt(np.clip(w, 0, None))
        for k in n_std:
            pts = np.asarray(g.mean)[:, None] + k * root @ circle
            ax.plot(pts[0], pts[1], "-", color=col, lw=1.2)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title("particles and closure ellipses (" + ", ".join(f"{k:g}" for k in n_std) + " sd)",
                 fontsize=10)
    if times is not None:
        ax.legend(fontsize=7, markerscale=4)
    fig.tight_layout()
    return fig
