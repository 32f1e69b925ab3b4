"""The interacting particle system behind every closure.

``N`` tokens ``x_1, ..., x_N`` in ``R^d`` move by ``dx_i/dt = Gamma[mu^N](x_i)`` where
``mu^N = (1/N) sum_j delta_{x_j}`` is their empirical measure; the Gaussian closures are the
``N -> infinity`` limit of this system started from Gaussian samples (see :mod:`gaussflow.validate`).

**Same declarations as the closures.** An attention class declares its log-weight
``log k(x, y)`` (classmethod ``log_kernel()``, a SymPy ``(1, 1)`` expression in the column
vectors ``x`` (query) and ``y`` (key)), its ``normalisation`` and its value map (``W_O V`` unless
the class has a classmethod ``value_map()``). From the declaration we generate, once per class,
JAX code for the pieces of the canonical form
``log k = c0(x) + (H x + h0)^T y - 1/2 y^T P y`` (read off by the same rules the closures use),
so a block of scores is ``c0(X)[:, None] + (X H^T + h0^T) Y^T - 1/2 rowsum((Y P) * Y)[None, :]``;
no score formula is written twice. Kernels that are not quadratic in ``y`` fall back to a
generated pairwise function ``log_kernel(x, y)`` (vmapped over blocks).

A per-weight-type hook (:data:`WEIGHT_HOOKS`, selected by the class attribute ``weight``,
default ``"exp"``) turns a score ``s`` into the log-weight: ``"exp"``: ``log w = s``;
``"sigmoid"``: ``log w = log sigmoid(s)``. Under normalisation ``"none"``, bounded weights listed
in :data:`DIRECT_WEIGHTS` (sigmoid) are summed directly, ``sum_j a_j w(s_ij) v_j``, without the
log-sum-exp stabilisation (which unbounded ``exp`` weights need).

Normalisations (class attribute ``normalisation``):

- ``"softmax"``: ``Gamma(x_i) = sum_j w_ij v_j / sum_j w_ij``;
- ``"none"``: ``Gamma(x_i) = (1/N) sum_j w_ij v_j`` (mean-field average, weights not normalised);
- ``"sinkhorn"``: the coupling ``pi_ij = exp(f_i + g_j + log w_ij) / N^2`` with both marginals
  uniform (log-domain Sinkhorn on the empirical measure, at every evaluation), and
  ``Gamma(x_i) = N sum_j pi_ij v_j = sum_j softmax_j(log w_ij + g_j) v_j``.

with values ``v_j = W_O V y_j``.

**Memory.** Scores are computed block-wise with a numerically stable running log-sum-exp
(``lax.scan`` over key blocks; never the full ``N x N`` matrix): peak extra memory is one
``N x block`` score block, ``block = max(1, BLOCK_ELEMENTS // N)`` keys by default
(``BLOCK_ELEMENTS = 2**20``, i.e. 8 MiB of float64 scores; small blocks stay in cache).

**Sinkhorn cost.** Each Sinkhorn iteration is two block-wise passes over the ``N^2`` pairs
(``O(N^2 d)`` flops, ``O(N block)`` memory); one velocity evaluation is ``2 n_iter + 1`` passes.
Iterations run (cold-started, ``f = 0``) until the largest relative violation of the row marginal,
``max_i |N sum_j pi_ij - 1|``, is below ``sinkhorn_tol`` (default ``1e-10``) or
``sinkhorn_max_iter`` (default 1000) is reached. The count grows with the spread of the scores
``beta <Qx, Ky> / eps`` over the cloud; :func:`simulate` reports the count (and the remaining
marginal error) recomputed at every saved time.

**Causal masking.** With ``positions`` (shape ``(N,)``) token ``i`` attends to the tokens ``j``
with ``positions[j] <= positions[i]`` (softmax over its prefix); ``causal=True`` uses
``positions = arange(N) / N`` (token order). Only ``"softmax"`` normalisation supports masks.

**Other fields.** Sums (``f1 + f2``, multi-head) add their parts' particle velocities; fields whose
velocity does not depend on the measure (e.g. an affine layer) move each particle by their
velocity; any field can define ``_particle_velocity(self, X, ctx, positions=None, log_a=None)``
(``X`` of shape ``(N, d)``,
``ctx`` a :class:`Context`; :func:`particle_velocity` evaluates other fields under the same
context) to supply its own particle system. Layer schedules (``gf.Layers``: ``fields`` and
``durations``) are integrated segment by segment.

Everything is float64 and deterministic given the seed.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from sympy import MatrixExpr, ZeroMatrix

from ._checks import as_array, as_scalar, check_times
from .gaussian import Gaussian

#: Score elements per block (float64): the block-wise passes hold one ``N x block`` block.
BLOCK_ELEMENTS = 2**20

#: Score -> log-weight, per weight type (class attribute ``weight`` of an attention class).
WEIGHT_HOOKS: dict[str, Callable] = {
    "exp": lambda s: s,
    "sigmoid": jax.nn.log_sigmoid,
}

#: Bounded weights ``w(s)`` evaluated directly under normalisation ``"none"`` (no log-sum-exp:
#: one ``w`` per pair instead of ``log w`` followed by ``exp``; 3-4 times faster for sigmoid).
DIRECT_WEIGHTS: dict[str, Callable] = {
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda s: s,  # linear attention: the score itself (may be negative)
}

NORMALISATIONS = ("softmax", "none", "sinkhorn")


# ------------------------------------------------------------------------------ sampling
#: Sampling methods of :func:`sample`.
SAMPLERS = ("random", "sobol")


def sample(g: Gaussian, n: int, seed=0, method: str = "random") -> np.ndarray:
    """``n`` draws from ``N(g.mean, g.cov)``, shape ``(n, d)``, float64.

    Uses a symmetric eigendecomposition ``cov = U diag(w) U^T`` (``x = mean + U sqrt(w) z``), so
    singular (PSD) covariances are fine: the samples lie in ``mean + range(cov)`` (eigenvalues at
    round-off level count as zero). ``seed`` is an
    int in ``[0, 2**32)`` (``jax.random.PRNGKey(seed)``) or a JAX PRNG key (raw ``uint32`` of
    shape ``(2,)`` or typed); anything else is refused before sampling. The same seed gives the
    same samples.

    ``method``: ``"random"`` (independent draws, ``z ~ N(0, I)``) or ``"sobol"`` (randomised
    quasi-Monte Carlo: ``z = Phi^{-1}(u)`` for the first ``n`` points ``u`` of a scrambled Sobol
    sequence (scipy.stats.qmc), scrambling seeded from ``seed``; best balanced for ``n`` a power of
    two). Each Sobol cloud is marginally uniform over the scrambling, and its empirical measure
    tends to the same Gaussian, with integration error of smooth functions falling about like
    ``1/n`` instead of ``n^{-1/2}``; no random extreme outliers (the largest ``|z|`` is about
    ``Phi^{-1}(1 - 1/(2n))``). A variance reduction for validating closures (same limit).
    """
    if not isinstance(g, Gaussian):
        raise TypeError(f"g must be a gf.Gaussian, got {type(g).__name__}; wrap it as "
                        "gf.Gaussian(mean, cov)")
    n = _check_count("n", n, minimum=1)
    key = _key(seed)
    if method not in SAMPLERS:
        raise ValueError(f"method must be one of {SAMPLERS}, got {method!r}")
    cov = np.asarray(g.cov)
    w, U = np.linalg.eigh((cov + cov.T) / 2)
    # Eigenvalues at round-off level (|w| <= d eps max|w|) are zero: exact null directions stay null.
    w = np.where(np.abs(w) <= g.dim * np.finfo(float).eps * np.max(np.abs(w)), 0.0, w)
    root = U * np.sqrt(np.clip(w, 0.0, None))
    if method == "sobol":
        from scipy.stats import norm, qmc

        rng_seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
        with warnings.catch_warnings():  # "balance properties" warning for n not a power of two
            warnings.simplefilter("ignore", UserWarning)
            u = qmc.Sobol(g.dim, scramble=True, seed=rng_seed).random(n)
        z = norm.ppf(u)
    else:
        z = np.asarray(jax.random.normal(key, (n, g.dim), dtype=jnp.float64))
    return np.asarray(g.mean)[None, :] + z @ root.T


#: Integer seeds are ``0 <= seed < SEED_LIMIT`` (one 32-bit word of a JAX PRNG key).
SEED_LIMIT = 2**32


def _key(seed, name="seed"):
    """``seed`` as a JAX PRNG key: an int in ``[0, 2**32)`` (``jax.random.PRNGKey(seed)``) or a
    key already (a raw ``uint32`` key of shape ``(2,)``, or a typed ``jax.random.key``)."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        if not 0 <= int(seed) < SEED_LIMIT:
            raise ValueError(f"{name} must be an int in [0, 2**32) or a JAX PRNG key, got the int "
                             f"{int(seed)}; reduce it, e.g. {name} % 2**32")
        return jax.random.PRNGKey(int(seed))
    if isinstance(seed, jax.Array):
        if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key) and seed.shape == ():
            return jax.random.key_data(seed)
        if seed.dtype == jnp.uint32 and seed.shape == (2,):
            return seed
    raise TypeError(f"{name} must be an int in [0, 2**32) or a JAX PRNG key "
                    f"(jax.random.PRNGKey(s)), got {seed!r}")


