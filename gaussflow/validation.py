r"""Monte Carlo validation of a closure against its particle system.

Protocol. For each cloud size $N$ and seed: draw $N$ tokens from `g0`, start
the closure from the cloud's *empirical* moments $(m_N(0), S_N(0))$ ($1/N$ normalisation),
integrate the particles (`gaussflow.particles.simulate`) and the closure
(`gaussflow.solve`) over the same save times, and measure at every saved time

- $e_{\mathrm{mean}}(t) = |m_N(t) - \alpha(t)| / \sqrt{\operatorname{tr}\Sigma(t)}$ (mean error
  in units of the spread),
- $e_{\mathrm{cov}}(t) = \|S_N(t) - \Sigma(t)\|_F / \|\Sigma(t)\|_F$,

where $(m_N(t), S_N(t))$ are the empirical moments of the evolved cloud. The reported error is
the maximum over the saved times. Both start at zero, so what they measure is how far the
particle system drifts from the closure. For an exact closure the empirical measure is an exact
(weak) solution of the same PDE, and the Gaussian solution from matched moments differs from it
only through the non-Gaussian fluctuations of the sample, which are $O(N^{-1/2})$: the error
falls like $N^{-1/2}$. A wrong closure leaves an $O(1)$ discrepancy that does not fall. For
an approximate (moment) closure the error tends to the closure's bias.

**Verdict for exact closures** (per quantity; `consistent` when both pass):

- *at solver accuracy*: every error is below `floor` (default `1e-6`): particle and closure
  agree to integration tolerance (affine fields; the mean of Sinkhorn fields, whose particle
  mean obeys the closure's mean ODE exactly). The slope is meaningless there and not tested.
- otherwise: the fitted slope of $\log e$ against $\log N$ (least squares over all seeds)
  must be at most the upper end of `slope_band` (default `[-0.75, -0.25]`; a slope below the
  band, i.e. a faster fall, is noted but is no sign of a wrong closure), **and** the errors must
  stay in the Monte Carlo band: the root mean square over seeds at every $N$ is at most
  `band_factor` (default 2) times the $N^{-1/2}$ line through the smallest $N$
  ($e(N) \le 2\, e(N_{\min}) \sqrt{N_{\min} / N}$): no plateau.

The central estimate per $N$ is the root mean square over seeds ($E[e^2]$ is what scales like
$1/N$; the square mean is far less noisy than a geometric mean of a few seeds). The slope is the
least-squares fit of its logarithm against $\log N$; its standard error is a jackknife over
seeds.

**Inconclusive** (the reasons say which, and what the errors on the times reached would give):
a particle run that did not complete; a closure that stopped before `t1` (e.g. finite-time
blow-up at $T^* < t_1$: finite-$N$ particles have no blow-up, so near $T^*$ the errors measure
neither closure nor Monte Carlo; validate over $t_1 < T^*$); a particle Sinkhorn that did not
reach `sinkhorn_tol` within `sinkhorn_max_iter` iterations (the particle velocity is then not
the Sinkhorn field; this also warns). For approximate closures
the report gives the remaining bias instead of a pass: $b$ from the least-squares fit
$e(N)^2 = b^2 + C^2 / N$ (non-negative), next to the error at the largest $N$.

**Causal (masked) fields.** For a `gaussflow.Masked` field `g0` is a
`gaussflow.PositionalGaussians` with $B$ blocks and $N$ counts tokens *per block*
($B N$ tokens in all). The cloud for `(N, seed)` is
`field.sample(g0, N, seed=seed, method=sampler)` (block $b$: $N$ draws of
$\mathcal N(\mathrm{means}[b], \mathrm{covs}[b])$ at evenly spaced positions in
$[b/B, (b+1)/B)$); the closure starts from the blocks' empirical moments, the causal particle
system (every token acts as a key of the tokens at later positions) is integrated, and the
errors above are measured per block: block $b$'s tokens' empirical moments against
$(\alpha_b(t), \Sigma_b(t))$. The report's `mean`/`cov` errors are the maximum over the
selected `blocks` (default all), so the fit and the verdict are those above; the per-block
curves are in `report.curves[str(N)]["block_mean"]`/`["block_cov"]` (`[seed][time][block]`,
every block).

**Effective keys.** The particle field at query $x_i$ is an importance-weighted average over the
keys; its effective sample size $1 / \sum_j w_{ij}^2$ ($w_{ij}$ the normalised attention weights,
`gaussflow.particles.effective_keys`) is recorded at every saved time:
`report.info["effective_keys"]` holds, per $N$, its minimum and median over the queries
(`[seed][time]`) and a summary (`min`: over queries, times and seeds; `median`: the lowest
median over queries at any saved time and seed), printed under the table. The minimum is that of
the outlying queries (their tilt lies beyond the sample; a few keys there are common and harmless;
under a causal mask the first token sees only itself, so the minimum is 1). When the *median*
falls below `EFFECTIVE_KEYS_WARN = 3` keys, the typical query averages over fewer than three
tokens: the report says that the particle system is far from its mean-field limit there and a
`RuntimeWarning` is raised. The verdict is unchanged (the errors still say whether particles and
closure agree). Fields without normalised attention (affine, unnormalised) have no such
diagnostic.

This module is the driver (sampling, particle and closure runs, error curves); the report, its
statistics and the verdict rules are in `gaussflow.validation_report`.
"""

