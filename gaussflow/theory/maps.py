r"""Regime maps: the fraction of random weight draws in each regime, against a scale and $d$.

`regime_map` draws `n_draws` attention weights per dimension $d$, integrates every flow with
`gf.sweep` from $\Sigma_0 = I$ (mean 0) for each value $p$ of the variant's scale parameter, and
classifies each member with `gf.theory.classify`. Every run is counted: the result holds one
label per run (`regime_label`) and the counts per $(p, d, \text{label})$.

**Weight draws** (`draw_weights`; the same draws for every $p$ and every value choice, so maps
differ only by what they vary). For each draw: $k$ uniform in $\{1, \dots, d\}$,
$Q \in \mathbb{R}^{k \times d}$ and $H \in \mathbb{R}^{k \times k}$ standard normal,
$K = -(I_k - s H) Q$ with the mixing $s$ (`mix`, default 1), padded with zero rows to $d \times d$
(the same $A = K^T Q$). Then
$A + A^T = -Q^T \left((I - sH) + (I - sH)^T\right) Q$: negative semi-definite with kernel
$\ker Q$ (dimension $d - k$) when $2 I - s (H + H^T) \succ 0$, indefinite otherwise, so the
draws mix collapses ($k = d$), limits of rank $d - k$ and blow-ups. Value maps: $V = I$,
$V = M^T M$ or $V = G$ with $M, G$ standard normal $d \times d$ divided by $\sqrt{d}$.

**Scales and horizon.** Softmax: $p = \beta$; L2: $p = c$; Sinkhorn: $p = \beta / \varepsilon$
($\varepsilon = 1$). Each flow runs to $t_1 = T / p$ (`horizon` $T$), saved at 0 and at
`n_save - 1` geometrically spaced times in $[10^{-4} t_1, t_1]$ (fast escapes keep enough saved
points to be classified). For softmax $\Sigma(t; \beta) = \Sigma(\beta t; 1)$, so with this
horizon a softmax map is flat in $\beta$ (a check, not an assumption: each $\beta$ is solved).

**Closed form** (softmax with $V = I$): `closed_form_agreement` compares every member with
`gf.theory.blowup_time` ($T^* \le t_1$: blow-up at $T^*$) and `gf.theory.limit_rank`
($A + A^T \preceq 0$: collapse or a limit of rank $\dim\ker(A + A^T)$).

`reproduce_maps` is the `gaussflow reproduce --only maps` part.
"""

from __future__ import annotations

import csv
import math
import time
from collections import Counter
from dataclasses import dataclass, field as dc_field
from typing import Iterable, Sequence

import numpy as np

from .._checks import positive_int
from ..batch import sweep
from ..gaussian import Gaussian
from ..variants import L2, Sinkhorn, Softmax
from .closed_forms import blowup_time, limit_rank
from .regimes import Regime, classify

#: Variants and the name of the scale parameter each map varies.
PARAMETERS = {"softmax": "beta", "l2": "c", "sinkhorn": "beta/eps"}
#: Value choices: identity, $M^T M$ and a random $G$ ($M, G$ standard normal over $\sqrt{d}$).
VALUES = ("I", "MtM", "random")
#: Order of the labels in tables and figures (ranks go between "collapse" and "blowup").
LABEL_ORDER = ("stationary", "collapse", "rank", "blowup", "growth", "undetermined")


def regime_label(regime: Regime) -> str:
    """The map label of a classified run.

    Parameters
    ----------
    regime : a `gf.theory.Regime`.

    Returns
    -------
    str
        `"rank r"` for a converged run (a limit of rank $r$), otherwise the regime's kind
        (`"collapse"`, `"blowup"`, `"growth"`, `"stationary"`, `"undetermined"`).
    """
    if regime.kind == "converge":
        return f"rank {regime.rank}"
    return regime.kind


def _label_key(label: str):
    head = label.split()[0]
    pos = LABEL_ORDER.index(head) if head in LABEL_ORDER else len(LABEL_ORDER)
    return (pos, int(label.split()[1]) if head == "rank" else 0, label)


def sort_labels(labels: Iterable[str]) -> list:
    """Labels in map order: stationary, collapse, rank 1, rank 2, ..., blowup, growth, undetermined.

    Parameters
    ----------
    labels : iterable of labels (`regime_label`).

    Returns
    -------
    list
        The distinct labels, sorted.
    """
    return sorted(set(labels), key=_label_key)


