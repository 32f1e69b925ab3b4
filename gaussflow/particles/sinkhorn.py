r"""Particle Sinkhorn: the self-coupling of a weighted cloud, plain or causal (per prefix).

**Iteration.** For the cloud $\mu = \sum_i a_i \delta_{x_i}$ and log-weights $\log w_{ij}$ (the
declared score, `gaussflow.particles.kernels.Scores`), the coupling
$\pi_{ij} = \exp(f_i + g_j + \log w_{ij})$ has both marginals $a$ when $f = T(f)$ for the sweep

$$g_j = \log a_j - \mathrm{LSE}_i(f_i + \log w_{ij}), \qquad
T(f)_i = \log a_i - \mathrm{LSE}_j(g_j + \log w_{ij})$$

(two block-wise passes over the $N^2$ pairs, `gaussflow.particles.kernels.col_lse` and
`gaussflow.particles.kernels.row_lse`). Every iterate $f$ is judged by the same rule: the
sweep from $f$ gives $g$ and $T(f)$, and $\mathrm{err} = \max_i |\exp(f_i - T(f)_i) - 1|$ is the
largest relative violation of the row marginal of the coupling $(f, g)$ (its column marginal is
exact). Iterations stop when `err <= sinkhorn_tol` (default `1e-10`) or after
`sinkhorn_max_iter` sweeps (default 1000); the returned key potential is that $g$, and
$\Gamma(x_i) = \sum_j \mathrm{softmax}_j(\log w_{ij} + g_j)\, v_j$.

- `sinkhorn_anderson = 0`: plain Sinkhorn, $f \leftarrow T(f)$ from $f = \log a$ (linear
  convergence; the rate worsens as the coupling concentrates, e.g. 84 sweeps at $t = 0$ and
  598 at $t = 1$ on the benchmark problem of `benchmarks/sinkhorn_speed.py`).
- `sinkhorn_anderson = m` (default 10): Anderson acceleration (type II) of the fixed point
  $f = T(f)$: with the last $m$ iterates' residuals $r_k = T(f_k) - f_k$, the next iterate is
  $\sum_k \theta_k T(f_k)$ with
  $\theta = \arg\min \{\|\sum_k \theta_k r_k\| : \sum_k \theta_k = 1\}$
  (an $m \times m$ Gram system, Tikhonov-regularised by `ANDERSON_REG` times its largest
  diagonal entry; $O(m N)$ extra memory and flops, negligible against a sweep). Safeguard: an
  iterate whose `err` exceeds `ANDERSON_REJECT` times the last accepted one is discarded,
  the history is cleared and the next iterate is the plain sweep $T(f)$ of the last accepted
  iterate (always accepted). The stopping rule and the returned potential are the plain
  iteration's, so both converge to the same tolerance (tested); only the path differs.

**Causal (prefix) Sinkhorn.** With positions $s$, token $i$ moves under the Sinkhorn field of
its prefix $\{j : s_j \le s_i\}$ (masses $a_j$ renormalised over the prefix): the self-coupling of
that prefix cloud gives key potentials $g^{(i)}$ and
$\Gamma(x_i) = \sum_{s_j \le s_i} \mathrm{softmax}_j(\log w_{ij} + g^{(i)}_j)\, v_j$. Tokens at
equal positions share one prefix and one coupling: `prefix_sinkhorn` solves one coupling per
distinct position (`Context.n_prefixes`, a static bound set from the concrete positions by
`gaussflow.particles.simulate`; `None`: one per token), $b$ prefixes at a time
(vmapped; $b$ = `max(1, min(L, BLOCK_ELEMENTS // (N * block)))` for $L$ prefixes, so the
batch holds about as many score elements as one block pass), each on the full cloud with the
keys outside the prefix at weight zero. **Cost:** $L$ prefixes times a full Sinkhorn,
$O(L N^2 d)$ flops per sweep ($O(N^3 d)$ when every token has its own position, about three
times the work actually needed, since prefix $k$ has $k$ tokens), and $b \times N \times d$
velocities in memory.
Measured ($d = 2$, 13 sweeps, distinct positions, 2 shared CPU cores): one evaluation in 0.06 s
at $N = 96$ and 4.4 s at $N = 256$; keep $N$ to a few hundred (grouping tokens at block
positions cuts $L$ to $B$).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from .kernels import BLOCK_ELEMENTS, Context, Scores, add_bias, col_lse, row_lse, row_pass

#: Tikhonov regularisation of the Anderson Gram system, relative to its largest diagonal entry.
ANDERSON_REG = 1e-10
#: An Anderson iterate whose marginal error exceeds this factor times the last accepted one is
#: rejected (history cleared, plain sweep from the last accepted iterate instead).
ANDERSON_REJECT = 10.0


def sinkhorn_sweep(sc: Scores, log_a: jax.Array, f: jax.Array,
                   ctx: Context) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""One Sinkhorn sweep from the row potential `f` (see the module docstring).

    Parameters
    ----------
    sc : Scores
        The score blocks of the cloud.
    log_a : jax.Array
        `(N,)` log-masses (`-inf`: excluded; those entries stay `-inf`).
    f : jax.Array
        `(N,)` row potential.
    ctx : Context
        Evaluation context.

    Returns
    -------
    tuple of jax.Array
        `(g, T(f), err)`: the key potential, the swept row potential and the row marginal error
        $\max_i |e^{f_i - T(f)_i} - 1|$ of the coupling $(f, g)$ over the included entries.
    """
    g = log_a - col_lse(sc, f, ctx)
    tf = log_a - row_lse(sc, add_bias(g, sc.key_const), ctx)
    dev = jnp.where(jnp.isfinite(tf), jnp.expm1(f - tf), 0.0)
    return g, tf, jnp.max(jnp.abs(dev))


