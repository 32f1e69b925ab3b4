r"""Real attention weights through depth: the Gaussian closure against the token system.

Every self-attention layer of a BERT-style checkpoint (`gf.load_attention`) acts for one unit of
depth, `gf.Layers([(f0, 1.0), (f1, 1.0), ...])` with `f0, f1, ...` the layers' attention: the
**attention-only residual flow** $\dot x_i = \Gamma_\ell[\mu_t](x_i)$ for $t \in [\ell, \ell + 1)$.
Two computations share the weights:

- the **closure**: `gf.solve` of the schedule from a Gaussian $N(\alpha_0, \Sigma_0)$ (exact for
  multi-head softmax: the flow keeps Gaussians Gaussian);
- the **particles**: `gf.particles.simulate` of $N$ tokens drawn from the same Gaussian.

The closure starts from the tokens' own empirical mean and covariance, so the difference between
the two is the finite-$N$ error of the mean-field limit alone (no initial sampling error). It grows
with the token scale $s$ of $N(0, s^2 I)$: the scores $\beta \langle Q_h x, K_h y\rangle$ grow
like $s^2$, the softmax concentrates on few keys, and $N$ tokens no longer sample the key measure
well. `attention_through_depth` measures per layer and initial cloud the relative covariance
error, the anisotropy of both (effective rank, top normalised eigenvalues, alignment of their top
eigenvectors) and the mean cosine similarity between tokens.

**Dropped** (as in `gf.load_attention`): layer norms, the feed-forward block (MLP), dropout and
the query bias; the key bias has no effect; the value and output biases are kept as a constant
velocity with `with_bias=True`. This is not the model's forward pass: it is its attention part
alone, stacked through depth.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field as dc_field
from typing import Any

import numpy as np

from . import particles, theory
from .gaussian import Gaussian
from .integrate import solve
from .minilm import checkpoint_file, embedding_gaussian
from .variants import Layers
from .weights import PREFIXES, read_attention

N_TOP = 3  # top normalised eigenvalues reported


def mean_cosine(X: np.ndarray) -> float:
    r"""Mean cosine similarity $\frac{1}{N(N-1)} \sum_{i \ne j} \cos(x_i, x_j)$ of tokens `(N, d)`.

    Parameters
    ----------
    X : np.ndarray
        Tokens, shape `(N, d)` with $N \ge 2$ (zero tokens are skipped).

    Returns
    -------
    float
        The mean cosine, in $[-1, 1]$ (1: all tokens point the same way).
    """
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"X must have shape (N, d) with N >= 2, got {X.shape}")
    nrm = np.linalg.norm(X, axis=1)
    U = X[nrm > 0] / nrm[nrm > 0, None]
    n = U.shape[0]
    s = U.sum(0)
    return float((s @ s - n) / (n * (n - 1)))


def score_spread(field: Any, g: Gaussian) -> np.ndarray:
    r"""Per softmax head, the spread of its scores over the keys: $\sigma_h$.

    $$\sigma_h^2 = \beta_h^2\, \mathbb{E}_{x \sim g} \operatorname{Var}_{y \sim g}
    \langle Q_h x, K_h y\rangle
    = \beta_h^2 \left(\operatorname{tr}(M_h \Sigma) + \alpha^\top M_h \alpha\right)$$

    with $M_h = Q_h^\top K_h \Sigma K_h^\top Q_h$. A query's softmax weights over
    $N$ keys drawn from $g$ are log-normal with log-variance $\sigma_h^2$: their effective sample
    size is about $N e^{-\sigma_h^2}$, so $N$ tokens follow the mean-field limit only while
    $e^{\sigma_h^2} \ll N$.

    Parameters
    ----------
    field : Field
        A `gf.Softmax`, or a sum of fields holding softmax heads (`gf.MultiHead`, plus a
        `gf.Affine` part with `with_bias=True`); other parts are skipped.
    g : Gaussian
        The token distribution $N(\alpha, \Sigma)$.

    Returns
    -------
    np.ndarray
        $\sigma_h$ for each softmax head, in order (empty when there is none).
    """
    out = []
    stack = [field]
    while stack:
        f = stack.pop(0)
        parts = getattr(f, "parts", None)
        if isinstance(parts, tuple):
            stack = list(parts) + stack
        elif getattr(f, "name", "") == "softmax":
            Q, K = np.asarray(f.params["Q"]), np.asarray(f.params["K"])
            beta = float(f.params["beta"])
            S, a = np.asarray(g.cov), np.asarray(g.mean)
            B = K @ S @ K.T
            M = Q.T @ B @ Q
            out.append(abs(beta) * np.sqrt(max(np.trace(M @ S) + a @ M @ a, 0.0)))
    return np.asarray(out)


@dataclass(frozen=True)
class DepthRun:
    r"""One initial cloud through depth: closure and particles, metrics at every saved depth.

    `label`: `"s=0.1"` or `"embeddings"`; `scale`: $s$ of $N(0, s^2 I)$ (the RMS coordinate
    $\sqrt{\operatorname{tr}\Sigma_0 / d}$ for the embedding Gaussian); `ts`: depths (0 first,
    the layer ends at the integers); `metrics`: arrays over `ts` (NaN past a failed run);
    `status`: of the closure and of the particles; `seconds`: wall times (the first run of a
    process includes compilation); `score_std`: per layer, the largest `score_spread` over its
    heads, on the closure's Gaussian as the layer starts; `blowup_depth`: the closure's
    blow-up time $t^*$ (a depth) when its status is `"blowup"`, else `None`.
    """

    label: str
    scale: float
    ts: np.ndarray
    metrics: dict[str, np.ndarray]
    status: dict[str, str]
    seconds: dict[str, float]
    score_std: np.ndarray = dc_field(default_factory=lambda: np.zeros(0))
    blowup_depth: float | None = None

    def at_layers(self, name: str) -> np.ndarray:
        r"""The metric `name` at depths $0, 1, \dots, L$ (input, then after each layer)."""
        return self.metrics[name][np.isclose(self.ts, np.round(self.ts))]

    def max_error(self) -> float:
        """The largest relative covariance error over depth (NaN counts as infinite)."""
        e = self.metrics["cov_error"]
        return float(np.inf if np.any(np.isnan(e)) else np.max(e))


@dataclass(frozen=True)
class DepthReport:
    """What `attention_through_depth` measured: one `DepthRun` per initial cloud.

    `info`: checkpoint file, `d`, heads, layers, `n_tokens`, `with_bias`, tolerances; `dropped`:
    what `read_attention` dropped, per layer.
    """

    runs: list[DepthRun]
    info: dict[str, Any]
    dropped: dict[int, list[str]] = dc_field(default_factory=dict)

    def agreeing(self, tol: float = 0.05) -> list[str]:
        """Labels of the clouds whose relative covariance error stays below `tol` at every depth."""
        return [r.label for r in self.runs if r.max_error() <= tol]

    def table(self) -> str:
        """A Markdown table: one row per cloud and layer (after the layer)."""
        head = ("| cloud | depth | cov err | mean err | eff. rank clo / part | "
                "lambda1 clo / part | align | cos clo / part | score sd next |")
        rows = [head, "|" + "---|" * 9]
        for r in self.runs:
            m = {k: r.at_layers(k) for k in r.metrics}
            for i in range(len(m["cov_error"])):
                rows.append(
                    f"| {r.label} | {i} | {m['cov_error'][i]:.2e} | {m['mean_error'][i]:.2e} | "
                    f"{m['rank_closure'][i]:.1f} / {m['rank_particles'][i]:.1f} | "
                    f"{m['top_closure'][i, 0]:.3f} / {m['top_particles'][i, 0]:.3f} | "
                    f"{m['alignment'][i]:.3f} | "
                    f"{m['cos_closure'][i]:.3f} / {m['cos_particles'][i]:.3f} | "
                    + (f"{r.score_std[i]:.2f} |" if i < len(r.score_std) else "- |"))
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: info, dropped parts, per cloud the metrics at the layer ends."""
        return {"info": self.info, "dropped": {str(k): v for k, v in self.dropped.items()},
                "runs": [{"label": r.label, "scale": r.scale, "status": r.status,
                          "blowup_depth": r.blowup_depth,
                          "seconds": r.seconds, "max_cov_error": r.max_error(),
                          "score_std": r.score_std.tolist(),
                          "layers": {k: r.at_layers(k).tolist() for k in r.metrics}}
                         for r in self.runs]}

    def __str__(self) -> str:
        i = self.info
        return (f"{i['layers']} attention layers of {i['file']} (d = {i['d']}, {i['heads']} heads, "
                f"N = {i['n_tokens']} tokens)\n{self.table()}")


