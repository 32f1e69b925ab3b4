r"""The mean-field limit beyond Gaussians: particle systems of growing $N$ against a large-$N$
reference, from compactly supported (non-Gaussian) initial measures.

For compactly supported initial data, the Transformer PDE is the $N \to \infty$ limit of the
particle system $\dot x_i = \Gamma[\mu^N](x_i)$, for every attention variant. This module measures
it: `mean_field_convergence` simulates clouds of $N$ tokens drawn from an initial measure
(`uniform_ball`, `uniform_sphere`, `gaussian_mixture`, or any `InitialMeasure`) and compares
them, at every saved time, with one reference cloud of $N_{\mathrm{ref}} \gg N$ tokens:

- by the 2-Wasserstein distance `wasserstein2` (POT: the exact optimal transport `ot.emd2`
  while $N N_{\mathrm{ref}} \le$ `EXACT_W2_PAIRS`, the debiased Sinkhorn divergence above);
- by the moment errors $|m_N - m_{\mathrm{ref}}| / (\operatorname{tr} \Sigma_{\mathrm{ref}})^{1/2}$
  and $\|\Sigma_N - \Sigma_{\mathrm{ref}}\|_F / \|\Sigma_{\mathrm{ref}}\|_F$;

and fits the rate $p$ of $W_2 \propto N^{-p}$ at each time (the slope of $\log W_2$ against
$\log N$; its spread over the independent repeats). The empirical measure of $N$ i.i.d. points is
itself at $W_2$-distance about $N^{-1/d}$ from its law for $d \ge 3$ ($N^{-1/2}$ up to a log
factor in $d = 2$), so that is the rate to expect when the dynamics is stable in $W_2$.

It also measures how far the reference cloud is from Gaussian over time ($W_2$ to a sample of
its moment-matched Gaussian, next to the floor: $W_2$ between two such Gaussian samples), and
how good the Gaussian closure is on non-Gaussian data: the closure started from the reference
cloud's initial moments, against the reference cloud's moments.

Causal fields (`gf.Masked`): tokens carry evenly spaced positions $s \in [0, 1)$; distances are
taken on the joint measure of $(s, x)$, and the closure starts from equal blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Callable, Sequence

import numpy as np
import ot

from .._checks import as_array, as_scalar
from ..field import Field
from ..gaussian import Gaussian, PositionalGaussians
from ..integrate import solve
from .dynamics import simulate
from .sampling import check_count, empirical_moments

#: Largest $N N_{\mathrm{ref}}$ for which `wasserstein2` solves the exact transport problem.
EXACT_W2_PAIRS = 2048 * 8192


@dataclass(frozen=True)
class InitialMeasure:
    r"""A probability measure on $\mathbb{R}^d$ to draw token clouds from.

    `draw(n, rng)` returns an `(n, d)` array of independent samples (`rng` a NumPy `Generator`).
    """

    name: str
    dim: int
    draw: Callable[[int, np.random.Generator], np.ndarray]

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """`n` independent samples, shape `(n, d)`, from the seed `seed`."""
        n = check_count("n", n)
        return np.asarray(self.draw(n, np.random.default_rng(seed)), dtype=float)


def uniform_ball(d: int, radius: float = 1.0) -> InitialMeasure:
    r"""The uniform measure on the ball $\{|x| \le r\}$ of $\mathbb{R}^d$ ($r$ = `radius`):
    a direction uniform on the sphere times a radius $r U^{1/d}$, $U$ uniform on $[0, 1]$."""
    d, r = check_count("d", d), float(as_scalar("radius", radius, positive=True))

    def draw(n, rng):
        z = rng.standard_normal((n, d))
        u = rng.uniform(size=(n, 1)) ** (1.0 / d)
        return r * u * z / np.linalg.norm(z, axis=1, keepdims=True)

    return InitialMeasure(f"uniform ball (d = {d}, radius {r:g})", d, draw)


def uniform_sphere(d: int, radius: float = 1.0) -> InitialMeasure:
    r"""The uniform measure on the sphere $\{|x| = r\}$ of $\mathbb{R}^d$ ($r$ = `radius`)."""
    d, r = check_count("d", d), float(as_scalar("radius", radius, positive=True))

    def draw(n, rng):
        z = rng.standard_normal((n, d))
        return r * z / np.linalg.norm(z, axis=1, keepdims=True)

    return InitialMeasure(f"uniform sphere (d = {d}, radius {r:g})", d, draw)


def gaussian_mixture(means: Sequence, scale: float = 0.3,
                     weights: Sequence | None = None) -> InitialMeasure:
    r"""The mixture $\sum_k w_k \mathcal{N}(m_k, s^2 I)$ with the rows of `means` as $m_k$,
    $s$ = `scale` and equal weights unless `weights` is given (positive, normalised here).
    Not compactly supported, but light-tailed: a two-component mixture is the simplest
    bimodal initial measure."""
    M = np.asarray(as_array("means", means, ndim=2), dtype=float)
    s = float(as_scalar("scale", scale, positive=True))
    K, d = M.shape
    w = np.full(K, 1.0 / K) if weights is None else np.asarray(
        as_array("weights", weights, ndim=1, shape=(K,)), dtype=float)
    if np.any(w <= 0):
        raise ValueError("weights must be positive")
    w = w / w.sum()

    def draw(n, rng):
        k = rng.choice(K, size=n, p=w)
        return M[k] + s * rng.standard_normal((n, d))

    return InitialMeasure(f"{K}-component Gaussian mixture (d = {d}, scale {s:g})", d, draw)


def wasserstein2(X: np.ndarray, Y: np.ndarray, method: str = "auto") -> float:
    r"""$W_2$ between the uniform empirical measures of the rows of `X` `(n, d)` and `Y` `(m, d)`.

    Parameters
    ----------
    X, Y : array_like
        Point clouds in the same dimension.
    method : str
        `"exact"` (POT's network simplex, `ot.emd2`, on squared Euclidean costs), `"sinkhorn"`
        (POT's debiased Sinkhorn divergence $S_\varepsilon$ with
        $\varepsilon = 0.01\,\overline{c}$, $\overline{c}$ the total variance of the two
        clouds; $\sqrt{S_\varepsilon}$ is reported, a
        slight underestimate of $W_2$ that keeps the $N$-dependence), or `"auto"` (exact while
        $n m \le$ `EXACT_W2_PAIRS`).

    Returns
    -------
    float
        The distance (not squared).
    """
    X = np.asarray(as_array("X", X, ndim=2), dtype=float)
    Y = np.asarray(as_array("Y", Y, ndim=2), dtype=float)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X and Y must have the same dimension, got {X.shape[1]} and {Y.shape[1]}")
    if method not in ("auto", "exact", "sinkhorn"):
        raise ValueError(f"method must be 'auto', 'exact' or 'sinkhorn', got {method!r}")
    n, m = len(X), len(Y)
    if method == "exact" or (method == "auto" and n * m <= EXACT_W2_PAIRS):
        C = ot.dist(X, Y, metric="sqeuclidean")
        cost = ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), C, numItermax=10_000_000)
        return float(np.sqrt(max(cost, 0.0)))
    scale = float(np.mean(np.sum((X - X.mean(0)) ** 2, axis=1)) + np.mean(
        np.sum((Y - Y.mean(0)) ** 2, axis=1)))
    S = ot.bregman.empirical_sinkhorn_divergence(X, Y, 0.01 * scale, numIterMax=5000,
                                                 stopThr=1e-9, warn=False)
    return float(np.sqrt(max(float(S), 0.0)))


@dataclass(frozen=True)
class ConvergenceReport:
    r"""What `mean_field_convergence` measured.

    `ts` `(T,)`; `ns` `(n_N,)`; `w2`, `mean_error`, `cov_error` `(n_N, repeats, T)` against the
    reference cloud; `rate`, `rate_spread` `(T,)`: fitted $p$ in $W_2 \propto N^{-p}$ (slope over
    the means of the repeats) and the standard deviation of the slopes fitted repeat by repeat;
    `gaussian_distance`, `gaussian_floor` `(T,)`: $W_2$ of the reference cloud to a sample of its
    moment-matched Gaussian, and between two such samples (the sampling floor);
    `closure_mean_error`, `closure_cov_error` `(T,)`: the Gaussian closure started from the
    reference cloud's initial moments against the reference cloud's moments (relative, as
    above; `nan` after the closure stops); `closure_status` its solve status.
    """

    field_name: str
    measure: str
    ts: np.ndarray
    ns: np.ndarray
    n_ref: int
    w2: np.ndarray
    mean_error: np.ndarray
    cov_error: np.ndarray
    rate: np.ndarray
    rate_spread: np.ndarray
    gaussian_distance: np.ndarray
    gaussian_floor: np.ndarray
    closure_mean_error: np.ndarray
    closure_cov_error: np.ndarray
    closure_status: str
    info: dict = dc_field(default_factory=dict, repr=False)

    def table(self) -> str:
        """A plain-text table: one row per time ($W_2$ per $N$, fitted rate, Gaussian checks)."""
        head = (["t"] + [f"W2 N={n}" for n in self.ns] + ["rate", "+-", "W2 to Gauss", "floor",
                                                          "closure cov err"])
        rows = [head]
        for k, t in enumerate(self.ts):
            rows.append([f"{t:.3g}"] + [f"{self.w2[i, :, k].mean():.3g}" for i in
                                        range(len(self.ns))]
                        + [f"{self.rate[k]:.2f}", f"{self.rate_spread[k]:.2f}",
                           f"{self.gaussian_distance[k]:.3g}", f"{self.gaussian_floor[k]:.3g}",
                           f"{self.closure_cov_error[k]:.3g}"])
        widths = [max(len(r[j]) for r in rows) for j in range(len(head))]
        return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def fit_rate(ns: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    r"""Fit $v \propto N^{-p}$: returns `(p, spread)`.

    `values` `(n_N, repeats)`: $p$ is minus the least-squares slope of $\log \bar v$ (mean over
    repeats) against $\log N$; `spread` the standard deviation of the slopes fitted to each
    repeat separately (0 for one repeat)."""
    ns = np.asarray(ns, dtype=float)
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or len(v) != len(ns) or len(ns) < 2:
        raise ValueError("values must have shape (len(ns), repeats) with at least two N")
    if np.any(v <= 0) or not np.all(np.isfinite(v)):
        return float("nan"), float("nan")
    x = np.log(ns)
    p = -np.polyfit(x, np.log(v.mean(axis=1)), 1)[0]
    slopes = [-np.polyfit(x, np.log(v[:, r]), 1)[0] for r in range(v.shape[1])]
    return float(p), float(np.std(slopes, ddof=1)) if len(slopes) > 1 else 0.0


def _features(xs, positions):
    """Points of the measure compared: $x$, or $(s, x)$ for causal fields."""
    return xs if positions is None else np.concatenate([positions[:, None], xs], axis=1)


def _moment_errors(m, S, m_ref, S_ref):
    scale = np.sqrt(max(np.trace(S_ref), 1e-300))
    return (float(np.linalg.norm(m - m_ref) / scale),
            float(np.linalg.norm(S - S_ref) / max(np.linalg.norm(S_ref), 1e-300)))


def mean_field_convergence(field: Field, measure: InitialMeasure, ns: Sequence[int], t1: float, *,
                           n_ref: int = 4096, n_times: int = 5, repeats: int = 3, seed: int = 0,
                           method: str = "auto", **simulate_options: object) -> ConvergenceReport:
    r"""Particle systems of growing $N$ against a large-$N$ reference (see the module docstring).

    Parameters
    ----------
    field : Field
        Any gaussflow field with a particle system (softmax, multi-head, L2, Sinkhorn, sigmoid,
        `gf.Masked`, ...).
    measure : InitialMeasure
        The initial measure (e.g. `uniform_ball(d)`); its dimension must be the field's.
    ns : sequence of int
        The cloud sizes compared (at least two, each below `n_ref`).
    t1 : float
        Final time; `n_times` equally spaced save times in $[0, t_1]$.
    n_ref : int
        Size of the reference cloud.
    repeats : int
        Independent clouds per size (for the spread of the fitted rates).
    seed : int
        Seeds `seed`, `seed + 1`, ... draw the clouds; the reference uses its own.
    method : str
        How `wasserstein2` computes distances.
    **simulate_options
        Passed to `gf.particles.simulate` (`rtol`, `block`, `sinkhorn_tol`, ...).

    Returns
    -------
    ConvergenceReport
    """
    if getattr(field, "dim", None) != measure.dim:
        raise ValueError(f"measure has dimension {measure.dim} but the field acts on dimension "
                         f"{getattr(field, 'dim', None)}")
    ns = np.asarray([check_count("ns", n) for n in ns], dtype=int)
    n_ref = check_count("n_ref", n_ref)
    if len(ns) < 2 or np.any(np.diff(ns) <= 0) or ns[-1] >= n_ref:
        raise ValueError(f"ns must hold at least two increasing sizes below n_ref = {n_ref}, "
                         f"got {ns.tolist()}")
    t1 = float(as_scalar("t1", t1, positive=True))
    n_times, repeats = check_count("n_times", n_times), check_count("repeats", repeats)
    ts = np.linspace(0.0, t1, max(n_times, 2))
    causal = bool(getattr(field, "causal", False))

    def run(x0):
        pos = (np.arange(len(x0)) + 0.5) / len(x0) if causal else None
        tr = simulate(field, x0, ts, positions=pos, **simulate_options)
        if tr.status != "completed":
            raise RuntimeError(f"the particle system of N = {len(x0)} stopped with status "
                               f"{tr.status!r} at t = {tr.t_stop:.4g}; shorten t1")
        return tr.xs, pos

    ref_xs, ref_pos = run(measure.sample(n_ref, seed=10_000 + seed))
    T = len(ts)
    w2 = np.zeros((len(ns), repeats, T))
    merr, cerr = np.zeros_like(w2), np.zeros_like(w2)
    m_ref, S_ref = (np.asarray(a) for a in empirical_moments(ref_xs))
    for i, n in enumerate(ns):
        for r in range(repeats):
            xs, pos = run(measure.sample(int(n), seed=seed + 1 + r + 97 * i))
            m, S = (np.asarray(a) for a in empirical_moments(xs))
            for k in range(T):
                w2[i, r, k] = wasserstein2(_features(xs[k], pos), _features(ref_xs[k], ref_pos),
                                           method)
                merr[i, r, k], cerr[i, r, k] = _moment_errors(m[k], S[k], m_ref[k], S_ref[k])
    fits = [fit_rate(ns, w2[:, :, k]) for k in range(T)]

    rng = np.random.default_rng(20_000 + seed)
    gdist, gfloor = np.zeros(T), np.zeros(T)
    for k in range(T):
        L = np.linalg.cholesky(S_ref[k] + 1e-12 * np.trace(S_ref[k]) * np.eye(measure.dim))
        draws = [m_ref[k] + rng.standard_normal((n_ref, measure.dim)) @ L.T for _ in range(2)]
        gdist[k] = wasserstein2(ref_xs[k], draws[0], method)
        gfloor[k] = wasserstein2(draws[1], draws[0], method)

    g0 = Gaussian(m_ref[0], S_ref[0])
    if causal:
        g0 = PositionalGaussians.repeat(g0, field.n_blocks)
    traj = solve(field, g0, t1, ts=ts)
    cm, cc = np.full(T, np.nan), np.full(T, np.nan)
    for k, t in enumerate(traj.ts[:T]):
        if not np.isclose(t, ts[k]):
            break
        m, S = traj.means[k], traj.covs[k]
        if causal:  # equal-mass blocks: moments of the mixture
            m, S = m.mean(0), S.mean(0) + np.cov(m.T, bias=True).reshape(S.shape[1:])
        cm[k], cc[k] = _moment_errors(m, S, m_ref[k], S_ref[k])
    return ConvergenceReport(
        field_name=getattr(field, "name", type(field).__name__), measure=measure.name, ts=ts,
        ns=ns, n_ref=n_ref, w2=w2, mean_error=merr, cov_error=cerr,
        rate=np.array([f[0] for f in fits]), rate_spread=np.array([f[1] for f in fits]),
        gaussian_distance=gdist, gaussian_floor=gfloor, closure_mean_error=cm,
        closure_cov_error=cc, closure_status=traj.status)
