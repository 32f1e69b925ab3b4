r"""Save times that resolve a finite-time blow-up.

A run that blows up at $t^*$ changes fastest just before it: near a softmax blow-up
$\Sigma(t) \approx (t^* - t)^{-1} P$ plus a bounded part, so the normalised covariance
$\Sigma / \operatorname{tr}\Sigma$ moves by $O(1)$ over the last few per cent of $[t_0, t^*)$.
Equispaced save times over $[t_0, t_1]$ put only a fraction $(t^* - t_0)/(t_1 - t_0)$ of the points
before $t^*$ and almost none in that last stretch, so a drawn path ends in a straight chord.

`blowup_save_times` spreads `n` times over $[t_0, t^*)$: half equispaced, half geometrically
closer to $t^*$ (gaps from 10 % of $t^* - t_0$ down to `gap` of it). `solve_resolved` solves
once on equispaced times and, when the run blows up, solves again on these times (same number
of times: an integrated run reuses its compiled solve).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._checks import as_scalar, positive_int

if TYPE_CHECKING:
    from .field import Field
    from .gaussian import Gaussian
    from .integrate import Trajectory


def blowup_save_times(t0: float, t_star: float, n: int, gap: float = 1e-6) -> np.ndarray:
    r"""`n` increasing save times in $[t_0, t^*)$, dense toward the blow-up time $t^*$.

    The first `n // 2` are equispaced on $[t_0, t^*)$; the others are
    $t^* - (t^* - t_0)\, g_k$ with $g_k$ log-spaced from $10^{-1}$ down to `gap`.

    Parameters
    ----------
    t0 : float
        The initial time (the first save time).
    t_star : float
        The blow-up time, $> t_0$.
    n : int
        The number of save times, at least 4.
    gap : float
        The last save time's distance to $t^*$, relative to $t^* - t_0$; in $(0, 10^{-1})$.

    Returns
    -------
    np.ndarray
        The save times, shape `(n,)`, strictly increasing.

    Raises
    ------
    ValueError
        For $t^* \le t_0$, `n` < 4 or `gap` outside $(0, 10^{-1})$.
    """
    t0 = float(as_scalar("t0", t0))
    t_star = float(as_scalar("t_star", t_star))
    n = positive_int("n", n)
    gap = float(as_scalar("gap", gap, positive=True))
    if not t_star > t0:
        raise ValueError(f"t_star must be after t0 = {t0}, got {t_star}")
    if n < 4:
        raise ValueError(f"n must be at least 4, got {n}")
    if not gap < 0.1:
        raise ValueError(f"gap must be in (0, 0.1), got {gap}")
    span = t_star - t0
    n_u = n // 2
    uniform = t0 + span * np.arange(n_u) / n_u  # t0, ..., t* - span / n_u
    near = t_star - span * np.logspace(-1, np.log10(gap), n - n_u)
    ts = np.union1d(uniform, near)
    while len(ts) < n:  # a geometric point that coincided with an equispaced one: fill a gap
        k = int(np.argmax(np.diff(ts)))
        ts = np.insert(ts, k + 1, (ts[k] + ts[k + 1]) / 2)
    return ts


def solve_resolved(field: Field, g0: Gaussian, t1: float, n_save: int = 201,
                   **options: Any) -> Trajectory:
    r"""`gaussflow.solve` on `n_save` equispaced times over $[0, t_1]$, solved again on
    `blowup_save_times` when the run blows up, so that the saved path is smooth up to $t^*$.

    Parameters
    ----------
    field : Field
        A gaussflow field.
    g0 : Gaussian
        The initial Gaussian.
    t1 : float
        The final time ($> 0$).
    n_save : int
        The number of save times (at least 2; with fewer than 4 a blow-up is not refined).
    **options
        Keyword arguments of `gaussflow.solve` (`rtol`, `atol`, `progress`, ...), not `ts`
        or `t0`.

    Returns
    -------
    Trajectory
        The trajectory; after a blow-up at $t^*$ (`status == "blowup"`) the one saved on
        `blowup_save_times(0, t*, n_save)`, with `extra["save_times"] = "refined toward
        blow-up"`.

    Raises
    ------
    ValueError
        For `ts` or `t0` among `options`, `n_save` < 2, and whatever `gaussflow.solve` raises.
    """
    from .integrate import solve

    bad = {"ts", "t0"} & set(options)
    if bad:
        raise ValueError(f"solve_resolved chooses the save times; do not pass {sorted(bad)}")
    n_save = positive_int("n_save", n_save)
    if n_save < 2:
        raise ValueError(f"n_save must be at least 2, got {n_save}")
    t1 = float(as_scalar("t1", t1, positive=True))
    tr = solve(field, g0, t1, ts=np.linspace(0.0, t1, n_save), **options)
    t_star = tr.blowup_time
    if tr.status != "blowup" or t_star is None or not 0 < t_star < np.inf or n_save < 4:
        return tr
    fine = solve(field, g0, t1, ts=blowup_save_times(0.0, min(t_star, t1), n_save), **options)
    if fine.status != "blowup":  # the estimate moved (an integrated run): keep the first solve
        return tr
    fine.extra["save_times"] = "refined toward blow-up"
    return fine