def _count(name, v, lo=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _on_grid(ts, src_ts, *arrays):
    """`arrays` (indexed like `src_ts`) placed on the grid `ts`, NaN where `src_ts` lacks a time."""
    idx = np.searchsorted(ts, src_ts)
    ok = (idx < len(ts)) & np.isclose(ts[np.minimum(idx, len(ts) - 1)], src_ts)
    out = []
    for a in arrays:
        g = np.full((len(ts),) + a.shape[1:], np.nan)
        g[idx[ok]] = a[ok]
        out.append(g)
    return out


def _metrics(ts, mc, Sc, xs, seed):
    """Metrics over `ts` from closure moments `mc`, `Sc` and particles `xs`: each side's own where
    it is finite (tokens go on past a closure blow-up), comparisons where both are; else NaN."""
    n, n_tokens = len(ts), xs.shape[1]
    mp, Sp = (np.asarray(a) for a in particles.empirical_moments(xs))
    okc, okp = (np.all(np.isfinite(S.reshape(n, -1)), 1) for S in (Sc, Sp))
    out = {k: np.full(n, np.nan) for k in ("cov_error", "mean_error", "rank_closure",
                                           "rank_particles", "alignment", "cos_closure",
                                           "cos_particles", "trace_closure", "trace_particles")}
    out["top_closure"] = np.full((n, N_TOP), np.nan)
    out["top_particles"] = np.full((n, N_TOP), np.nan)
    for who, Sw, mw, ok in (("closure", Sc, mc, okc), ("particles", Sp, mp, okp)):
        for j in np.flatnonzero(ok):
            out[f"trace_{who}"][j] = np.trace(Sw[j])
            out[f"rank_{who}"][j] = theory.effective_rank(Sw[j])
            out[f"top_{who}"][j] = theory.normalised_spectrum(Sw[j])[:N_TOP]
            # the closure's tokens: n_tokens draws of N(alpha_t, Sigma_t), one seed for every depth
            out[f"cos_{who}"][j] = mean_cosine(xs[j] if who == "particles" else particles.sample(
                Gaussian(mw[j], Sw[j]), n_tokens, seed=seed + 1))
    for j in np.flatnonzero(okc & okp):
        out["cov_error"][j] = np.linalg.norm(Sc[j] - Sp[j]) / np.linalg.norm(Sp[j])
        out["mean_error"][j] = np.linalg.norm(mc[j] - mp[j]) / np.sqrt(np.trace(Sp[j]))
        out["alignment"][j] = theory.alignment(Sc[j], np.linalg.eigh(Sp[j])[1][:, -1])
    return out


def attention_through_depth(path: str | os.PathLike,
                            scales: tuple[float, ...] | list[float] = (0.05, 0.2, 0.5),
                            n_tokens: int = 1024, with_bias: bool = False,
                            embeddings: bool | None = None, layers: int | None = None,
                            heads: int | None = None, steps_per_layer: int = 4, seed: int = 0,
                            rtol: float = 1e-6, atol: float = 1e-9,
                            log: Callable[[str], Any] | None = None) -> DepthReport:
    r"""The attention-only residual flow through every layer of a checkpoint: closure vs tokens.

    For each initial cloud ($N(0, s^2 I)$ for each $s$ in `scales`, then the embedding Gaussian)
    draws `n_tokens` tokens, simulates them through the `gf.Layers` schedule of the checkpoint's
    attention layers (one unit of depth per layer) and integrates the closure from the tokens'
    empirical moments; the metrics are computed at `steps_per_layer` depths per layer.

    Parameters
    ----------
    path : str or os.PathLike
        A BERT-style checkpoint (a `.safetensors` file or a folder with `model.safetensors` and
        `config.json`), e.g. `minilm_folder()`.
    scales : sequence of float
        The scales $s$ of the isotropic clouds (positive; may be empty when embeddings are used).
    n_tokens : int
        The number of tokens $N$ (at least 2).
    with_bias : bool
        Keep the value and output biases (a constant velocity per layer).
    embeddings : bool, optional
        Add the Gaussian of the input embeddings (`embedding_gaussian`): `None` (default) when the
        checkpoint holds embedding tables, `True` requires them, `False` never.
    layers : int, optional
        Use the first `layers` layers (default: all).
    heads : int, optional
        The number of heads (default: `config.json`).
    steps_per_layer : int
        Saved depths per layer (positive).
    seed : int
        Seed of the tokens.
    rtol, atol : float
        Tolerances of both integrations (positive).
    log : callable, optional
        Called with one progress line per cloud (default: silent).

    Returns
    -------
    DepthReport
        One `DepthRun` per cloud with the metrics over depth; `table()` gives them per layer.

    Raises
    ------
    ValueError
        For a non-positive scale, too few tokens or steps, `layers` beyond the checkpoint, no
        cloud at all, or `embeddings=True` on a checkpoint without embedding tables.
    """
    file = checkpoint_file(path)
    scales = [float(s) for s in np.atleast_1d(np.asarray(scales, dtype=float))]
    if any(not np.isfinite(s) or s <= 0 for s in scales):
        raise ValueError(f"scales must be positive and finite, got {scales}")
    n_tokens = _count("n_tokens", n_tokens, 2)
    steps_per_layer = _count("steps_per_layer", steps_per_layer)
    for name, v in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    if embeddings not in (None, True, False):
        raise ValueError(f"embeddings must be None, True or False, got {embeddings!r}")
    present = read_attention_layers(file)
    if not present:
        raise ValueError(f"{file!r} holds no BERT attention layers (keys "
                         "'encoder.layer.N.attention...'); pass a BERT-style checkpoint")
    first = read_attention(file, layer=present[0], heads=heads, with_bias=with_bias)
    n_layers = len(present) if layers is None else _count("layers", layers)
    if n_layers > len(present):
        raise ValueError(f"layers={n_layers} but {file!r} holds {len(present)} attention layers")
    recs = [read_attention(file, layer=i, heads=heads, with_bias=with_bias)
            for i in present[:n_layers]]
    d = first.info["d"]
    clouds = [(f"s={s:g}", s, Gaussian(np.zeros(d), s**2 * np.eye(d))) for s in scales]
    g_emb = embedding_gaussian(file, seed=seed) if embeddings is not False else None
    if embeddings and g_emb is None:
        raise ValueError(f"embeddings=True but {file!r} holds no embedding tables "
                         "(embeddings.word_embeddings.weight)")
    if g_emb is not None:
        clouds.append(("embeddings", float(np.sqrt(np.trace(g_emb.cov) / d)), g_emb))
    if not clouds:
        raise ValueError("no initial cloud: pass at least one scale, or use a checkpoint with "
                         "embedding tables")
    schedule = Layers([(r.field, 1.0) for r in recs])
    ts = np.arange(1, n_layers * steps_per_layer + 1) / steps_per_layer  # same count per layer
    runs = []
    for label, s, g0 in clouds:
        x0 = particles.sample(g0, n_tokens, seed=seed)
        t = time.perf_counter()
        part = particles.simulate(schedule, x0, ts, rtol=rtol, atol=atol)
        t_part = time.perf_counter() - t
        m0, S0 = (np.asarray(a) for a in particles.empirical_moments(x0))
        t = time.perf_counter()
        clo = solve(schedule, Gaussian(m0, S0), float(ts[-1]), ts=ts, rtol=rtol, atol=atol)
        t_clo = time.perf_counter() - t
        all_ts = np.concatenate([[0.0], ts])
        mc, Sc = _on_grid(all_ts, np.concatenate([[0.0], clo.ts]),
                          np.concatenate([m0[None], clo.means]),
                          np.concatenate([S0[None], clo.covs]))
        (xs,) = _on_grid(all_ts, np.concatenate([[0.0], part.ts]),
                         np.concatenate([np.asarray(x0)[None], part.xs]))
        at = np.isclose(all_ts, np.round(all_ts))
        spread = [float(np.max(score_spread(r.field, Gaussian(m, S)), initial=0.0))
                  if np.all(np.isfinite(S)) else np.nan
                  for r, m, S in zip(recs, mc[at], Sc[at])]
        runs.append(DepthRun(label=label, scale=s, ts=all_ts,
                             metrics=_metrics(all_ts, mc, Sc, xs, seed),
                             score_std=np.asarray(spread),
                             status={"closure": clo.status, "particles": part.status},
                             seconds={"closure": t_clo, "particles": t_part},
                             blowup_depth=None if clo.blowup_time is None
                             else float(clo.blowup_time)))
        if log is not None:
            at = "" if clo.blowup_time is None else f" at depth {float(clo.blowup_time):.4g}"
            log(f"  {label}: closure {clo.status}{at} ({t_clo:.1f} s), {n_tokens} tokens "
                f"{part.status} ({t_part:.1f} s); max covariance error {runs[-1].max_error():.3g}")
    info = {"file": file, "d": d, "heads": first.info["heads"], "layers": n_layers,
            "n_tokens": n_tokens, "with_bias": bool(with_bias), "rtol": rtol, "atol": atol,
            "steps_per_layer": steps_per_layer, "seed": seed}
    return DepthReport(runs=runs, info=info,
                       dropped={r.info["layer"]: r.dropped for r in recs})


def read_attention_layers(path: str | os.PathLike) -> list[int]:
    """The indices of the attention layers a BERT-style checkpoint holds, in order.

    Parameters
    ----------
    path : str or os.PathLike
        A `.safetensors` file or a folder holding `model.safetensors`.

    Returns
    -------
    list of int
        The `N` of the keys `[prefix]encoder.layer.N.attention...` (empty when none).
    """
    from safetensors import safe_open

    with safe_open(checkpoint_file(path), "np") as fh:
        keys = list(fh.keys())
    out = set()
    for k in keys:
        for p in PREFIXES:
            head = p + "encoder.layer."
            if k.startswith(head) and ".attention." in k:
                n = k[len(head):].split(".", 1)[0]
                if n.isdigit():
                    out.add(int(n))
    return sorted(out)
