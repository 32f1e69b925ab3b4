r"""Validation reports and their statistics.

`ValidationReport` (the result of `gaussflow.validate`) and `QuantityStats`
(the error statistics of one quantity), the fits behind them (`quantity_stats`: root mean
square over seeds, least-squares slope of its logarithm against $\log N$ with a jackknife
standard error, Monte Carlo band ratio, bias fit $e^2 = b^2 + C^2 / N$), the relative moment
errors (`moment_errors`) and the verdict (`judge`). The protocol and the verdict rules
are described in `gaussflow.validation`.
"""

from __future__ import annotations

import json
import math
import warnings
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field as dc_field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import nnls

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: The quantities compared: the mean and the covariance (errors of `moment_errors`).
QUANTITIES = ("mean", "cov")


@dataclass(frozen=True)
class QuantityStats:
    """Error statistics of one quantity (`"mean"` or `"cov"`) over $N$ and seeds."""

    errors: list  # [n_N][n_seeds] max-over-time relative errors
    rms: list  # per N, root mean square over seeds (the central estimate)
    lo: list  # per N, min over seeds
    hi: list  # per N, max over seeds
    slope: float  # least-squares slope of log error vs log N (nan at the floor)
    slope_se: float  # its standard error (jackknife over seeds)
    band_ratio: float  # max_N e(N) / (e(N_min) sqrt(N_min / N))
    bias: float  # b of e^2 = b^2 + C^2 / N
    mc_constant: float  # C
    at_floor: bool
    ok: bool | None  # exact closures: passes; approximate: None
    note: str = ""