from __future__ import annotations

import hashlib
import operator
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from ._checks import as_array, as_scalar
from .gaussian import Gaussian, PositionalGaussians
from .integrate import check_field_state, solve
from .progress import PADDED_MAX_N
from .variants.masked import Masked
from . import particles as P, registry
from .validation_report import QUANTITIES, ValidationReport, judge, moment_errors
from .validation_report import QuantityStats  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from jax.typing import ArrayLike

    from .field import Field


def validate(field: Field, g0: Gaussian | PositionalGaussians, t1: float,
             n_particles: Sequence[int] = (256, 1024, 4096),
             seeds: Sequence[int] = (0, 1, 2, 3, 4), ts: ArrayLike | None = None, *,
             rtol: float = 1e-8, atol: float = 1e-10,
             slope_band: tuple[float, float] = (-0.75, -0.25), band_factor: float = 2.0,
             floor: float = 1e-6, batch: str = "auto",
             particle_options: Mapping[str, Any] | None = None,
             particle_field: Field | None = None, sampler: str = "random",
             blocks: Iterable[int] | None = None, progress: bool = False) -> ValidationReport:
    r"""Validate `field`'s Gaussian closure against its particle system (see the module doc).

    Parameters
    ----------
    field : Field
        A gaussflow field.
    g0 : Gaussian or PositionalGaussians
        The `gaussflow.Gaussian` the tokens are drawn from; for a `gaussflow.Masked` field (and
        only then) a `gaussflow.PositionalGaussians` with the field's `n_blocks` blocks (see the
        module doc, *Causal (masked) fields*).
    t1 : float
        Final time (both systems start at $t = 0$).
    n_particles : sequence of int
        Cloud sizes (at least two distinct, each $> d$); for a masked field, tokens *per block*
        (the cloud holds `n_blocks * N` tokens).
    seeds : sequence of int
        Sampling seeds (the cloud for `(N, seed)` uses `fold_in(PRNGKey(seed), N)`; masked:
        `field.sample(g0, N, seed=seed)`).
    ts : array_like, optional
        Save times compared, strictly increasing in $[0, t_1]$ ($t_1$ is appended when
        missing; default 11 equispaced in $[0, t_1]$).
    rtol, atol : float
        Tolerances of both integrations.
    slope_band, band_factor, floor
        The verdict's thresholds (module doc, *Verdict for exact closures*).
    batch : str
        `"padded"` (all clouds padded to the largest $N$, one compiled solve), `"per_n"` (one
        solve per $N$, batched over seeds) or `"auto"` (padded when the largest
        $N \le 2048$, `gaussflow.progress.PADDED_MAX_N`; masked fields: always `"per_n"`, causal positions cannot be padded).
    particle_options : mapping, optional
        Extra keyword arguments of `gaussflow.particles.simulate_batch` (`block`,
        `sinkhorn_tol`, ...).
    particle_field : Field, optional
        The field whose particle system is simulated (default `field`): validates another
        closure of the same particles. The particle runs of the last few calls are kept (keyed
        by the particle field's weights and every setting), so a second closure of the same
        system reuses them.
    sampler : str
        How clouds are drawn from `g0` (`gaussflow.particles.sample` `method`): `"random"`
        (independent draws), `"antithetic"` (mirrored pairs $x$, $2\alpha - x$: the empirical
        mean is exact, so flows that expand the mean do not amplify its sampling error) or
        `"sobol"` (scrambled Sobol points: the same mean-field limit, far less Monte Carlo
        noise; resolves smaller biases at the same $N$).
    blocks : iterable of int, optional
        Masked fields only: the blocks (0-based) whose maximum error the report's
        `mean`/`cov` statistics fit (default `None`: all blocks). Per-block curves of every
        block are kept in `report.curves[str(N)]["block_mean"]`/`["block_cov"]`.
    progress : bool
        One tqdm bar over the whole validation (particle batches and closure solves) with the
        elapsed and the estimated remaining time (`gaussflow.progress.WorkBar`, sized by the
        cost model of `gaussflow.progress`); nothing is printed otherwise.

    Returns
    -------
    ValidationReport

    Raises
    ------
    TypeError, ValueError
        For invalid arguments (e.g. a `gaussflow.PositionalGaussians` with a field that is not
        masked, fewer than two sizes, a size not above $d$, `batch="padded"` for a masked
        field).
    """
    masked = _check_positional(field, g0, "field")
    check_field_state(field, g0)
    t1 = float(as_scalar("t1", t1, positive=True))
    ns = check_sizes(n_particles, g0.dim, "tokens per block in " if masked else "")
    seeds = check_seeds(seeds)
    sel = _check_blocks(blocks, g0.n_blocks if masked else None)
    if ts is None:
        ts = np.linspace(0.0, t1, 11)
    ts = np.asarray(as_array("ts", ts, ndim=1))
    if ts.size == 0 or ts[0] < 0 or ts[-1] > t1 or np.any(np.diff(ts) <= 0):
        raise ValueError(f"ts must be strictly increasing inside [0, t1] = [0, {t1}]")
    if ts[-1] < t1:
        ts = np.append(ts, t1)
    lo, hi = (float(v) for v in slope_band)
    if not lo < hi:
        raise ValueError(f"slope_band must be (low, high) with low < high, got {slope_band!r}")
    band_factor = float(as_scalar("band_factor", band_factor, positive=True))
    floor = float(as_scalar("floor", floor, positive=True))
    if batch not in ("auto", "padded", "per_n"):
        raise ValueError(f"batch must be 'auto', 'padded' or 'per_n', got {batch!r}")
    if masked and batch == "padded":
        raise ValueError("batch='padded' cannot hold causal clouds (positions cannot be padded); "
                         "use batch='per_n' or 'auto' for a gf.Masked field")
    opts = dict(particle_options or {})
    bad = set(opts) & {"t0", "n_valid", "rtol", "atol", "positions", "causal"}
    if bad:
        raise ValueError(f"particle_options may not set {sorted(bad)}; use validate's arguments")
    if sampler not in P.SAMPLERS:
        raise ValueError(f"sampler must be one of {P.SAMPLERS}, got {sampler!r}")
    pfield = field if particle_field is None else particle_field
    if particle_field is not None:
        _check_positional(particle_field, g0, "particle_field")
        check_field_state(particle_field, g0)
    started = time.time()

    if masked:  # causal clouds (B N, d) sorted by position; positions depend on N only
        drawn = {(n, s): field.sample(g0, n, seed=s, method=sampler) for n in ns for s in seeds}
        clouds = {k: np.asarray(v[0]) for k, v in drawn.items()}
        positions = {n: drawn[(n, seeds[0])][1] for n in ns}
    else:
        clouds = {(n, s): P.sample(g0, n, jax.random.fold_in(jax.random.PRNGKey(s), n),
                                   method=sampler)
                  for n in ns for s in seeds}
    padded = not masked and (batch == "padded" or (batch == "auto" and max(ns) <= PADDED_MAX_N))
    bar = _work_bar(pfield, g0.dim, ns, len(seeds), t1, padded, progress)
    key = (_fingerprint(pfield), _fingerprint(g0), tuple(ns), tuple(seeds), ts.tobytes(), rtol,
           atol, padded, masked, sampler, tuple(sorted((k, repr(v)) for k, v in opts.items())))
    parts = _PARTICLE_CACHE.get(key)
    if parts is None:
        if masked:
            parts = _run_causal(pfield, clouds, positions, ns, seeds, ts, rtol, atol, opts, bar)
        else:
            parts = _run_particles(pfield, clouds, ns, seeds, ts, padded, rtol, atol, opts,
                                   g0.dim, bar)
        _PARTICLE_CACHE[key] = parts
        while len(_PARTICLE_CACHE) > _CACHE_SIZE:
            _PARTICLE_CACHE.popitem(last=False)
    else:
        _PARTICLE_CACHE.move_to_end(key)
    t_particles = time.time() - started

    E = {q: np.full((len(ns), len(seeds)), np.nan) for q in QUANTITIES}
    mc = {q: np.zeros((len(ns), len(seeds))) for q in QUANTITIES}
    st_p = [[None] * len(seeds) for _ in ns]
    st_c = [[None] * len(seeds) for _ in ns]
    curves = {}
    info = {"sinkhorn_iterations_max": None}
    stops = []
    # effective keys per query (particle system's weights) at the saved times, per N and seed
    ek_opts = {k: opts[k] for k in ("block", "sinkhorn_tol", "sinkhorn_max_iter") if k in opts}
    keys_min, keys_med = {}, {}
    for i, n in enumerate(ns):
        cm, cc, bm, bc = [], [], [], []
        for j, s in enumerate(bar.each(seeds, bar.closure_share)):
            pt = parts[(n, s)]
            if masked:  # per-block moments: (B, d), (B, d, d); over time (n_t, B, ...)
                nb, d = g0.n_blocks, g0.dim
                m0, S0 = (np.asarray(a) for a in
                          P.empirical_moments(clouds[(n, s)].reshape(nb, n, d)))
                em0, ec0 = moment_errors(m0, S0, np.asarray(g0.means), np.asarray(g0.covs))
                em0, ec0 = em0[sel].max(), ec0[sel].max()
                start = PositionalGaussians(m0, S0)
                mp, Sp = (np.asarray(a) for a in P.empirical_moments(
                    np.asarray(pt.xs).reshape(len(pt.ts), nb, n, d)))
            else:
                m0, S0 = (np.asarray(a) for a in P.empirical_moments(clouds[(n, s)]))
                em0, ec0 = moment_errors(m0, S0, np.asarray(g0.mean), np.asarray(g0.cov))
                start = Gaussian(m0, S0)
                mp, Sp = pt.moments()
            mc["mean"][i, j], mc["cov"][i, j] = em0, ec0
            tr = solve(field, start, t1, ts=ts, rtol=rtol, atol=atol)
            st_p[i][j], st_c[i][j] = pt.status, tr.status
            if tr.status != "completed":
                stops.append({"n": n, "seed": s, "status": tr.status, "t_stop": tr.t_stop,
                              "blowup_time": tr.blowup_time})
            common = [k for k, t in enumerate(pt.ts)
                      if np.any(np.isclose(tr.ts[: len(ts)], t, rtol=0, atol=1e-12 * max(1, t1)))]
            kc = [int(np.argmin(np.abs(tr.ts - pt.ts[k]))) for k in common]
            em, ec = moment_errors(mp[common], Sp[common], tr.means[kc], tr.covs[kc])
            if masked:  # (n_t, B): keep every block, report the max over the selected ones
                bm.append(em.tolist())
                bc.append(ec.tolist())
                em, ec = em[:, sel].max(axis=1), ec[:, sel].max(axis=1)
            if len(common):
                E["mean"][i, j], E["cov"][i, j] = em.max(), ec.max()
            cm.append(em)
            cc.append(ec)
            ek = (P.effective_keys_path(pfield.field if masked else pfield, pt.ts, pt.xs,
                                        positions=positions[n] if masked else None, **ek_opts)
                  if len(pt.ts) else None)
            if ek is not None:  # rows of layers without normalised attention are NaN
                keys_min.setdefault(str(n), []).append(ek.min(axis=1).tolist())
                keys_med.setdefault(str(n), []).append(np.median(ek, axis=1).tolist())
            its = pt.info.get("sinkhorn_iterations")
            if its:
                prev = info["sinkhorn_iterations_max"] or 0
                info["sinkhorn_iterations_max"] = max(prev, max(its))
                info["sinkhorn_converged"] = (info.get("sinkhorn_converged", True)
                                              and pt.info["sinkhorn_converged"])
                info["sinkhorn_marginal_error_max"] = max(
                    info.get("sinkhorn_marginal_error_max", 0.0),
                    max(pt.info["sinkhorn_marginal_error"]))
        curves[str(n)] = {"ts": ts[: min(len(c) for c in cm)].tolist(),  # common to all seeds
                          "mean": [c.tolist() for c in cm], "cov": [c.tolist() for c in cc]}
        if masked:
            curves[str(n)].update(block_mean=bm, block_cov=bc)
    bar.close()
    info["seconds"] = time.time() - started
    info["particle_steps"] = [[parts[(n, s)].num_steps for s in seeds] for n in ns]
    if masked:
        info.update(n_blocks=g0.n_blocks, blocks=list(sel), n_particles_per="block")
    info["seconds_particles"] = t_particles
    info["batching"] = "padded" if padded else "per_n"
    info["sampler"] = sampler
    summary = {k: {"min": _finite_min(keys_min[k]), "median": _finite_min(keys_med[k])}
               for k in keys_min}
    summary = {k: v for k, v in summary.items() if v["min"] is not None}
    if summary:
        info["effective_keys"] = {"threshold": P.EFFECTIVE_KEYS_WARN, "min": keys_min,
                                  "median": keys_med, "summary": summary}
    exact = bool(field.exact)
    info["closure_stops"] = stops
    stats, verdict, reasons = judge(ns, seeds, E, {"particles": st_p, "closure": st_c}, stops,
                                    info, curves, exact, (lo, hi), band_factor, floor, t1)
    return ValidationReport(
        field_name=getattr(field, "name", type(field).__name__), exact=exact, d=g0.dim, t1=t1,
        ts=ts.tolist(), n_particles=list(ns), seeds=list(seeds), mean=stats["mean"],
        cov=stats["cov"], mc_mean=mc["mean"].tolist(), mc_cov=mc["cov"].tolist(),
        verdict=verdict, reasons=reasons, slope_band=(lo, hi), band_factor=band_factor,
        floor=floor, statuses={"particles": st_p, "closure": st_c}, curves=curves, info=info)


