r"""Rich displays: the compact tables and small figures that notebooks show for results.

`Trajectory`, `ValidationReport` and `SweepResult` call these from their `_repr_html_` /
`_repr_png_` methods (Jupyter picks them up); `gaussflow.report` reuses the tables' numbers and
`png_bytes`. Everything is bounded in $d$: a covariance is shown entry by entry only for
$d \le$ `MATRIX_MAX_D`; above that it is summarised by its trace, its effective rank
(`gaussflow.theory.effective_rank`) and its largest eigenvalues, so a $d = 384$ state gives a
table of a few lines, never a $d \times d$ dump.

Figures are drawn on a `matplotlib.figure.Figure` created directly (no `pyplot` state, no change
of backend), and matplotlib is imported only when a figure is drawn, so `import gaussflow`
stays fast.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .theory.metrics import effective_rank

if TYPE_CHECKING:
    from collections.abc import Callable

    from matplotlib.figure import Figure

# The results are passed in and read by attribute (duck typing), so this module imports none of
# the modules whose classes call it: `Trajectory`, `ValidationReport`, `SweepResult` stand for
# `gaussflow.integrate.Trajectory`, `gaussflow.validation_report.ValidationReport` and
# `gaussflow.batch.SweepResult`.
Trajectory = ValidationReport = SweepResult = Any

#: Largest $d$ whose mean and covariance are shown entry by entry.
MATRIX_MAX_D = 4
#: Number of largest eigenvalues listed (and drawn) for larger $d$.
TOP_EIGENVALUES = 4
#: Most save times used by a trajectory's figure (evenly subsampled above that).
FIGURE_MAX_TIMES = 60
#: Size (inches) and resolution (dots per inch) of the small figures.
FIGSIZE, DPI = (4.2, 2.8), 80

#: The first bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- formatting
def fmt(x: Any) -> str:
    """A number with 4 significant digits (`nan`, `inf` spelled out); other values as `str`."""
    if isinstance(x, (bool, np.bool_)) or x is None:
        return str(x)
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.4g}"
    return str(x)


def vector_text(v: Any) -> str:
    """A short vector as `[a, b, ...]` (entries by `fmt`)."""
    return "[" + ", ".join(fmt(float(x)) for x in np.ravel(v)) + "]"


def matrix_text(a: Any) -> str:
    """A small matrix as `[[a, b], [c, d]]` (entries by `fmt`)."""
    return "[" + ", ".join(vector_text(r) for r in np.atleast_2d(a)) + "]"


def html_table(rows: Iterable[tuple[str, Any]], caption: str | None = None) -> str:
    """An HTML table of `(name, value)` rows (both escaped), with an optional caption."""
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}{body}</table>"


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure `fig` as PNG bytes at `dpi` dots per inch."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """PNG bytes as a `data:image/png;base64,...` URI (for an `<img src=...>`)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_tag(png: bytes | None, alt: str) -> str:
    """An `<img>` embedding `png` (empty string for `None`)."""
    if png is None:
        return ""
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt, quote=True)}"/>'


def side_by_side(table: str, png: bytes | None, alt: str) -> str:
    """A table and its figure next to each other (the figure wraps below on narrow pages)."""
    cell = "<div style='display:inline-block;vertical-align:top;margin-right:1em'>{}</div>"
    return "<div>" + cell.format(table) + (cell.format(img_tag(png, alt)) if png else "") + "</div>"


def new_figure(constrained: bool = True) -> Figure:
    """A small `matplotlib.figure.Figure` (`FIGSIZE`), made without `pyplot`; with the
    constrained layout unless `constrained` is false (for drawing code that lays out itself)."""
    from matplotlib.figure import Figure

    return Figure(figsize=FIGSIZE, layout="constrained" if constrained else None)


# ----------------------------------------------------------------------------- trajectories
def _concrete(traj: Trajectory) -> bool:
    return traj.status != "traced" and isinstance(traj.covs, np.ndarray)


