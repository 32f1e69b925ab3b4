"""Regime classification of solved trajectories (`classify`, `Regime`).

The decision rules are in the docstring of `classify`; the thresholds in `THRESHOLDS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field as dc_field
from typing import TYPE_CHECKING

import numpy as np

from .metrics import normalised_spectrum

if TYPE_CHECKING:
    from ..integrate import Trajectory


#: Regimes returned by `classify`.
REGIMES = ("stationary", "collapse", "converge", "blowup", "growth", "undetermined")

#: Decision thresholds of `classify` (see its docstring).
THRESHOLDS = {
    "stationary": 1e-6,     # max_t |Sigma(t) - Sigma0| / |Sigma0| below this: stationary
    "decay_exponent": 0.5,  # p_i ~ t^{-k}: k above this over [t/2, t] counts as vanishing
    "floor": 1e-8,          # p_i below this at t_end counts as zero whatever its exponent
    "growth": 4.0,          # tr Sigma(t_end) / tr Sigma(t_half) above this: unbounded growth
    "moving": 0.05,         # |Sigma(t_end) - Sigma(t_half)| / |Sigma(t_end)| above: not converged
    "settling": 0.75,       # change ratio [t/2, t] vs [t/4, t/2] below this: settling (1/t gives 1/2)
    "settled": 1e-7,        # change over [t/2, t] below this: converged whatever the ratio
    "blowup_share": 1e-4,   # at blow-up, p_i above this counts in the rank of Sigma / tr Sigma
    "growth_start": 10.0,   # tr Sigma / tr Sigma0 at or below this: the growth has not started
    "late_growth": 1e-3,    # solver's tau / (t_stop - growth start) above this: exponential growth
}


@dataclass(frozen=True)
class Regime:
    r"""What a trajectory does. `kind` in `REGIMES`.

    `rank`: the rank of the limit of $\Sigma$ (converge, stationary) or of
    $\Sigma / \operatorname{tr}\Sigma$ (blowup, growth; 0 for collapse); `limit`: the limit
    covariance (converge: extrapolated, see `classify`; stationary: $\Sigma_0$) or the limit of
    $\Sigma / \operatorname{tr}\Sigma$ (blowup, growth, collapse); `blowup_time`: $t^*$ (blowup);
    `rate`: $\mathrm{d} \log \operatorname{tr}\Sigma / \mathrm{d}t$ over the last half (growth,
    collapse); `reason`: the decision in words; `exponents`: the decay exponents $k_i$ of the
    normalised spectrum.
    """

    kind: str
    rank: int | None = None
    limit: np.ndarray | None = None
    blowup_time: float | None = None
    rate: float | None = None
    reason: str = ""
    exponents: np.ndarray | None = dc_field(default=None, repr=False)

    def __str__(self) -> str:
        parts = [self.kind]
        if self.rank is not None:
            parts.append(f"rank {self.rank}")
        if self.blowup_time is not None:
            parts.append(f"t* = {self.blowup_time:.6g}")
        if self.rate is not None:
            parts.append(f"rate {self.rate:.3g}")
        return ", ".join(parts)


def _late_growth(ts, covs, t_stop, blowup_time, th):
    r"""The rate $1/\tau$ of a `blowup` that is a late exponential growth (rule 1 of
    `classify`), or `None`."""
    if blowup_time is None or len(ts) < 2:
        return None
    tau, tr0 = float(blowup_time) - float(t_stop), float(np.trace(covs[0]))
    if not tr0 > 0:
        return None
    f = np.trace(covs, axis1=-2, axis2=-1) / tr0
    before = np.nonzero((f <= th["growth_start"]) & (ts < t_stop))[0]
    if tau <= 0 or len(before) == 0:
        return None
    span = float(t_stop) - float(ts[before[-1]])
    return 1.0 / tau if span > 0 and tau > th["late_growth"] * span else None


def _at(ts, covs, t):
    """Saved time and covariance nearest to time `t`."""
    i = int(np.argmin(np.abs(ts - t)))
    return ts[i], covs[i]


def _top(S, r, normalise=False):
    """Projection of symmetric $S$ on its top-$r$ eigenspace (optionally divided by its trace)."""
    w, U = np.linalg.eigh((S + S.T) / 2)
    Ur, wr = U[:, ::-1][:, :r], np.clip(w[::-1][:r], 0, None)
    L = (Ur * wr) @ Ur.T
    L = (L + L.T) / 2
    return L / np.trace(L) if normalise and np.trace(L) > 0 else L


def classify(traj: Trajectory, thresholds: Mapping[str, float] | None = None) -> Regime:
    r"""Classify a solved trajectory (`gf.Trajectory`) into one of `REGIMES`.

    Rules, in order. Write $t_0$ = `ts[0]`, $t_\mathrm{end}$ the last saved time, $t_q, t_h$ the
    saved times nearest to $t_0 + (t_\mathrm{end} - t_0)/4$ and $t_0 + (t_\mathrm{end} - t_0)/2$
    (save densely enough, e.g. 101 equally spaced times), $p$ the normalised spectrum
    (`normalised_spectrum`).

    1. `status == "blowup"`: `blowup` with `traj.blowup_time`; `limit` is the last
       $\Sigma / \operatorname{tr}\Sigma$ projected on the directions with
       $p_i >$ `blowup_share` (the solver stops once $\operatorname{tr}\Sigma$ grew $10^8$-fold,
       the default `blowup_threshold`, so bounded directions keep a share $\sim 10^{-8}$).
       Except a *late exponential growth*: the solver's test $\tau < 10^{-3} (t - t_0)$
       ($\tau = f / f'$, $f = \operatorname{tr}\Sigma / \operatorname{tr}\Sigma_0$) assumes the
       growth began at $t_0$. With $t_g$ the last saved time where $f \le$ `growth_start`, a
       finite-time blow-up has $\tau \ll t_\mathrm{stop} - t_g$ ($f \sim 1/(t^* - t)$: their
       ratio is about $1/f$), while a growth $f \propto e^{r t}$ has $\tau = 1/r$ against
       $t_\mathrm{stop} - t_g \ge \log(10^7)/r$; so $\tau / (t_\mathrm{stop} - t_g) >$
       `late_growth` gives `growth`, with rate $1/\tau$ (the reason says so).
    2. `status == "escaped"` (the solver stopped an exponential growth of
       $\operatorname{tr}\Sigma$ far past the blow-up threshold): `growth`, rate = slope of
       $\log \operatorname{tr}\Sigma$ over the last half of the saved path. Any other status
       but `completed`: `undetermined` (the reason names the status).
    3. $\max_s \|\Sigma(s) - \Sigma_0\| / \|\Sigma_0\| <$ `stationary` (Frobenius):
       `stationary`.
    4. *Vanishing directions* (rank). The exponent
       $$k_i = -\frac{\log\big(p_i(t_\mathrm{end}) / p_i(t_h)\big)}
                    {\log\big((t_\mathrm{end} - t_0) / (t_h - t_0)\big)}$$
       is 1 for the $O(1/t)$ decay of the softmax limits ($p_i \sim c/t$), near 0 for a
       direction that keeps a share of the trace, and large for exponential decay; $p_i$
       vanishes if $k_i >$ `decay_exponent` (1/2, half-way between 0 and 1) or
       $p_i(t_\mathrm{end}) <$ `floor`. The rank $r$ counts the others.
       For $p = a + c/t$ the exponent is about $c / (a t)$, so $t_\mathrm{end}$ must be long
       compared with the flow's time scale (e.g. $10^3$ for the reference 2-D weights).
    5. $\operatorname{tr}\Sigma(t_\mathrm{end}) / \operatorname{tr}\Sigma(t_h) >$ `growth`:
       `growth` (rate = slope of $\log\operatorname{tr}\Sigma$ in time).
       Trace exponent $k_\mathrm{tr} >$ `decay_exponent` or
       $\operatorname{tr}\Sigma(t_\mathrm{end}) <$ `floor` $\cdot \operatorname{tr}\Sigma_0$:
       `collapse` ($\Sigma \to 0$).
    6. *Convergence* of the kept part: with $K(t)$ the projection of $\Sigma(t)$ on its top-$r$
       eigenspace, $\delta_2 = \|K(t_\mathrm{end}) - K(t_h)\| / \|\Sigma(t_\mathrm{end})\|$ and
       $\delta_1$ the same over $[t_q, t_h]$ (the vanishing directions are left out: their $1/t$
       decay would mask a slow drift of the rest). A $1/t$ approach gives
       $\delta_2/\delta_1 = 1/2$, an exponential one much less; a slow drift (e.g. a collapse on
       a long time scale) gives about 1 or more. `converge` if $\delta_2 <$ `settled`, or
       $\delta_2 <$ `moving` and $\delta_2/\delta_1 <$ `settling`; otherwise `undetermined`
       ("still evolving"). The limit is the Richardson extrapolation of a $1/t$ approach,
       $$\frac{(t_\mathrm{end} - t_0)\,\Sigma(t_\mathrm{end}) - (t_h - t_0)\,\Sigma(t_h)}
              {t_\mathrm{end} - t_h},$$
       projected on its top-$r$ eigenspace (exact to $O(1/t^2)$ for the softmax limits).

    Thresholds (`THRESHOLDS`, overridable by `thresholds={...}`) sit between the values
    the regimes produce, so modest changes of the solver tolerances do not change decisions.

    Parameters
    ----------
    traj : Trajectory
        A solved trajectory of one Gaussian (`covs` of shape `(n, d, d)`, `ts`, `status`,
        `blowup_time`).
    thresholds : Mapping of str to float, optional
        Overrides of entries of `THRESHOLDS`.

    Returns
    -------
    Regime
        The regime, with its rank, limit, rate and reason as applicable.

    Raises
    ------
    ValueError
        For an unknown threshold name, or a `traj` that is not a trajectory of one Gaussian.
    """
    th = dict(THRESHOLDS)
    if thresholds:
        unknown = set(thresholds) - set(th)
        if unknown:
            raise ValueError(f"unknown thresholds {sorted(unknown)}; known: {sorted(th)}")
        th.update(thresholds)
    ts = np.asarray(getattr(traj, "ts", None), dtype=float)
    covs = np.asarray(getattr(traj, "covs", None), dtype=float)
    if covs.ndim != 3 or ts.ndim != 1 or len(ts) != len(covs) or len(ts) == 0:
        raise ValueError("traj must be a gf.Trajectory of one Gaussian (covs of shape (n, d, d))")
    covs = (covs + np.swapaxes(covs, -1, -2)) / 2
    status = traj.status
    S_end = covs[-1]
    p_end = normalised_spectrum(S_end)
    if status == "blowup":
        rank = int(np.sum(p_end > th["blowup_share"]))
        limit = _top(S_end, max(rank, 1), normalise=True)
        late = _late_growth(ts, covs, traj.t_stop, traj.blowup_time, th)
        if late is not None:
            return Regime("growth", rank=rank, limit=limit, rate=late,
                          reason="late exponential growth: the solver's blow-up test fired, but "
                                 "tau is not small against the time since the growth began")
        return Regime("blowup", rank=rank, limit=limit, blowup_time=traj.blowup_time,
                      reason="solver detected finite-time blow-up")
    if status == "escaped" and len(ts) >= 3:
        t_h, S_half = _at(ts, covs, ts[0] + (ts[-1] - ts[0]) / 2)
        tre, trh = np.trace(S_end), np.trace(S_half)
        rate = math.log(tre / trh) / (ts[-1] - t_h) if trh > 0 and ts[-1] > t_h else math.inf
        rank = int(np.sum(p_end > th["blowup_share"]))
        return Regime("growth", rank=rank, limit=_top(S_end, max(rank, 1), normalise=True),
                      rate=rate, reason="tr Sigma grew exponentially past the solver's escape "
                                        "threshold (status 'escaped')")
    if status != "completed":
        return Regime("undetermined", reason=f"solve stopped with status {status!r}")
    if len(ts) < 5:
        return Regime("undetermined", reason="fewer than 5 saved times; save more (ts=...)")
    t0, t_end = ts[0], ts[-1]
    span = t_end - t0
    t_h, S_half = _at(ts, covs, t0 + span / 2)
    t_q, S_q = _at(ts, covs, t0 + span / 4)
    S0 = covs[0]
    n0 = max(np.linalg.norm(S0), 1e-300)
    if np.max(np.linalg.norm(covs - S0, axis=(1, 2))) / n0 < th["stationary"]:
        r = int(np.sum(normalised_spectrum(S0) >= th["floor"]))
        return Regime("stationary", rank=r, limit=S0, reason="Sigma(t) = Sigma0 along the path")
    p_half = normalised_spectrum(S_half)
    lt = math.log(span / max(t_h - t0, 1e-300))
    with np.errstate(divide="ignore", invalid="ignore"):
        k = -np.log(p_end / p_half) / lt
    vanish = (p_end < th["floor"]) | (k > th["decay_exponent"])
    rank = int(np.sum(~vanish))
    tr0, trh, tre = np.trace(S0), np.trace(S_half), np.trace(S_end)
    if trh > 0 and tre / trh > th["growth"]:
        rate = math.log(tre / trh) / (t_end - t_h)
        return Regime("growth", rank=rank, limit=_top(S_end, max(rank, 1), normalise=True),
                      rate=rate, exponents=k, reason="tr Sigma grows without finite-time blow-up")
    k_tr = -math.log(max(tre, 1e-300) / trh) / lt if trh > 0 else math.inf
    if tre < th["floor"] * tr0 or k_tr > th["decay_exponent"]:
        rate = math.log(max(tre, 1e-300) / trh) / (t_end - t_h) if trh > 0 else -math.inf
        return Regime("collapse", rank=0, limit=_top(S_end, max(rank, 1), normalise=True),
                      rate=rate, exponents=k, reason="tr Sigma -> 0")
    kept = [_top(S, rank) for S in (S_q, S_half, S_end)]
    ne = max(np.linalg.norm(S_end), 1e-300)
    d2 = np.linalg.norm(kept[2] - kept[1]) / ne
    d1 = np.linalg.norm(kept[1] - kept[0]) / ne
    L = _top(((t_end - t0) * S_end - (t_h - t0) * S_half) / (t_end - t_h), rank)
    settled = d2 < th["settled"] or (d2 < th["moving"] and d2 < th["settling"] * d1)
    if not settled:
        return Regime("undetermined", rank=rank, limit=L, exponents=k,
                      reason=f"still evolving (relative change {d2:.2g} over the last half, "
                             f"{d1:.2g} over the quarter before): integrate longer")
    return Regime("converge", rank=rank, limit=L, exponents=k,
                  reason=f"converges to a rank-{rank} covariance")