def _plain(sc, log_a, ctx):
    def cond(st):
        it, f, g, err = st
        return (err > ctx.sinkhorn_tol) & (it < ctx.sinkhorn_max_iter)

    def body(st):
        it, f, _, _ = st
        g, tf, err = sinkhorn_sweep(sc, log_a, f, ctx)
        return it + 1, tf, g, err

    init = (jnp.asarray(0), log_a, jnp.zeros_like(log_a), jnp.asarray(jnp.inf))
    it, f, g, err = jax.lax.while_loop(cond, body, init)
    return g, it, err


def anderson_mix(R: jax.Array, G: jax.Array, valid: jax.Array,
                 live: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Type-II Anderson extrapolation $\sum_k \theta_k G_k$, $\theta$ minimising
    $\|\sum_k \theta_k R_k\|$ under $\sum_k \theta_k = 1$ over the `valid` history rows.

    Parameters
    ----------
    R, G : jax.Array
        `(m, N)` histories of residuals $T(f_k) - f_k$ and map values $T(f_k)$.
    valid : jax.Array
        `(m,)` booleans: which rows hold an iterate.
    live : jax.Array
        `(N,)` booleans: which entries are included (the others are returned as `-inf`).

    Returns
    -------
    tuple of jax.Array
        `(f_next, ok)`: the extrapolated iterate and whether the weights were finite.
    """
    v = valid.astype(R.dtype)
    gram = (R @ R.T) * v[:, None] * v[None, :]
    scale = jnp.maximum(jnp.max(jnp.diag(gram)), jnp.finfo(R.dtype).tiny)
    gram = gram + jnp.diag(jnp.where(valid, ANDERSON_REG * scale, 1.0))
    z = jnp.linalg.solve(gram, v)
    theta = z / jnp.sum(z)
    return jnp.where(live, theta @ G, -jnp.inf), jnp.all(jnp.isfinite(theta))


def _anderson(sc, log_a, ctx):
    m = ctx.sinkhorn_anderson
    live = jnp.isfinite(log_a)
    n = log_a.shape[0]

    def cond(st):
        return (st[3] > ctx.sinkhorn_tol) & (st[0] < ctx.sinkhorn_max_iter)

    def body(st):
        it, f, g_acc, err_acc, fallback, force, R, G, valid, slot = st
        g, tf, err = sinkhorn_sweep(sc, log_a, f, ctx)
        ok = force | (err <= ANDERSON_REJECT * err_acc)
        R1 = R.at[slot].set(jnp.where(live, tf - f, 0.0))
        G1 = G.at[slot].set(jnp.where(live, tf, 0.0))
        valid1 = valid.at[slot].set(True)
        f_mix, finite = anderson_mix(R1, G1, valid1, live)
        f_next = jnp.where(ok, jnp.where(finite, f_mix, tf), fallback)
        keep = lambda a, b: jnp.where(ok, a, b)  # noqa: E731
        return (it + 1, f_next, keep(g, g_acc), keep(err, err_acc), keep(tf, fallback), ~ok,
                keep(R1, 0.0), keep(G1, 0.0), keep(valid1, False), keep((slot + 1) % m, 0))

    z = jnp.zeros((m, n))
    init = (jnp.asarray(0), log_a, jnp.zeros_like(log_a), jnp.asarray(jnp.inf), log_a,
            jnp.asarray(False), z, z, jnp.zeros((m,), bool), jnp.asarray(0))
    st = jax.lax.while_loop(cond, body, init)
    return st[2], st[0], st[3]


def sinkhorn_potentials(sc: Scores, log_a: jax.Array,
                        ctx: Context) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Log-domain Sinkhorn for the self-coupling of the weighted cloud $\sum_i a_i \delta_{x_i}$
    (`log_a` `(N,)`, `-inf` entries excluded), Anderson-accelerated unless
    `ctx.sinkhorn_anderson == 0` (module docstring).

    Parameters
    ----------
    sc : Scores
        The score blocks of the cloud.
    log_a : jax.Array
        `(N,)` log-masses, summing to one over the finite entries.
    ctx : Context
        Evaluation context (stopping rule `sinkhorn_tol`, `sinkhorn_max_iter`; Anderson memory
        `sinkhorn_anderson`).

    Returns
    -------
    tuple of jax.Array
        `(g, n_iter, err)`: the key potential ($\mathrm{softmax}_j(\log w_{ij} + g_j)$ is the
        row-conditional of the coupling), the number of sweeps and the final marginal error `err`
        (converged when `err <= ctx.sinkhorn_tol`).
    """
    if ctx.sinkhorn_anderson:
        return _anderson(sc, log_a, ctx)
    return _plain(sc, log_a, ctx)


def uniform_or(log_a: jax.Array | None, n: int) -> jax.Array:
    r"""The log-masses `log_a`, or the uniform ones $-\log n$ when `None`.

    Parameters
    ----------
    log_a : jax.Array or None
        `(n,)` log-masses or `None`.
    n : int
        Number of particles.

    Returns
    -------
    jax.Array
        `(n,)` log-masses.
    """
    return jnp.full((n,), -math.log(n)) if log_a is None else log_a


def sinkhorn_velocity(sc: Scores, log_a: jax.Array | None, ctx: Context) -> jax.Array:
    r"""$\Gamma(x_i) = \sum_j \mathrm{softmax}_j(\log w_{ij} + g_j)\, v_j$ for the Sinkhorn key
    potential $g$ of the whole cloud.

    Parameters
    ----------
    sc : Scores
        The score blocks of the cloud.
    log_a : jax.Array or None
        `(N,)` log-masses, or `None` for uniform masses.
    ctx : Context
        Evaluation context.

    Returns
    -------
    jax.Array
        `(N, d)` velocities.
    """
    g, _, _ = sinkhorn_potentials(sc, uniform_or(log_a, sc.q.shape[0]), ctx)
    _, l, acc = row_pass(sc, add_bias(g, sc.key_const), None, ctx)
    return acc / l[:, None]


def prefix_sinkhorn(sc: Scores, positions: jax.Array, log_a: jax.Array | None,
                    ctx: Context) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Causal Sinkhorn: every token's velocity under the Sinkhorn field of its prefix
    `{j : positions[j] <= positions[i]}` (module docstring).

    Parameters
    ----------
    sc : Scores
        The score blocks of the cloud.
    positions : jax.Array
        `(N,)` token positions.
    log_a : jax.Array or None
        `(N,)` log-masses or `None` (uniform); renormalised over each prefix.
    ctx : Context
        Evaluation context; `ctx.n_prefixes` bounds the number of distinct positions.

    Returns
    -------
    tuple of jax.Array
        `(v, n_iter, err)`: velocities `(N, d)` (NaN rows if `ctx.n_prefixes` is below the true
        number of distinct positions), and the largest sweep count and marginal error over
        prefixes.
    """
    n = positions.shape[0]
    la = uniform_or(log_a, n)
    n_lev = n if ctx.n_prefixes is None else max(1, min(int(ctx.n_prefixes), n))
    levels = jnp.unique(positions, size=n_lev, fill_value=jnp.max(positions))
    idx = jnp.searchsorted(levels, positions)
    b = max(1, min(n_lev, BLOCK_ELEMENTS // (n * ctx.block_size(n))))
    n_chunks = -(-n_lev // b)
    pad = n_chunks * b - n_lev
    lev_ids = jnp.concatenate([jnp.arange(n_lev), jnp.full((pad,), n_lev - 1)]).reshape(n_chunks, b)

    def solve(k):
        lp = jnp.where(positions <= levels[k], la, -jnp.inf)
        g, it, err = sinkhorn_potentials(sc, lp - logsumexp(lp), ctx)
        _, l, acc = row_pass(sc, add_bias(g, sc.key_const), None, ctx)
        return acc / l[:, None], it, err

    def body(carry, ks):
        v, it_max, err_max = carry
        vel, it, err = jax.vmap(solve)(ks)
        sel = idx[:, None] == ks[None, :]  # (N, b): query i's prefix is in this chunk
        mine = vel[jnp.argmax(sel, axis=1), jnp.arange(n)]
        v = jnp.where(jnp.any(sel, axis=1)[:, None], mine, v)
        return (v, jnp.maximum(it_max, jnp.max(it)), jnp.maximum(err_max, jnp.max(err))), None

    init = (jnp.full((n, sc.values.shape[1]), jnp.nan), jnp.asarray(0), jnp.asarray(0.0))
    (v, it, err), _ = jax.lax.scan(body, init, lev_ids)
    v = jnp.where((levels[idx] == positions)[:, None], v, jnp.nan)
    return v, it, err


__all__ = ["sinkhorn_potentials", "sinkhorn_sweep", "sinkhorn_velocity", "prefix_sinkhorn",
           "anderson_mix", "uniform_or", "ANDERSON_REG", "ANDERSON_REJECT"]