def _finite_min(rows):
    """Smallest finite value of a ragged list of lists (`None` when there is none)."""
    vals = [v for row in rows for v in row if np.isfinite(v)]
    return float(min(vals)) if vals else None


_PARTICLE_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 4


def _fingerprint(tree) -> tuple:
    """Type, structure and array contents of a pytree (a cache key)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    digest = hashlib.sha1()
    for leaf in leaves:
        a = np.asarray(leaf)
        digest.update(str((a.dtype, a.shape)).encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return (type(tree).__qualname__, str(treedef), digest.hexdigest())


def _work_bar(pfield, d, ns, n_seeds, t1, padded, progress):
    """The one bar over the whole `validate` (`gaussflow.progress.WorkBar`), its stages sized by
    the cost model: one per particle batch, one per closure solve."""
    from .progress import OVERHEAD_SECONDS, WorkBar, validate_seconds

    total, batches = validate_seconds(pfield, d, ns, n_seeds, t1, padded=padded)
    compile_s = OVERHEAD_SECONDS / 3  # the particle solve's compilation, in the first batch
    batches[0] += compile_s
    closure = (total - sum(batches)) / (len(ns) * n_seeds)
    bar = WorkBar(total, f"validate {getattr(pfield, 'name', '')}".strip(), enabled=progress)
    bar.batches, bar.closure_share = batches, closure
    return bar


def _run_particles(field, clouds, ns, seeds, ts, padded, rtol, atol, opts, d, bar):
    """Simulate every cloud: one padded batch, or one batch over seeds per N."""
    groups = [list(clouds)] if padded else [[(n, s) for s in seeds] for n in ns]
    parts = {}
    for keys in bar.each(groups, bar.batches):
        nmax = max(k[0] for k in keys)
        x0s = np.zeros((len(keys), nmax, d))
        for i, k in enumerate(keys):
            x0s[i, : k[0]] = clouds[k]
        o = dict(opts)
        o.setdefault("block", max(1, P.BLOCK_ELEMENTS // (nmax * len(keys))))
        trajs = P.simulate_batch(field, x0s, ts, n_valid=[k[0] for k in keys], rtol=rtol,
                                 atol=atol, **o)
        parts.update(zip(keys, trajs))
    return parts


def _run_causal(field, clouds, positions, ns, seeds, ts, rtol, atol, opts, bar):
    """Simulate the causal clouds: one batch over seeds per block size (shared positions)."""
    parts = {}
    for n in bar.each(ns, bar.batches):
        keys = [(n, s) for s in seeds]
        trajs = P.simulate_batch(field, np.stack([clouds[k] for k in keys]), ts,
                                 positions=positions[n], rtol=rtol, atol=atol, **opts)
        parts.update(zip(keys, trajs))
    return parts


def _check_positional(field, g0, argname):
    """True for a masked field with a positional state; `TypeError` for a mismatched pair."""
    positional = isinstance(g0, PositionalGaussians)
    if positional and not isinstance(field, Masked):
        raise TypeError(f"g0 is a gf.PositionalGaussians (one Gaussian per position block), which "
                        f"only a causal field evolves, but {argname} is "
                        f"{getattr(field, 'name', type(field).__name__)!r}: pass "
                        f"gf.Masked({argname}, n_blocks={g0.n_blocks}), or a gf.Gaussian g0")
    if isinstance(field, Masked) and not positional:
        raise TypeError(f"{argname} is a gf.Masked field, so g0 must be a gf.PositionalGaussians "
                        f"with {field.n_blocks} blocks, got {type(g0).__name__}; e.g. "
                        f"gf.PositionalGaussians.repeat(g0, {field.n_blocks})")
    return positional


def _check_blocks(blocks, n_blocks):
    """Selected blocks (sorted, distinct) of a masked validation; `None`: all."""
    if n_blocks is None:
        if blocks is not None:
            raise ValueError("blocks selects position blocks of a gf.Masked field; leave it None "
                             "for a field on a gf.Gaussian")
        return None
    if blocks is None:
        return list(range(n_blocks))
    try:
        out = sorted({operator.index(b) for b in blocks})
    except TypeError:
        raise TypeError(f"blocks must be a sequence of block indices, got {blocks!r}") from None
    if not out or out[0] < 0 or out[-1] >= n_blocks:
        raise ValueError(f"blocks must be a non-empty set of indices in [0, {n_blocks}), got "
                         f"{blocks!r}; e.g. blocks=range(1, {n_blocks})")
    return out


def _int_list(name, values):
    """`values` as a list of Python ints (`TypeError` for strings, floats, bools, ...)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of integers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must hold integers, got {v!r} in {values!r}")
        out.append(int(v))
    return out