def _check_count(name, n, minimum=1):
    """``n`` as a Python int ``>= minimum`` (bool, float and other types refused)."""
    if (isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer))
            or n < minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def empirical_moments(X):
    """Mean and covariance ``(1/N) sum (x - m)(x - m)^T`` of the empirical measure of ``X`` (..., N, d)."""
    shape = np.shape(X)
    if len(shape) < 2 or shape[-2] < 1 or shape[-1] < 1:
        raise ValueError(f"X must have shape (..., N, d) with N, d >= 1, got {tuple(shape)}")
    X = jnp.asarray(X)  # NaN allowed: moments of a failed run stay NaN
    m = X.mean(axis=-2)
    Y = X - m[..., None, :]
    S = jnp.einsum("...ni,...nj->...ij", Y, Y) / X.shape[-2]
    return m, (S + jnp.swapaxes(S, -1, -2)) / 2


# ------------------------------------------------------------------- kernel declarations
@dataclass(frozen=True)
class KernelSpec:
    """What the particle engine generated from an attention class's declaration."""

    name: str
    normalisation: str
    weight: str
    params: tuple  # parameter symbols, in the order of the generated functions' arguments
    quadratic: bool  # scores from (H, h0, P, c0) blocks; else the pairwise log_kernel
    p_zero: bool  # P == 0 (no key term)
    c0_zero: bool  # c0 == 0 (no row term)
    source: str  # the generated JAX source
    functions: dict = dc_field(repr=False)

    def param_values(self, field):
        vals = field._param_values()
        missing = [p.name for p in self.params if p.name not in vals]
        if missing:
            raise TypeError(f"{type(field).__name__}._param_values() lacks {missing}")
        return [vals[p.name] for p in self.params]