def _state_covs(traj: Trajectory, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means `(k, d)` and covariances `(k, d, d)` at the save indices `idx` (the mixture over
    blocks for a positional trajectory)."""
    if traj.means.ndim == 3 and "positional" in traj.extra:
        mix = [traj.extra["positional"](traj.means[i], traj.covs[i]).mixture() for i in idx]
        return (np.array([np.asarray(g.mean) for g in mix]),
                np.array([np.asarray(g.cov) for g in mix]))
    return np.asarray(traj.means)[idx], np.asarray(traj.covs)[idx]


def state_rows(mean: np.ndarray, cov: np.ndarray, prefix: str = "final ") -> list[tuple[str, str]]:
    r"""Table rows summarising one Gaussian state: the entries for $d \le$ `MATRIX_MAX_D`, else
    $|\alpha|$, $\operatorname{tr}\Sigma$, the effective rank and the largest eigenvalues."""
    d = mean.shape[-1]
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        return [(prefix + "state", "non-finite (the solve stopped: see status)")]
    if d <= MATRIX_MAX_D:
        return [(prefix + "mean", vector_text(mean)), (prefix + "cov", matrix_text(cov))]
    w = np.linalg.eigvalsh((cov + cov.T) / 2)[::-1]
    return [(prefix + "|mean|", fmt(float(np.linalg.norm(mean)))),
            (prefix + "tr cov", fmt(float(np.trace(cov)))),
            (prefix + "effective rank", fmt(float(effective_rank(cov)))),
            (prefix + f"top {TOP_EIGENVALUES} eigenvalues", vector_text(w[:TOP_EIGENVALUES])),
            (prefix + "smallest eigenvalue", fmt(float(w[-1])))]


def trajectory_rows(traj: Trajectory) -> list[tuple[str, str]]:
    """The rows of a trajectory's table: status, time range, save times, steps, final state."""
    rows = [("status", traj.status), ("method", traj.method)]
    if not _concrete(traj):
        return rows
    ts = np.asarray(traj.ts)
    d = traj.means.shape[-1]
    rows += [("t range", f"[{fmt(float(ts[0]))}, {fmt(float(traj.t_stop))}]" if len(ts) else "—"),
             ("saved times", str(len(ts))), ("solver steps", str(traj.num_steps)), ("d", str(d))]
    if traj.blowup_time is not None:
        rows.append(("blow-up time", f"{float(traj.blowup_time):.8g}"))  # to compare with theory
    if traj.means.ndim == 3:
        rows.append(("blocks", f"{traj.means.shape[1]} (state below: their mixture)"))
    if len(ts):
        mean, cov = _state_covs(traj, np.array([len(ts) - 1]))
        rows += state_rows(mean[0], cov[0])
    return rows


def trajectory_figure(traj: Trajectory) -> Figure | None:
    r"""Eigenvalues of $\Sigma(t)$ against $t$ (log scale): the `TOP_EIGENVALUES` largest, the
    smallest and the trace; `None` for a traced or empty trajectory."""
    if not _concrete(traj) or len(traj.ts) == 0:
        return None
    n = len(traj.ts)
    idx = np.unique(np.linspace(0, n - 1, min(n, FIGURE_MAX_TIMES)).round().astype(int))
    _, covs = _state_covs(traj, idx)
    ts = np.asarray(traj.ts)[idx]
    ok = np.all(np.isfinite(covs), axis=(-2, -1))
    w = np.full(covs.shape[:-1], np.nan)
    if ok.any():
        w[ok] = np.linalg.eigvalsh((covs[ok] + np.swapaxes(covs[ok], -1, -2)) / 2)[:, ::-1]
    w = np.where(w > 0, w, np.nan)  # log scale: a zero eigenvalue is not drawn
    fig = new_figure()
    ax = fig.add_subplot()
    d = w.shape[-1]
    top = min(d, TOP_EIGENVALUES)
    for j in range(top):
        ax.plot(ts, w[:, j], lw=1.2, label=rf"$\lambda_{{{j + 1}}}$")
    if d > top:
        ax.plot(ts, w[:, -1], lw=1, color="0.5", label=rf"$\lambda_{{{d}}}$ (smallest)")
    with np.errstate(invalid="ignore", over="ignore"):
        tr = np.where(ok, np.trace(covs, axis1=-2, axis2=-1), np.nan)
    ax.plot(ts, np.where(tr > 0, tr, np.nan), "k--", lw=1, label=r"tr $\Sigma$")
    if np.any(np.isfinite(w)):
        ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_title(f"{traj.field_name or 'trajectory'}: eigenvalues of Σ(t) ({traj.status})",
                 fontsize=8)
    ax.legend(fontsize=6, ncol=2)
    return fig


def trajectory_png(traj: Trajectory) -> bytes | None:
    """The trajectory's figure (`trajectory_figure`) as PNG bytes, or `None`."""
    fig = trajectory_figure(traj)
    return None if fig is None else png_bytes(fig)


def trajectory_html(traj: Trajectory) -> str:
    """The trajectory's table (`trajectory_rows`) and its small figure, as HTML."""
    table = html_table(trajectory_rows(traj), f"Trajectory of {traj.field_name or 'a field'}")
    return side_by_side(table, trajectory_png(traj), "eigenvalues of the covariance")


# ----------------------------------------------------------------------------- validation
def validation_numbers(report: ValidationReport) -> dict[str, Any]:
    """The key numbers of a validation report: verdict, sizes, per-quantity slopes, Monte Carlo
    band ratios, bias fits and errors per $N$, reasons (plain values, for tables and JSON)."""
    out: dict[str, Any] = {
        "variant": report.field_name, "closure": "exact" if report.exact else "approximate",
        "verdict": report.verdict, "d": report.d, "t1": report.t1,
        "N": list(report.n_particles), "seeds": list(report.seeds)}
    for q in ("mean", "cov"):
        s = report.stats(q)
        out[q] = {"rms error per N": [float(v) for v in s.rms],
                  "slope": float(s.slope), "slope standard error": float(s.slope_se),
                  "band ratio": float(s.band_ratio), "bias b": float(s.bias),
                  "at solver accuracy": bool(s.at_floor)}
    out["reasons"] = list(report.reasons)
    return out


def validation_rows(report: ValidationReport) -> list[tuple[str, str]]:
    """The rows of a validation report's table (from `validation_numbers`)."""
    num = validation_numbers(report)
    rows = [(k, fmt(num[k]) if not isinstance(num[k], list) else ", ".join(map(fmt, num[k])))
            for k in ("variant", "closure", "verdict", "d", "t1", "N", "seeds")]
    for q in ("mean", "cov"):
        s = num[q]
        rows.append((f"{q} error (rms) per N", ", ".join(fmt(v) for v in s["rms error per N"])))
        rows.append((f"{q} slope", "at solver accuracy" if s["at solver accuracy"] else
                     f"{s['slope']:+.3f} ± {fmt(s['slope standard error'])}"))
    rows += [("reason", r) for r in num["reasons"]]
    return rows


def validation_figure(report: ValidationReport, draw: Callable[..., Any]) -> Figure:
    """The error-against-$N$ figure drawn small, on a figure made without `pyplot`, by `draw`
    (`gaussflow.plots.validation_errors`, passed in by the caller: this module does not import
    the plotting module, which imports the result types)."""
    fig = new_figure(constrained=False)  # validation_errors calls tight_layout
    fig.set_size_inches(FIGSIZE[0], FIGSIZE[1] + 0.4)
    draw(report, ax=fig.add_subplot())
    return fig


def validation_png(report: ValidationReport, draw: Callable[..., Any]) -> bytes:
    """The report's small figure (`validation_figure`) as PNG bytes."""
    return png_bytes(validation_figure(report, draw))


def validation_html(report: ValidationReport, draw: Callable[..., Any]) -> str:
    """The report's table (`validation_rows`) and its small figure, as HTML."""
    table = html_table(validation_rows(report), f"Validation of {report.field_name}")
    return side_by_side(table, validation_png(report, draw), "error against N")


# ----------------------------------------------------------------------------- sweeps
def sweep_rows(res: SweepResult) -> list[tuple[str, str]]:
    """The rows of a sweep's table: members, status counts, solvers, stop and blow-up times,
    timing."""
    rows = [("members", str(len(res))), ("d", str(res.final_means.shape[-1])),
            ("method", res.method)]
    rows.append(("statuses", ", ".join(f"{k}: {v}" for k, v in res.counts().items())))
    if res.solvers is not None:
        names, n = np.unique(res.solvers, return_counts=True)
        rows.append(("solvers", ", ".join(f"{k}: {v}" for k, v in zip(names, n))))
    if len(res):
        rows.append(("t_stop", f"[{fmt(float(np.min(res.t_stop)))}, "
                               f"{fmt(float(np.max(res.t_stop)))}]"))
    bt = np.asarray(res.blowup_time, float)
    bt = bt[np.isfinite(bt)]
    rows.append(("blow-up times", f"[{fmt(bt.min())}, {fmt(bt.max())}]" if bt.size else "—"))
    steps = np.asarray(res.num_steps)
    if steps.size:
        rows.append(("solver steps (median / max)",
                     f"{fmt(float(np.median(steps)))} / {int(steps.max())}"))
    rows += [("compile", f"{res.compile_seconds:.3g} s"), ("run", f"{res.run_seconds:.3g} s"),
             ("devices / chunk", f"{res.n_devices} / {res.chunk_size}")]
    return rows


def sweep_html(res: SweepResult) -> str:
    """The sweep's table (`sweep_rows`) as HTML."""
    return html_table(sweep_rows(res), f"SweepResult of {res.field_name or 'a field'}")