def check_sizes(n_particles: Iterable[int], d: int, what: str = "") -> list[int]:
    """Sorted distinct cloud sizes (at least two, each $> d$), or `ValueError` / `TypeError`.

    `what` prefixes `n_particles` in the message (e.g. `"tokens per block in "`).
    """
    ns = sorted(set(_int_list("n_particles", n_particles)))
    if len(ns) < 2:
        raise ValueError("n_particles needs at least two distinct sizes to fit a slope, e.g. "
                         "(256, 1024, 4096)")
    if ns[0] <= d:
        raise ValueError(f"every size ({what}n_particles) must exceed d = {d} (empirical "
                         f"covariances), got {ns[0]}")
    return ns


def check_seeds(seeds: Iterable[int]) -> list[int]:
    """`seeds` as distinct non-negative ints below `2**32`, or `ValueError` / `TypeError`."""
    out = _int_list("seeds", seeds)
    if not out or len(set(out)) != len(out) or any(s < 0 for s in out):
        raise ValueError(f"seeds must be distinct non-negative integers, got {seeds!r}")
    if max(out) >= P.SEED_LIMIT:
        raise ValueError(f"seeds must be ints in [0, 2**32) (JAX PRNG seeds), got {max(out)}")
    return out


# ---------------------------------------------------------------------- example problems
def example(name: str, d: int = 3, seed: int = 0) -> tuple[Field, Gaussian, float]:
    r"""A moderate validation problem for the variant `name`: `(field, g0, t1)`.

    Read from the variant's own declaration (`cls.example(d, seed)`, e.g.
    `gaussflow.Attention.example`): random weights from `seed` with moderate, mostly
    contracting scores. Moderate scores matter for the particles: a token at $x$ weighs keys by
    $\exp(\beta \langle Qx, Ky \rangle)$, an importance weight whose variance grows like
    $\exp(\beta^2 |\Sigma^{1/2} A^T x|^2)$, so strong scores need many more particles before the
    error reaches its $N^{-1/2}$ regime.

    Raises `ValueError` for a `d` that is not a positive integer or a variant without an
    example (`examples`).
    """
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    if name not in examples():
        raise ValueError(f"no example for variant {name!r}; choose one of {sorted(examples())}")
    return registry.lookup(name).example(int(d), seed)


def examples() -> list[str]:
    """Names of the registered variants with a validation example on a single Gaussian."""
    return [k for k, v in registry.variants().items()
            if callable(getattr(v, "example", None)) and not getattr(v, "causal", False)]