def is_attention(field) -> bool:
    """Whether ``field`` is an attention declaration (a score and a normalisation object)."""
    cls = type(field)
    return (callable(getattr(cls, "particle_score", None))
            and getattr(cls, "normalisation", None) is not None)


@functools.cache
def kernel_spec(cls) -> KernelSpec:
    """Generate (once per class) the particle-score code from the declaration of ``cls``.

    ``cls.particle_score()`` is the score ``s(x, y)`` (a SymPy ``(1, 1)`` expression of the
    columns ``x``, ``y``, the parameters and the time ``t``), ``cls.value_map()`` the value matrix,
    ``cls.normalisation`` a normalisation object (``kind`` and ``weight``). Every generated
    function takes the time first.
    """
    norm = cls.normalisation
    kind, weight = getattr(norm, "kind", None), getattr(norm, "weight", None)
    if kind not in NORMALISATIONS:
        raise TypeError(f"{cls.__name__}.normalisation must be a gaussflow normalisation object, "
                        f"got {norm!r}")
    lk, vm = cls.particle_score(), cls.value_map()
    parts_src = cls.particle_source(lk, vm)
    return KernelSpec(name=cls.__name__, normalisation=kind, weight=weight, **parts_src)


# ----------------------------------------------------------------------- evaluation context
@dataclass(frozen=True)
class Context:
    """How particle velocities are evaluated (hashable; static under ``jit``).

    ``block``: keys per block (``None``: ``BLOCK_ELEMENTS // N``); ``dense``: compute the full
    score matrix instead (reference implementation for tests, small N only);
    ``sinkhorn_tol``/``sinkhorn_max_iter``: stopping rule of the Sinkhorn iterations.
    Positions for causal masks are passed next to the context, as arrays.
    """

    block: int | None = None
    dense: bool = False
    sinkhorn_tol: float = 1e-10
    sinkhorn_max_iter: int = 1000

    def block_size(self, n):
        b = self.block if self.block is not None else max(1, BLOCK_ELEMENTS // max(n, 1))
        return int(max(1, min(b, n)))


class _Scores:
    """Block log-weights of one attention field on the cloud ``X`` (queries = keys = X).

    Fast path (``"exp"`` weights, quadratic kernel): ``log w_ij = q_i . y_j + kc_j + c0_i`` with
    query features ``q = X H^T + h0^T``, key term ``kc_j = -1/2 y_j^T P y_j`` (folded into the key
    bias) and row term ``c0_i`` (cancels under softmax/Sinkhorn normalisation; applied at the end
    for ``"none"``). Otherwise the full score is formed before the weight hook.
    """

    def __init__(self, spec: KernelSpec, field, X, t=0.0):
        self.spec = spec
        vals = spec.param_values(field)
        n, d = X.shape
        fns = spec.functions
        outs = fns["kernel_parts"](t, jnp.zeros((d, 1)), *vals)
        outs = outs if isinstance(outs, tuple) else (outs,)
        self.values = X @ jnp.broadcast_to(outs[-1], (d, d)).T  # v_j = W_O V y_j
        self.hook = WEIGHT_HOOKS.get(spec.weight)
        self.fast = spec.quadratic and spec.weight == "exp"
        self.y = X
        self.key_const = None  # (N,) or None
        self.row_const = None  # (N,) or None
        if spec.quadratic:
            H = jnp.broadcast_to(outs[0], (d, d))
            h0 = jnp.broadcast_to(outs[1], (d, 1))[:, 0]
            self.q = X @ H.T + h0[None, :]
            kc = None if spec.p_zero else -0.5 * jnp.sum((X @ jnp.broadcast_to(outs[2], (d, d)))
                                                          * X, axis=1)
            c0 = None if spec.c0_zero else jax.vmap(
                lambda x: jnp.reshape(fns["kernel_c0"](t, x[:, None], *vals), ()))(X)
            if self.fast:
                self.key_const, self.row_const = kc, c0
            else:
                zero = jnp.zeros((n,))
                self._kc = zero if kc is None else kc
                self._c0 = zero if c0 is None else c0
        else:
            self.q = X
            lk = fns["log_kernel"]
            pair = lambda x, y: jnp.reshape(lk(t, x[:, None], y[:, None], *vals), ())  # noqa: E731
            self._pair = jax.vmap(jax.vmap(pair, (None, 0)), (0, None))

    def query_data(self):
        """Per-query arrays the block logits need (sliced into blocks by the column pass)."""
        if self.spec.quadratic and not self.fast:
            return (self.q, self._c0)
        return (self.q,)

    def key_data(self):
        if self.spec.quadratic and not self.fast:
            return (self.y, self._kc)
        return (self.y,)

    def scores(self, qd, kd):
        """Scores ``s_ij`` (before the weight hook) of query data ``qd`` against key data ``kd``."""
        if self.spec.quadratic:
            s = qd[0] @ kd[0].T
            return s if self.fast else s + qd[1][:, None] + kd[1][None, :]
        return self._pair(qd[0], kd[0])

    def logits(self, qd, kd):
        """Log-weights ``(a, b)`` of query data ``qd`` against key data ``kd`` (no biases)."""
        s = self.scores(qd, kd)
        return s if self.fast else self.hook(s)


def add_bias(a, b):
    """``a + b`` where either may be ``None`` (no bias)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _blocks(a, n_blocks, block, fill):
    """Pad the leading axis of ``a`` to ``n_blocks * block`` with ``fill`` and split into blocks."""
    pad = n_blocks * block - a.shape[0]
    if pad:
        a = jnp.concatenate([a, jnp.full((pad,) + a.shape[1:], fill, a.dtype)], axis=0)
    return a.reshape((n_blocks, block) + a.shape[1:])


def _scan_lse(n_out, xs, block_logits, dv=None):
    """Running log-sum-exp over blocks: returns ``(m, l, acc)`` with
    ``sum_j exp(logit_j) = exp(m) l`` and ``sum_j exp(logit_j) v_j = exp(m) acc`` per output row.

    ``block_logits(x) -> (logits (n_out, B), -inf where excluded; values (B, dv) or None)``.
    """

    def body(carry, x):
        m, l, acc = carry
        s, v = block_logits(x)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - m_safe[:, None])
        scale = jnp.exp(m - m_safe)
        l = l * scale + jnp.sum(p, axis=1)
        if dv is not None:
            acc = acc * scale[:, None] + p @ v
        return (m_new, l, acc), None

    init = (jnp.full((n_out,), -jnp.inf), jnp.zeros((n_out,)), jnp.zeros((n_out, dv or 0)))
    (m, l, acc), _ = jax.lax.scan(body, init, xs)
    return m, l, acc


def row_pass(sc: _Scores, key_bias, positions, ctx: Context, with_values=True):
    """For every query ``i``, over keys ``j`` (masked to ``positions[j] <= positions[i]`` when
    given): ``(m_i, l_i, acc_i)`` of the logits ``log w_ij + key_bias_j`` (see :func:`_scan_lse`)."""
    n = sc.q.shape[0]
    dv = sc.values.shape[1] if with_values else None
    qd, kd = sc.query_data(), sc.key_data()
    if ctx.dense:
        s = sc.logits(qd, kd)
        if key_bias is not None:
            s = s + key_bias[None, :]
        if positions is not None:
            s = jnp.where(positions[None, :] <= positions[:, None], s, -jnp.inf)
        m = jnp.max(s, axis=1)
        m_safe = jnp.where(jnp.isfinite(m), m, 0.0)
        p = jnp.exp(s - m_safe[:, None])
        acc = p @ sc.values if with_values else jnp.zeros((n, 0))
        return m, jnp.sum(p, axis=1), acc
    B = ctx.block_size(n)
    nb = -(-n // B)
    if nb * B != n and key_bias is None:
        key_bias = jnp.zeros((n,))  # padded keys get bias -inf
    xs = {"kd": tuple(_blocks(a, nb, B, 0.0) for a in kd)}
    if key_bias is not None:
        xs["kb"] = _blocks(key_bias, nb, B, -jnp.inf)
    if with_values:
        xs["v"] = _blocks(sc.values, nb, B, 0.0)
    if positions is not None:
        xs["kp"] = _blocks(positions, nb, B, jnp.inf)

    def block_logits(x):
        s = sc.logits(qd, x["kd"])
        if "kb" in x:
            s = s + x["kb"][None, :]
        if "kp" in x:
            s = jnp.where(x["kp"][None, :] <= positions[:, None], s, -jnp.inf)
        return s, x.get("v")

    return _scan_lse(n, xs, block_logits, dv)


def direct_pass(sc: _Scores, a, ctx: Context, positions=None):
    """``sum_j a_j w(s_ij) v_j`` for every query ``i``, with a bounded or linear weight
    ``w = DIRECT_WEIGHTS[weight]`` (block-wise over keys; ``a`` (N,) the key masses). With
    ``positions``: the average over the prefix, ``sum_{j <= i} a_j w_ij v_j / sum_{j <= i} a_j``."""
    w = DIRECT_WEIGHTS[sc.spec.weight]
    n = sc.q.shape[0]
    qd, kd = sc.query_data(), sc.key_data()
    if positions is None:
        mask = lambda kp: 1.0  # noqa: E731
        kpos = jnp.zeros((n,))
    else:
        mask = lambda kp: (kp[None, :] <= positions[:, None]).astype(a.dtype)  # noqa: E731
        kpos = positions
    if ctx.dense:
        aw = a[None, :] * mask(kpos)
        acc, mass = (w(sc.scores(qd, kd)) * aw) @ sc.values, jnp.sum(aw * jnp.ones((n, n)), axis=1)
    else:
        B = ctx.block_size(n)
        nb = -(-n // B)
        xs = (tuple(_blocks(k, nb, B, 0.0) for k in kd), _blocks(a, nb, B, 0.0),
              _blocks(sc.values, nb, B, 0.0), _blocks(kpos, nb, B, jnp.inf))

        def body(carry, x):
            acc, mass = carry
            aw = x[1][None, :] * mask(x[3])
            return (acc + (w(sc.scores(qd, x[0])) * aw) @ x[2],
                    mass + jnp.sum(aw * jnp.ones((n, 1)), axis=1)), None

        (acc, mass), _ = jax.lax.scan(body, (jnp.zeros((n, sc.values.shape[1])), jnp.zeros(n)), xs)
    return acc if positions is None else acc / mass[:, None]


def _row_lse(sc, key_bias, ctx):
    m, l, _ = row_pass(sc, key_bias, None, ctx, with_values=False)
    return m + jnp.log(l)


def _col_lse(sc: _Scores, query_bias, ctx: Context):
    """For every key ``j``: ``log sum_i exp(log w_ij + query_bias_i)`` (block-wise over queries;
    includes the key term ``kc_j`` of the fast path, excludes the row term ``c0_i``)."""
    n = sc.q.shape[0]
    qd, kd = sc.query_data(), sc.key_data()
    if ctx.dense:
        out = jax.scipy.special.logsumexp(sc.logits(qd, kd) + query_bias[:, None], axis=0)
    else:
        B = ctx.block_size(n)
        nb = -(-n // B)
        xs = (tuple(_blocks(a, nb, B, 0.0) for a in qd), _blocks(query_bias, nb, B, -jnp.inf))

        def block_logits(x):
            return (sc.logits(x[0], kd) + x[1][:, None]).T, None

        m, l, _ = _scan_lse(n, xs, block_logits)
        out = m + jnp.log(l)
    return add_bias(out, sc.key_const)


def sinkhorn_potentials(sc: _Scores, log_a, ctx: Context):
    """Log-domain Sinkhorn for the self-coupling of the weighted cloud ``sum_i a_i delta_{x_i}``.

    Coupling ``pi_ij = exp(f_i + g_j + log w_ij)`` with both marginals ``a``:
    ``g_j = log a_j - LSE_i(f_i + log w_ij)``, ``f_i = log a_i - LSE_j(g_j + log w_ij)``, from
    ``f = log a``. Returns ``(g, n_iter, err)``; ``softmax_j(log w_ij + g_j)`` is then the
    row-conditional of the coupling. ``err = max_i |sum_j pi_ij / a_i - 1|`` for the coupling of the
    previous half-step (stopping rule ``err <= ctx.sinkhorn_tol``, at most ``ctx.sinkhorn_max_iter``).
    """

    def cond(st):
        it, f, g, err = st
        return (err > ctx.sinkhorn_tol) & (it < ctx.sinkhorn_max_iter)

    def body(st):
        it, f, g, err = st
        g = log_a - _col_lse(sc, f, ctx)
        f_new = log_a - _row_lse(sc, add_bias(g, sc.key_const), ctx)
        dev = jnp.where(jnp.isfinite(f_new), jnp.expm1(f - f_new), 0.0)
        return it + 1, f_new, g, jnp.max(jnp.abs(dev))

    init = (jnp.asarray(0), log_a, jnp.zeros_like(log_a), jnp.asarray(jnp.inf))
    it, f, g, err = jax.lax.while_loop(cond, body, init)
    return g, it, err


def particle_velocity(field, X, positions=None, ctx: Context = Context(), log_a=None, t=0.0):
    """``Gamma[mu](x_i)`` at time ``t`` at every particle of the cloud ``X`` (N, d) for the
    empirical measure ``mu = sum_j a_j delta_{x_j}`` (``log_a`` (N,); ``None``: uniform
    ``a_j = 1/N``; entries ``-inf`` drop particles, e.g. padding). Pure JAX (traceable).
    ``positions`` (N,) or ``None``: causal mask (see the module docstring).
    """
    hook = getattr(field, "_particle_velocity", None)
    if callable(hook):
        return hook(X, ctx, positions=positions, log_a=log_a, t=t)
    parts = getattr(field, "parts", None)
    if isinstance(parts, tuple) and parts:
        out = [particle_velocity(p, X, positions, ctx, log_a, t) for p in parts]
        return functools.reduce(jnp.add, out)
    if is_attention(field):
        sc = _Scores(kernel_spec(type(field)), field, X, t)
        return type(field).normalisation.particle_velocity(sc, ctx, positions, log_a)
    if _is_local(field):
        d = X.shape[1]
        return jax.vmap(lambda x: field._velocity(t, jnp.zeros((d,)), jnp.eye(d), x))(X)
    raise TypeError(f"{type(field).__name__} has no particle system: declare it as a "
                    "gf.Attention, or implement _particle_velocity(X, ctx, positions, log_a, t)")


def _is_local(field) -> bool:
    """True for derived fields whose velocity does not depend on the measure (e.g. affine)."""
    deriv = getattr(type(field), "derivation", None)
    if not callable(deriv):
        return False
    names = {s.name for s in deriv().velocity.free_symbols}
    return not names & {"alpha", "Sigma"}


def sinkhorn_fields(field):
    """The Sinkhorn-normalised attention fields inside ``field`` (itself, sum parts, segments)."""
    if is_attention(field) and kernel_spec(type(field)).normalisation == "sinkhorn":
        return [field]
    out = []
    for p in getattr(field, "parts", ()) or ():
        out += sinkhorn_fields(p)
    for f, _ in _segments(field) or ():
        out += sinkhorn_fields(f)
    return out


def _segments(field):
    """``[(field, duration), ...]`` of a layer schedule (``gf.Layers``), else ``None``."""
    fields, durations = getattr(field, "fields", None), getattr(field, "durations", None)
    if isinstance(fields, tuple) and isinstance(durations, tuple):
        return list(zip(fields, durations))
    return None


# ----------------------------------------------------------------------------- integration
@dataclass(frozen=True)
class ParticleTrajectory:
    """Token positions of a particle simulation.

    ``ts`` (n_t,), ``xs`` (n_t, N, d) NumPy arrays: the requested save times reached (all of them
    when ``status == "completed"``). ``status``: ``"completed"``, ``"max_steps"`` or
    ``"nonfinite"``. ``np.asarray(traj)`` is ``xs``. ``info``: solver steps, and for Sinkhorn
    fields the iteration count and remaining marginal error recomputed at each saved time.
    """

    ts: np.ndarray
    xs: np.ndarray
    status: str
    t_stop: float
    num_steps: int
    positions: np.ndarray | None = None
    field_name: str = ""
    info: dict = dc_field(default_factory=dict, repr=False)

    def __array__(self, dtype=None, copy=None):
        return self.xs if dtype is None else self.xs.astype(dtype)

    @property
    def shape(self):
        return self.xs.shape

    def moments(self):
        """Empirical means (n_t, d) and covariances (n_t, d, d) (``1/N`` normalisation)."""
        m, S = empirical_moments(self.xs)
        return np.asarray(m), np.asarray(S)

    def gaussians(self):
        """The moment-matched :class:`~gaussflow.Gaussian` at each saved time."""
        m, S = self.moments()
        return [Gaussian(mi, Si) for mi, Si in zip(m, S)]

    def __repr__(self):
        return (f"ParticleTrajectory({self.field_name or 'field'}, status={self.status!r}, "
                f"N={self.xs.shape[1]}, d={self.xs.shape[2]}, n_saved={len(self.ts)}, "
                f"steps={self.num_steps})")


def _integrate_impl(field, x0s, log_as, positions, t0, t1, ts, ctx, solver, rtol, atol,
                    max_steps):
    """Integrate a batch of clouds ``x0s`` (B, N, d) (particle log-weights ``log_as`` (B, N) or
    ``None``: uniform) over ``[t0, t1]``, saving at ``ts``."""

    def one(x0, log_a):
        def vf(t, y, args):
            return particle_velocity(field, y, positions, ctx, log_a, t)

        def cond_nonfinite(t, y, args, **kw):
            return ~jnp.all(jnp.isfinite(y))

        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf), solver, t0, t1, None, x0,
            saveat=diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts), diffrax.SubSaveAt(t1=True)]),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            event=diffrax.Event(cond_nonfinite), max_steps=max_steps, throw=False,
        )
        return {"xs": sol.ys[0], "x_end": sol.ys[1][-1], "t_stop": sol.ts[1][-1],
                "result": sol.result._value, "num_steps": sol.stats["num_steps"],
                "event": sol.event_mask if sol.event_mask is not None else jnp.asarray(False)}

    if x0s.shape[0] == 1:  # no batching rules to compile for a single cloud
        out = one(x0s[0], None if log_as is None else log_as[0])
        return jax.tree_util.tree_map(lambda a: a[None], out)
    if log_as is None:
        return jax.vmap(lambda x0: one(x0, None))(x0s)
    return jax.vmap(one)(x0s, log_as)


_integrate = eqx.filter_jit(_integrate_impl)


def _status(result, event) -> str:
    if bool(event):
        return "nonfinite"
    res = int(result)
    if res == diffrax.RESULTS.max_steps_reached._value:
        return "max_steps"
    if res not in (diffrax.RESULTS.successful._value, diffrax.RESULTS.event_occurred._value):
        return "nonfinite"
    return "completed"


def _check_positions(positions, causal, n):
    if positions is None:
        return jnp.arange(n, dtype=jnp.float64) / n if causal else None
    pos = as_array("positions", positions, ndim=1, shape=(n,))
    return jnp.asarray(pos, dtype=jnp.float64)


def _check_field(field, d):
    from .field import Field

    if not isinstance(field, Field):
        raise TypeError(f"field must be a gaussflow field (e.g. gf.Softmax(Q, K, V)), got "
                        f"{type(field).__name__}")
    if field.dim != d:
        raise ValueError(f"x0 has dimension {d} but the field {field.name!r} acts on dimension "
                         f"{field.dim}")


def simulate_batch(field, x0s, ts, *, t0=0.0, n_valid=None, positions=None, causal=False,
                   rtol=1e-8, atol=1e-10, solver=None, max_steps=16384, block=None,
                   sinkhorn_tol=1e-10, sinkhorn_max_iter=1000, dense=False
                   ) -> list[ParticleTrajectory]:
    """:func:`simulate` for a batch of clouds ``x0s`` (B, N, d) sharing one compiled solve.

    ``n_valid`` (B ints, optional): cloud ``b`` is ``x0s[b, :n_valid[b]]``; the rest is padding
    (weight zero: it does not act on the others), so clouds of different sizes share one
    compilation. Returned trajectories hold the valid particles only.
    """
    from .solve import resolve_solver

    x0s = as_array("x0s", x0s, ndim=3)
    B, n, d = x0s.shape
    if n < 1 or d < 1:
        raise ValueError(f"x0s must have shape (B, N, d) with N, d >= 1, got {x0s.shape}")
    _check_field(field, d)
    ts = as_array("ts", ts, ndim=1)
    t0 = float(as_scalar("t0", t0))
    if ts.size == 0:
        raise ValueError("ts must hold at least one time, e.g. np.linspace(0, 1, 11)")
    if not float(ts[-1]) > t0:
        raise ValueError(f"ts must end after t0 = {t0} (the run ends at ts[-1]), got ts[-1] = "
                         f"{float(ts[-1])}")
    t0, t1, ts = check_times(t0, float(ts[-1]), ts)
    rtol = float(as_scalar("rtol", rtol, positive=True))
    atol = float(as_scalar("atol", atol, positive=True))
    max_steps = _check_count("max_steps", max_steps)
    if block is not None:
        block = _check_count("block", block)
    stol = float(as_scalar("sinkhorn_tol", sinkhorn_tol, positive=True))
    smax = _check_count("sinkhorn_max_iter", sinkhorn_max_iter)
    pos = _check_positions(positions, causal, n)
    log_as = None
    if n_valid is not None:
        nv = [_check_count(f"n_valid[{i}]", v)
              for i, v in enumerate(np.atleast_1d(np.asarray(n_valid, dtype=object)).tolist())]
        if len(nv) != B or max(nv) > n:
            raise ValueError(f"n_valid must hold {B} counts in [1, {n}], got {n_valid!r}")
        if pos is not None:
            raise ValueError("n_valid (padding) and causal positions cannot be combined")
        if min(nv) < n:
            idx = np.arange(n)[None, :]
            nvv = np.asarray(nv)[:, None]
            log_as = jnp.asarray(np.where(idx < nvv, -np.log(nvv), -np.inf))
    else:
        nv = [n] * B
    ctx = Context(block=block, dense=bool(dense), sinkhorn_tol=stol, sinkhorn_max_iter=smax)
    solver = resolve_solver(solver)

    segs = _segments(field)
    if segs is None:
        segs = [(field, t1 - t0)]
    ends = t0 + np.cumsum([float(dur) for _, dur in segs])
    if ends[-1] < t1 * (1 - 1e-12) - 1e-12:
        raise ValueError(f"the layer schedule ends at t = {ends[-1]:.6g} but ts runs to {t1:.6g}; "
                         "pass save times within the schedule")
    # Integrate segment by segment (the schedule is piecewise constant in time).
    xs = np.full((B, len(ts), n, d), np.nan)
    x = jnp.asarray(x0s)
    steps = np.zeros(B, dtype=int)
    status = ["completed"] * B
    t_stop = np.full(B, t0)
    ta = t0
    for k, (f_k, _) in enumerate(segs):
        tb = min(float(ends[k]), t1)
        if tb <= ta:
            continue
        sel = (ts <= tb) & ((ts > ta) if k else (ts >= ta))
        ts_k = ts[sel] if sel.any() else np.array([tb])
        out = _integrate(f_k, x, log_as, pos, jnp.asarray(ta), jnp.asarray(tb),
                         jnp.asarray(ts_k), ctx, solver, rtol, atol, max_steps)
        out = jax.tree_util.tree_map(np.asarray, out)
        if sel.any():
            xs[:, sel] = out["xs"]
        steps += out["num_steps"]
        for b in range(B):
            if status[b] == "completed":
                status[b] = _status(out["result"][b], np.any(out["event"][b]))
                t_stop[b] = out["t_stop"][b]
        x = jnp.asarray(out["x_end"])
        ta = tb
        if ta >= t1:
            break
    trajs = []
    sk = sinkhorn_fields(field)
    for b in range(B):
        xb = xs[b][:, :nv[b]]
        ok = np.all(np.isfinite(xb.reshape(len(ts), -1)), axis=1) & (ts <= t_stop[b])
        if status[b] == "completed" and not ok.all():
            status[b] = "nonfinite"
        info = {"num_steps": int(steps[b])}
        if sk and ok.any():
            info.update(_sinkhorn_report(sk, xb[ok], ctx))
        trajs.append(ParticleTrajectory(
            ts=ts[ok], xs=xb[ok], status=status[b], t_stop=float(t_stop[b]),
            num_steps=int(steps[b]), positions=None if pos is None else np.asarray(pos),
            field_name=getattr(field, "name", type(field).__name__), info=info))
    return trajs


@eqx.filter_jit
def _sinkhorn_at(f, X, ctx):
    n = X.shape[0]
    la = jnp.full((n,), -math.log(n))
    _, it, err = sinkhorn_potentials(_Scores(kernel_spec(type(f)), f, X), la, ctx)
    return it, err


def _sinkhorn_report(fields, xs, ctx):
    its, errs = [], []
    for X in xs:
        per = [_sinkhorn_at(f, jnp.asarray(X), ctx) for f in fields]
        its.append(max(int(p[0]) for p in per))
        errs.append(max(float(p[1]) for p in per))
    return {"sinkhorn_iterations": its, "sinkhorn_marginal_error": errs,
            "sinkhorn_tol": ctx.sinkhorn_tol, "sinkhorn_max_iter": ctx.sinkhorn_max_iter,
            "sinkhorn_converged": bool(max(errs) <= ctx.sinkhorn_tol)}


def simulate(field, x0, ts, *, t0=0.0, positions=None, causal=False, rtol=1e-8, atol=1e-10,
             solver=None, max_steps=16384, block=None, sinkhorn_tol=1e-10, sinkhorn_max_iter=1000,
             dense=False) -> ParticleTrajectory:
    """Integrate the N-token system ``dx_i/dt = Gamma[mu^N](x_i)`` from ``x0`` (N, d).

    Parameters
    ----------
    field : a gaussflow field (the same objects as the closures: ``gf.Softmax``, sums, ...).
    x0 : initial token positions, shape ``(N, d)`` (e.g. :func:`sample`).
    ts : save times, strictly increasing, ``ts[0] >= t0``; the run ends at ``ts[-1]``.
    positions, causal : causal mask (see the module docstring); ``positions`` (N,) overrides.
    rtol, atol, solver, max_steps : diffrax ``PIDController`` tolerances, solver (default adaptive
        ``Tsit5``) and step budget.
    block : keys per block (default ``BLOCK_ELEMENTS // N``); ``dense=True`` uses the full score
        matrix (reference, small N). sinkhorn_tol, sinkhorn_max_iter : Sinkhorn stopping rule.

    Returns a :class:`ParticleTrajectory` (``.xs`` of shape ``(len(ts), N, d)`` when completed).
    Never raises on numerical events: see ``status``.
    """
    x0 = as_array("x0", x0, ndim=2)
    return simulate_batch(field, np.asarray(x0)[None], ts, t0=t0, positions=positions,
                          causal=causal, rtol=rtol, atol=atol, solver=solver, max_steps=max_steps,
                          block=block, sinkhorn_tol=sinkhorn_tol,
                          sinkhorn_max_iter=sinkhorn_max_iter, dense=dense)[0]


def velocity(field, X, *, positions=None, causal=False, block=None, dense=False,
             sinkhorn_tol=1e-10, sinkhorn_max_iter=1000):
    """The empirical field ``Gamma[mu^N](x_i)`` of the cloud ``X`` (N, d) at every particle (N, d)."""
    X = as_array("X", X, ndim=2)
    n, d = X.shape
    _check_field(field, d)
    if block is not None:
        block = _check_count("block", block)
    stol = float(as_scalar("sinkhorn_tol", sinkhorn_tol, positive=True))
    smax = _check_count("sinkhorn_max_iter", sinkhorn_max_iter)
    pos = _check_positions(positions, causal, n)
    ctx = Context(block=block, dense=bool(dense), sinkhorn_tol=stol, sinkhorn_max_iter=smax)
    segs = _segments(field)
    if segs is not None:
        raise ValueError("a layer schedule has no single velocity; pass one of its fields")
    return _jit_velocity(field, jnp.asarray(X), pos, ctx)


@eqx.filter_jit
def _jit_velocity(field, X, pos, ctx, log_a=None):
    return particle_velocity(field, X, pos, ctx, log_a)


__all__ = ["sample", "SAMPLERS", "simulate", "simulate_batch", "velocity", "particle_velocity",
           "empirical_moments", "ParticleTrajectory", "Context", "kernel_spec",
           "sinkhorn_potentials", "WEIGHT_HOOKS", "DIRECT_WEIGHTS", "BLOCK_ELEMENTS"]