@dataclass(frozen=True)
class ValidationReport:
    """Result of `gaussflow.validate`. `str(report)` is a table; see `plot`, `to_json`."""

    field_name: str
    exact: bool
    d: int
    t1: float
    ts: list
    n_particles: list
    seeds: list
    mean: QuantityStats
    cov: QuantityStats
    mc_mean: list  # [n_N][n_seeds] initial sampling error of the mean vs g0
    mc_cov: list
    verdict: str  # "consistent", "inconsistent", "inconclusive", "approximate"
    reasons: list
    slope_band: tuple
    band_factor: float
    floor: float
    statuses: dict  # {"particles": [[...]], "closure": [[...]]}
    curves: dict = dc_field(default_factory=dict, repr=False)  # per N: times, mean/cov error curves
    info: dict = dc_field(default_factory=dict, repr=False)

    @property
    def consistent(self) -> bool | None:
        """`True`/`False` for exact closures (`False` also when inconclusive); `None` for
        approximate ones."""
        if not self.exact:
            return None
        return self.verdict == "consistent"

    @property
    def ok(self) -> bool:
        """Consistent exact closure, or an approximate one whose runs all completed."""
        return self.verdict in ("consistent", "approximate")

    def stats(self, quantity: str) -> QuantityStats:
        """The statistics of `quantity` (`"mean"` or `"cov"`)."""
        return {"mean": self.mean, "cov": self.cov}[quantity]

    # -- outputs -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The report as plain JSON-compatible Python values (lists, dicts, floats, strings)."""
        return _jsonable(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (`to_dict`), indented by `indent`."""
        return json.dumps(self.to_dict(), indent=indent)

    def plot(self, path: str | os.PathLike | None = None,
             ax: Axes | None = None) -> Figure | str:
        """Log-log error against $N$ with the $N^{-1/2}$ reference; saves PNG+PDF if `path`.

        Returns the figure, or the PNG's path when `path` is given (a stem; a `.png`/`.pdf`
        ending is dropped).
        """
        from . import plots

        fig = plots.validation_errors(self, ax=ax)
        if path is not None:
            stem = str(path)
            for ext in (".png", ".pdf"):
                if stem.endswith(ext):
                    stem = stem[: -len(ext)]
            return plots.save(fig, stem)
        return fig

    def __repr__(self) -> str:
        return (f"ValidationReport({self.field_name}, {self.verdict}, d={self.d}, t1={self.t1:g}, "
                f"N={list(self.n_particles)}, slopes mean {self.mean.slope:+.2f} / cov "
                f"{self.cov.slope:+.2f})")

    def _repr_html_(self) -> str:
        """A table (verdict, errors and slopes per quantity, reasons) and the small error-against-$N$
        figure (`gaussflow.display`)."""
        from .display import validation_html
        from .plots import validation_errors

        return validation_html(self, validation_errors)

    def _repr_png_(self) -> bytes:
        """The small error-against-$N$ figure of `_repr_html_` as PNG bytes."""
        from .display import validation_png
        from .plots import validation_errors

        return validation_png(self, validation_errors)

    def __str__(self) -> str:
        kind = "exact" if self.exact else "approximate"
        lines = [f"validate {self.field_name} ({kind} closure), d = {self.d}, t1 = {self.t1:g}, "
                 f"{len(self.ts)} save times, seeds {list(self.seeds)}",
                 "errors: max over time; root mean square over seeds [min, max]"
                 + (f"; causal: N tokens per block, max over blocks {self.info['blocks']} of "
                    f"{self.info['n_blocks']}" if self.info.get("n_blocks") else ""),
                 f"{'N':>7}  {'mean error':>24}  {'cov error':>24}  {'MC (t=0) cov':>12}"]
        for i, n in enumerate(self.n_particles):
            m, c = self.mean, self.cov
            mc = float(np.sqrt(np.mean(np.square(self.mc_cov[i]))))
            lines.append(f"{n:>7}  {m.rms[i]:9.3e} [{m.lo[i]:.2e},{m.hi[i]:.2e}]  "
                         f"{c.rms[i]:9.3e} [{c.lo[i]:.2e},{c.hi[i]:.2e}]  {mc:12.3e}")
        keys = self.info.get("effective_keys")
        if keys:
            lines.append("effective keys 1/sum_j w_ij^2 (min / lowest median over queries): "
                         + ", ".join(
                             f"N={k}: {v['min']:.3g} / {v['median']:.3g}"
                             for k, v in keys["summary"].items()))
        for q in QUANTITIES:
            s = self.stats(q)
            if s.at_floor:
                lines.append(f"{q:>5}: at solver accuracy (all errors < {self.floor:g})")
                continue
            txt = (f"{q:>5}: slope {s.slope:+.3f} ± {s.slope_se:.3f}, band ratio "
                   f"{s.band_ratio:.2f} (<= {self.band_factor:g}), bias fit b = {s.bias:.2e}")
            if s.note:
                txt += f"  [{s.note}]"
            lines.append(txt)
        lo, hi = self.slope_band
        lines.append(f"verdict: {self.verdict}"
                     + (f" (slope band [{lo:g}, {hi:g}])" if self.exact else ""))
        for r in self.reasons:
            lines.append(f"  - {r}")
        return "\n".join(lines)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# ------------------------------------------------------------------------------- statistics
def _rms(E):
    return np.sqrt(np.mean(np.asarray(E) ** 2, axis=1))


def _fit_slope(ns, central):
    x = np.log(ns)
    y = np.log(np.maximum(central, 1e-300))
    return float(np.polyfit(x, y, 1)[0])


def _slope(ns, E):
    r"""Least-squares slope of $\log \mathrm{rms}_{\mathrm{seeds}}(E)$ against $\log N$ and its
    jackknife standard error over seeds (leave one seed out; `nan` with a single seed)."""
    slope = _fit_slope(ns, _rms(E))
    S = E.shape[1]
    if S < 2:
        return slope, float("nan")
    jack = np.array([_fit_slope(ns, _rms(np.delete(E, s, axis=1))) for s in range(S)])
    return slope, float(np.sqrt((S - 1) / S * np.sum((jack - jack.mean()) ** 2)))


def quantity_stats(ns: Sequence[int], E: np.ndarray, exact: bool,
                   slope_band: tuple[float, float], band_factor: float,
                   floor: float) -> QuantityStats:
    """`QuantityStats` of the errors `E` `(n_N, n_seeds)` of one quantity over the sizes
    `ns`; `ok` by the verdict rules for exact closures (`None` for approximate ones)."""
    ns = np.asarray(ns, float)
    rms = _rms(E)
    at_floor = bool(np.all(E < floor))
    slope, se = _slope(ns, E) if len(ns) >= 2 else (float("nan"), float("nan"))
    ref = rms[0] * np.sqrt(ns[0] / ns)
    band_ratio = float(np.max(rms / np.maximum(ref, 1e-300)))
    (b2, c2), _ = nnls(np.stack([np.ones_like(ns), 1.0 / ns], axis=1), np.mean(E**2, axis=1))
    note = ""
    ok = None
    if exact:
        if at_floor:
            ok = True
        else:
            ok = bool(slope <= slope_band[1] and band_ratio <= band_factor)
            if slope < slope_band[0]:
                note = "falls faster than N^{-1/2} (e.g. symmetric cancellation)"
    return QuantityStats(errors=E.tolist(), rms=rms.tolist(), lo=E.min(1).tolist(),
                         hi=E.max(1).tolist(), slope=slope, slope_se=se, band_ratio=band_ratio,
                         bias=float(np.sqrt(b2)), mc_constant=float(np.sqrt(c2)),
                         at_floor=at_floor, ok=ok, note=note)


def moment_errors(means_p: np.ndarray, covs_p: np.ndarray, means_c: np.ndarray,
                  covs_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Relative errors per time: $|m_p - m_c| / \sqrt{\operatorname{tr} S_c}$ and
    $\|S_p - S_c\|_F / \|S_c\|_F$ (particles `p` against closure `c`; leading axes broadcast)."""
    tr = np.trace(covs_c, axis1=-2, axis2=-1)
    em = np.linalg.norm(means_p - means_c, axis=-1) / np.sqrt(np.maximum(tr, 1e-300))
    ec = (np.linalg.norm(covs_p - covs_c, axis=(-2, -1))
          / np.maximum(np.linalg.norm(covs_c, axis=(-2, -1)), 1e-300))
    return em, ec