def draw_weights(d: int, n: int, seed: int = 0, mix: float = 1.0) -> dict:
    r"""`n` weight draws in dimension `d` (see the module docstring).

    Parameters
    ----------
    d : dimension, at least 2.
    n : number of draws.
    seed : the draws use `numpy.random.default_rng([seed, d])`.
    mix : $s$ in $K = -(I_k - s H) Q$; 0 gives $K = -Q$ (never a blow-up).

    Returns
    -------
    dict
        `Q`, `K`, `M`, `G`: arrays `(n, d, d)` (`M`, `G` already divided by $\sqrt{d}$);
        `k`: `(n,)` the number of nonzero rows of `Q`.
    """
    d = positive_int("d", d)
    n = positive_int("n", n)
    if d < 2:
        raise ValueError(f"d must be at least 2, got {d}")
    if not (isinstance(mix, (int, float)) and math.isfinite(mix) and mix >= 0):
        raise ValueError(f"mix must be a finite number >= 0, got {mix!r}")
    rng = np.random.default_rng([int(seed), d])
    Q, K = np.zeros((n, d, d)), np.zeros((n, d, d))
    ks = rng.integers(1, d + 1, size=n)
    for i, k in enumerate(ks):
        Q[i, :k] = rng.normal(size=(k, d))
        H = rng.normal(size=(k, k))
        K[i, :k] = -(np.eye(k) - mix * H) @ Q[i, :k]
    M = rng.normal(size=(n, d, d)) / math.sqrt(d)
    G = rng.normal(size=(n, d, d)) / math.sqrt(d)
    return {"Q": Q, "K": K, "M": M, "G": G, "k": ks}


def _value(w, i, value, d):
    if value == "I":
        return np.eye(d)
    if value == "MtM":
        return w["M"][i].T @ w["M"][i]
    return w["G"][i]


def _field(variant, Q, K, V, p):
    if variant == "softmax":
        return Softmax(Q, K, V, beta=p)
    if variant == "l2":
        return L2(Q, K, V, c=p)
    return Sinkhorn(Q, K, V, beta=p, eps=1.0)


def save_times(t1: float, n_save: int = 101) -> np.ndarray:
    r"""Save times of a map's flows: 0 and `n_save - 1` geometric times in $[10^{-4} t_1, t_1]$.

    Parameters
    ----------
    t1 : the horizon, positive.
    n_save : number of saved times, at least 5.

    Returns
    -------
    numpy.ndarray
        `(n_save,)` increasing times from 0 to `t1`.
    """
    if not (isinstance(t1, (int, float)) and math.isfinite(t1) and t1 > 0):
        raise ValueError(f"t1 must be a finite positive number, got {t1!r}")
    n_save = positive_int("n_save", n_save)
    if n_save < 5:
        raise ValueError(f"n_save must be at least 5 (classify needs 5 saved times), got {n_save}")
    ts = np.concatenate([[0.0], t1 * np.geomspace(1e-4, 1.0, n_save - 1)])
    ts[-1] = t1
    return ts


@dataclass
class RegimeMap:
    r"""A regime map (`regime_map`). Cells are keyed by `(p, d)`.

    `labels[(p, d)]`: one `regime_label` per draw; `regimes[(p, d)]`: the `Regime`s;
    `status[(p, d)]`: the solver statuses; `t1[(p, d)]` the horizon $T / p$;
    `predicted_blowup[(p, d)]` (softmax, $V = I$ only): the closed-form $T^*$ per draw
    (`inf` when none); `predicted_rank[d]`: `limit_rank` per draw (`-1` where $T^* < \infty$).
    """

    variant: str
    value: str
    params: tuple
    dims: tuple
    n_draws: int
    horizon: float
    mix: float
    seed: int
    labels: dict = dc_field(default_factory=dict)
    regimes: dict = dc_field(default_factory=dict, repr=False)
    status: dict = dc_field(default_factory=dict, repr=False)
    t1: dict = dc_field(default_factory=dict)
    predicted_blowup: dict = dc_field(default_factory=dict, repr=False)
    predicted_rank: dict = dc_field(default_factory=dict, repr=False)
    seconds: float = 0.0

    @property
    def param(self) -> str:
        """Name of the scale parameter (`beta`, `c` or `beta/eps`)."""
        return PARAMETERS[self.variant]

    @property
    def name(self) -> str:
        """A short name, e.g. `softmax, V = I`."""
        return f"{self.variant}, V = {'M^T M' if self.value == 'MtM' else self.value}"

    def counts(self) -> dict:
        """Counts per cell.

        Returns
        -------
        dict
            `{(p, d): {label: number of runs}}`; each cell's counts sum to `n_draws`.
        """
        return {key: dict(Counter(labs)) for key, labs in self.labels.items()}

    def all_labels(self) -> list:
        """Every label that occurs in the map, in map order (`sort_labels`).

        Returns
        -------
        list
            The labels.
        """
        return sort_labels(lab for labs in self.labels.values() for lab in labs)

    def rows(self) -> list:
        """One row per cell: `variant`, `value`, `param`, `p`, `d`, `n`, `t1`, then a count per label.

        Returns
        -------
        list
            Dicts with the same keys (labels that never occur in a cell count 0).
        """
        labels = self.all_labels()
        out = []
        for (p, d), c in self.counts().items():
            row = {"variant": self.variant, "value": self.value, "param": self.param, "p": p,
                   "d": d, "n": len(self.labels[(p, d)]), "t1": self.t1[(p, d)]}
            row.update({lab: c.get(lab, 0) for lab in labels})
            out.append(row)
        return out

    def to_dict(self) -> dict:
        """A JSON-ready summary (settings, counts per cell as a list of rows).

        Returns
        -------
        dict
            `name`, `variant`, `value`, `param`, `params`, `dims`, `n_draws`, `horizon`, `mix`,
            `seed`, `seconds`, `labels` (all labels in order), `rows` (`rows`).
        """
        return {"name": self.name, "variant": self.variant, "value": self.value,
                "param": self.param, "params": list(self.params), "dims": list(self.dims),
                "n_draws": self.n_draws, "horizon": self.horizon, "mix": self.mix,
                "seed": self.seed, "seconds": round(self.seconds, 2),
                "labels": self.all_labels(), "rows": self.rows()}


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_params(params):
    vals = tuple(params) if isinstance(params, (list, tuple, np.ndarray)) else None
    if not vals or not all(isinstance(p, (int, float, np.floating, np.integer))
                           and math.isfinite(p) and p > 0 for p in vals):
        raise ValueError(f"params must be a non-empty sequence of finite positive numbers, got "
                         f"{params!r}")
    return tuple(float(p) for p in vals)


def check_dims(dims: Sequence[int]) -> tuple[int, ...]:
    """The dimensions `dims` of a map as a tuple of integers >= 2; `ValueError` naming `dims`
    otherwise."""
    vals = tuple(dims) if isinstance(dims, (list, tuple, np.ndarray)) else None
    if not vals or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 2
                           for d in vals):
        raise ValueError(f"dims must be a non-empty sequence of integers >= 2, got {dims!r}")
    return tuple(int(d) for d in vals)


def regime_map(variant: str = "softmax", value: str = "I",
               params: Sequence[float] = (0.5, 1.0, 2.0), dims: Sequence[int] = (2, 3, 4),
               n_draws: int = 64, *, horizon: float = 500.0, mix: float = 1.0,
               seed: int = 0, n_save: int = 101, sweep_options: dict | None = None) -> RegimeMap:
    r"""Classify `n_draws` random flows per $(p, d)$ cell (module docstring: draws, horizon).

    Parameters
    ----------
    variant : `"softmax"`, `"l2"` or `"sinkhorn"` (`PARAMETERS`).
    value : `"I"`, `"MtM"` or `"random"` (`VALUES`).
    params : values of the scale ($\beta$, $c$ or $\beta / \varepsilon$), positive.
    dims : dimensions, each at least 2.
    n_draws : weight draws per dimension (shared by every $p$).
    horizon : $T$; each flow runs to $t_1 = T / p$.
    mix : $s$ of `draw_weights`.
    seed : seed of `draw_weights`.
    n_save : saved times per flow (`save_times`).
    sweep_options : extra keyword arguments of `gf.sweep` (e.g. `rtol`, `max_steps`).

    Returns
    -------
    RegimeMap
        Labels, regimes and statuses per cell; for softmax with $V = I$ also the closed-form
        predictions (`closed_form_agreement`).
    """
    _check_choice("variant", variant, PARAMETERS)
    _check_choice("value", value, VALUES)
    params = _check_params(params)
    dims = check_dims(dims)
    n_draws = positive_int("n_draws", n_draws)
    if not (isinstance(horizon, (int, float)) and math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon must be a finite positive number, got {horizon!r}")
    if not (isinstance(mix, (int, float)) and math.isfinite(mix) and mix >= 0):
        raise ValueError(f"mix must be a finite number >= 0, got {mix!r}")
    save_times(1.0, n_save)  # checks n_save
    if sweep_options is not None and not isinstance(sweep_options, dict):
        raise ValueError(f"sweep_options must be a dict or None, got {type(sweep_options).__name__}")
    opts = dict(sweep_options or {})
    clash = {"ts", "t0"} & set(opts)
    if clash:
        raise ValueError(f"sweep_options may not set {sorted(clash)} (regime_map sets the times)")
    start = time.perf_counter()
    out = RegimeMap(variant, value, params, dims, n_draws, float(horizon), float(mix), int(seed))
    closed = variant == "softmax" and value == "I"
    for d in dims:
        w = draw_weights(d, n_draws, seed, mix)
        g0 = Gaussian(np.zeros(d), np.eye(d))
        Vs = [_value(w, i, value, d) for i in range(n_draws)]
        if closed:
            f1 = [Softmax(w["Q"][i], w["K"][i], Vs[i], beta=1.0) for i in range(n_draws)]
            Tstar1 = np.array([blowup_time(f, g0) for f in f1])
            out.predicted_rank[d] = np.array([limit_rank(f) if math.isinf(T) else -1
                                              for f, T in zip(f1, Tstar1)])
        for p in params:
            t1 = horizon / p
            fields = [_field(variant, w["Q"][i], w["K"][i], Vs[i], p) for i in range(n_draws)]
            res = sweep(fields, g0, t1, ts=save_times(t1, n_save), **opts)
            regs = [classify(res.member(i)) for i in range(n_draws)]
            out.regimes[(p, d)] = regs
            out.labels[(p, d)] = [regime_label(r) for r in regs]
            out.status[(p, d)] = list(res.status)
            out.t1[(p, d)] = t1
            if closed:
                out.predicted_blowup[(p, d)] = Tstar1 / p  # T* scales as 1 / beta
    out.seconds = time.perf_counter() - start
    return out


def closed_form_agreement(rmap: RegimeMap) -> dict:
    r"""Compare a softmax $V = I$ map with the closed forms, member by member.

    Prediction per draw: `"blowup"` if $T^* \le t_1$; `"beyond horizon"` if $t_1 < T^* < \infty$
    (the run must not be classified `blowup`); otherwise `"collapse"` (`limit_rank` 0) or
    `"rank r"`. A member *agrees* if its label equals the prediction (for `"beyond horizon"`:
    is not `blowup`). `undetermined` members are counted apart, never as agreeing.

    Parameters
    ----------
    rmap : a `RegimeMap` of softmax with $V = I$.

    Returns
    -------
    dict
        `n` (members), `agree`, `undetermined`, `mismatches` (list of `(p, d, draw, label,
        predicted)`), `blowups` / `predicted_blowups` / `beyond_horizon` (counts),
        `blowup_rel_err_max` (largest
        $|t_\text{sweep} / T^* - 1|$ over members classified `blowup`), `blowup_times`
        (list of `(p, d, T*, t_sweep)`).
    """
    if not isinstance(rmap, RegimeMap):
        raise TypeError(f"rmap must be a RegimeMap, got {type(rmap).__name__}")
    if not (rmap.variant == "softmax" and rmap.value == "I"):
        raise ValueError(f"rmap: the closed forms need softmax with V = I, got {rmap.name}")
    n = agree = und = blow = pblow = beyond = 0
    mism, times, errs = [], [], []
    for (p, d), labs in rmap.labels.items():
        t1 = rmap.t1[(p, d)]
        for i, (lab, reg, T) in enumerate(zip(labs, rmap.regimes[(p, d)],
                                              rmap.predicted_blowup[(p, d)])):
            n += 1
            if T <= t1:
                pred = "blowup"
                pblow += 1
            elif math.isfinite(T):
                pred = "beyond horizon"
                beyond += 1
            else:
                r = int(rmap.predicted_rank[d][i])
                pred = "collapse" if r == 0 else f"rank {r}"
            if lab == "blowup":
                blow += 1
                if math.isfinite(T):
                    times.append((p, d, float(T), float(reg.blowup_time)))
                    errs.append(abs(reg.blowup_time / T - 1))
            if lab == "undetermined":
                und += 1
            elif lab == pred or (pred == "beyond horizon" and lab != "blowup"):
                agree += 1
            else:
                mism.append((p, d, i, lab, pred))
    return {"n": n, "agree": agree, "undetermined": und, "mismatches": mism, "blowups": blow,
            "predicted_blowups": pblow, "beyond_horizon": beyond, "blowup_rel_err_max": max(errs) if errs else None,
            "blowup_times": times}


# ------------------------------------------------------------------ the reproduce part
#: The maps of `gaussflow reproduce --only maps`: (variant, value, params).
MAPS = (("softmax", "I", (0.25, 0.5, 1.0, 2.0)), ("softmax", "MtM", (0.25, 0.5, 1.0, 2.0)),
        ("softmax", "random", (0.25, 0.5, 1.0, 2.0)), ("l2", "I", (0.1, 0.3, 1.0, 3.0)),
        ("sinkhorn", "I", (0.25, 0.5, 1.0, 2.0)))


def write_table(maps: Sequence[RegimeMap], path: str) -> str:
    """Write the counts of several maps to one CSV file (a column per label of any map).

    Parameters
    ----------
    maps : sequence of `RegimeMap`.
    path : the CSV file to write.

    Returns
    -------
    str
        `path`.
    """
    rows = [r for m in maps for r in m.rows()]
    labels = sort_labels(lab for m in maps for lab in m.all_labels())
    keys = ["variant", "value", "param", "p", "d", "n", "t1"] + labels
    with open(path, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=keys, restval=0)
        wr.writeheader()
        wr.writerows(rows)
    return path