def judge(ns: Sequence[int], seeds: Sequence[int], errors: Mapping[str, np.ndarray],
          statuses: Mapping[str, list], stops: list, info: dict, curves: Mapping[str, dict],
          exact: bool, slope_band: tuple[float, float], band_factor: float, floor: float,
          t1: float) -> tuple[dict[str, QuantityStats], str, list[str]]:
    """Statistics, verdict and reasons of a validation (rules: `gaussflow.validation`).

    `errors`: `{"mean": E, "cov": E}` with `E[i, j]` the max-over-time error of size
    `ns[i]` and seed `seeds[j]` (NaN where no save time was compared); `statuses`:
    `{"particles": [[...]], "closure": [[...]]}`; `stops`: the closure runs that stopped
    before `t1`; `info`: the run's information (Sinkhorn convergence, effective keys);
    `curves`: the error curves per $N$. Returns `(stats, verdict, reasons)`, `stats` a
    `QuantityStats` per quantity. Warns (`RuntimeWarning`) when a particle Sinkhorn did not
    converge, and when the median query has fewer than `info["effective_keys"]["threshold"]`
    effective keys.
    """
    reasons = []
    # Inconclusive (module doc): a particle run failed, a closure stopped before t1, or a particle
    # Sinkhorn did not converge. The statistics are still those of the save times reached.
    failed = [(n, s, a, b) for i, n in enumerate(ns) for j, s in enumerate(seeds)
              for a, b in [(statuses["particles"][i][j], statuses["closure"][i][j])]
              if a != "completed" or b != "completed"]
    if np.any(~np.isfinite(errors["mean"])) or np.any(~np.isfinite(errors["cov"])):
        errors = {q: np.where(np.isfinite(v), v, np.inf) for q, v in errors.items()}
    stats = {q: quantity_stats(ns, errors[q], exact, slope_band, band_factor, floor)
             for q in QUANTITIES}
    if stops:
        first = min(stops, key=lambda r: r["t_stop"])
        bt = [r["blowup_time"] for r in stops if r["blowup_time"] is not None]
        what = (f"finite-time blow-up at t = {min(bt):.4g} < t1 = {t1:g}" if bt else
                f"{first['status']} at t = {first['t_stop']:.4g} < t1 = {t1:g}")
        reasons.append(f"the closure stopped early ({what}; {len(stops)} of "
                       f"{len(ns) * len(seeds)} runs): particles of finite N do not follow it "
                       f"there; validate over t1 < {first['t_stop']:.4g}")
    unconverged = info.get("sinkhorn_converged") is False
    if unconverged:
        msg = (f"particle Sinkhorn did not converge (marginal error "
               f"{info['sinkhorn_marginal_error_max']:.2e} > sinkhorn_tol after "
               f"{info['sinkhorn_iterations_max']} iterations): the particle velocity is not the "
               "Sinkhorn field; raise particle_options['sinkhorn_max_iter'] or shorten t1")
        reasons.append(msg)
        # stacklevel 3: the caller of gf.validate (judge is called from validate)
        warnings.warn(f"gf.validate: {msg}", RuntimeWarning, stacklevel=3)
    if failed or unconverged:
        verdict = "inconclusive"
        for n, s, a, b in failed:
            if a != "completed":
                reasons.append(f"N={n}, seed={s}: particles {a}, closure {b}; shorten t1")
        if exact and not any(len(curves[str(n)]["ts"]) < 2 for n in ns):
            would = "consistent" if all(stats[q].ok for q in QUANTITIES) else "inconsistent"
            reasons.append(f"on the save times reached the errors alone would say: {would}")
    elif exact:
        verdict = "consistent" if all(stats[q].ok for q in QUANTITIES) else "inconsistent"
        for q in QUANTITIES:
            st = stats[q]
            if st.at_floor:
                reasons.append(f"{q}: agrees to solver accuracy (max error "
                               f"{np.max(st.errors):.1e} < {floor:g})")
                continue
            if st.slope > slope_band[1]:
                reasons.append(f"{q}: slope {st.slope:+.2f} above {slope_band[1]:g}: the error "
                               "does not fall like N^-1/2 (a bias)")
            if st.band_ratio > band_factor:
                reasons.append(f"{q}: error at some N is {st.band_ratio:.2f}x the N^-1/2 line "
                               f"through N={ns[0]} (limit {band_factor:g}): a plateau")
            if st.ok:
                reasons.append(f"{q}: falls like N^{st.slope:+.2f} within the Monte Carlo band")
    else:
        verdict = "approximate"
        for q in QUANTITIES:
            st = stats[q]
            reasons.append(f"{q}: remaining bias b = {st.bias:.2e} (fit e^2 = b^2 + C^2/N); "
                           f"error at N={ns[-1]}: {st.rms[-1]:.2e}")
    keys = info.get("effective_keys")
    low = {int(k): v["median"] for k, v in (keys or {}).get("summary", {}).items()
           if v["median"] < keys["threshold"]}
    if low:
        msg = (f"the median query averages over fewer than {keys['threshold']:g} effective keys "
               f"(1/sum_j w_ij^2: " + ", ".join(f"{v:.2g} at N={k}" for k, v in low.items())
               + "): the particle system is far from its mean-field limit here (attention sits "
               "on a few extreme tokens); raise N or shorten t1 (if the flow expands the mean, "
               "sampler='antithetic' removes the sampling error of the mean it amplifies)")
        reasons.append(msg)
        warnings.warn(f"gf.validate: {msg}", RuntimeWarning, stacklevel=3)
    return stats, verdict, reasons
