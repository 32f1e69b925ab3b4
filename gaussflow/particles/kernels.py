r"""Attention kernels on a cloud: declarations to generated score code, and the block-wise passes.

**Same declarations as the closures.** An attention class declares its score $s(x, y)$
(classmethod `particle_score()`, by default the declared `score`: a SymPy `(1, 1)` expression in
the column vectors `x` (query) and `y` (key); for `"exp"` weights it is the log-weight
$\log k(x, y)$), its `normalisation` object and its value map (classmethod `value_map()`, by
default the declared `value`, $W_O V$). From the declaration we generate, once per class
(`kernel_spec`, through the class's `particle_source`), JAX code for the pieces of the canonical
form $s = c_0(x) + (H x + h_0)^\top y - \tfrac12 y^\top P y$ (read off by the same rules the
closures use), so a block of scores is
$$c_0(X)[:, \mathrm{None}] + (X H^\top + h_0^\top) Y^\top
- \tfrac12 \operatorname{rowsum}((Y P) \odot Y)[\mathrm{None}, :]$$
(`Scores`); no score formula is written twice. Kernels that are not quadratic in $y$ fall
back to a generated pairwise function `log_kernel(t, x, y, ...)` (vmapped over blocks).

A per-weight-type hook (`WEIGHT_HOOKS`, selected by the `weight` of the normalisation object,
default `"exp"`) turns a score $s$ into the log-weight: `"exp"`: $\log w = s$;
`"sigmoid"`: $\log w = \log \sigma(s)$. Under normalisation `"none"`, bounded weights listed
in `DIRECT_WEIGHTS` (sigmoid; and the linear weight $w(s) = s$) are summed directly,
$\sum_j a_j w(s_{ij}) v_j$, without the log-sum-exp stabilisation (which unbounded `exp` weights
need; `direct_pass`).

**Memory.** Scores are computed block-wise with a numerically stable running log-sum-exp
(`lax.scan` over key blocks; never the full $N \times N$ matrix; `row_pass`): peak extra
memory is one $N \times \mathrm{block}$ score block, `block = max(1, BLOCK_ELEMENTS // N)` keys by
default (`BLOCK_ELEMENTS = 2**20`, i.e. 8 MiB of float64 scores; small blocks stay in cache).

**Sinkhorn.** The Sinkhorn potentials (`gaussflow.particles.sinkhorn`) are built from two
of these passes per iteration, `row_lse` and `col_lse`; that module's docstring gives
the iteration (Anderson-accelerated by default), its stopping rule, the causal (prefix) version and
their costs.

The normalisation objects (`gaussflow.attention.normalisation`) combine these passes into
particle velocities; `Context` says how they are evaluated.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field as dc_field
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from ..field import Field

#: Score elements per block (float64): the block-wise passes hold one $N \times \mathrm{block}$
#: block.
BLOCK_ELEMENTS = 2**20

#: Score -> log-weight, per weight type (the `weight` of an attention class's normalisation object).
WEIGHT_HOOKS: dict[str, Callable] = {
    "exp": lambda s: s,
    "sigmoid": jax.nn.log_sigmoid,
}

#: Bounded (and linear) weights $w(s)$ evaluated directly under normalisation `"none"` (no
#: log-sum-exp: one $w$ per pair instead of $\log w$ followed by $\exp$; 3-4 times faster for
#: sigmoid).
DIRECT_WEIGHTS: dict[str, Callable] = {
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda s: s,  # linear attention: the score itself (may be negative)
}

#: The particle normalisations (the `kind` of a normalisation object).
NORMALISATIONS = ("softmax", "none", "sinkhorn")


# ------------------------------------------------------------------- kernel declarations
@dataclass(frozen=True)
class KernelSpec:
    """What the particle engine generated from an attention class's declaration.

    `params`: the parameter symbols, in the order of the generated functions' arguments;
    `quadratic`: whether the scores come from the canonical form's blocks $(H, h_0, P, c_0)$
    (else the pairwise `log_kernel`); `p_zero`, `c0_zero`: whether $P = 0$ (no key term),
    $c_0 = 0$ (no row term); `source`: the generated JAX source; `functions`: its compiled
    functions by name.
    """

    name: str
    normalisation: str
    weight: str
    params: tuple  # parameter symbols, in the order of the generated functions' arguments
    quadratic: bool  # scores from (H, h0, P, c0) blocks; else the pairwise log_kernel
    p_zero: bool  # P == 0 (no key term)
    c0_zero: bool  # c0 == 0 (no row term)
    source: str  # the generated JAX source
    functions: dict = dc_field(repr=False)

    def param_values(self, field: Field) -> list:
        """The numeric values of `params` taken from `field` (its `_param_values()`), in order.

        Raises `TypeError` when the field lacks one of them.
        """
        vals = field._param_values()
        missing = [p.name for p in self.params if p.name not in vals]
        if missing:
            raise TypeError(f"{type(field).__name__}._param_values() lacks {missing}")
        return [vals[p.name] for p in self.params]


def is_attention(field: Any) -> bool:
    """Whether `field` is an attention declaration (a score and a normalisation object)."""
    cls = type(field)
    return (callable(getattr(cls, "particle_score", None))
            and getattr(cls, "normalisation", None) is not None)


@functools.cache
def kernel_spec(cls: type) -> KernelSpec:
    """Generate (once per class) the particle-score code from the declaration of `cls`.

    `cls.particle_score()` is the score $s(x, y)$ (a SymPy `(1, 1)` expression of the
    columns `x`, `y`, the parameters and the time `t`), `cls.value_map()` the value matrix,
    `cls.normalisation` a normalisation object (`kind` and `weight`); `cls.particle_source`
    generates the code. Every generated function takes the time first. Raises `TypeError` when
    `cls.normalisation` is not a gaussflow normalisation object.
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
    """How particle velocities are evaluated (hashable; static under `jit`).

    `block`: keys per block (`None`: `BLOCK_ELEMENTS // N`); `dense`: compute the full
    score matrix instead (reference implementation for tests, small $N$ only);
    `sinkhorn_tol`/`sinkhorn_max_iter`: stopping rule of the Sinkhorn iterations;
    `sinkhorn_anderson`: Anderson memory of the Sinkhorn iteration (`0`: plain alternating
    Sinkhorn; see `gaussflow.particles.sinkhorn`).
    Positions for causal masks are passed next to the context, as arrays; `n_prefixes` is a
    static upper bound on their number of distinct values (`None`: $N$), which lets a causal
    Sinkhorn solve one coupling per distinct prefix instead of one per token.
    """

    block: int | None = None
    dense: bool = False
    sinkhorn_tol: float = 1e-10
    sinkhorn_max_iter: int = 1000
    sinkhorn_anderson: int = 10
    n_prefixes: int | None = None

    def block_size(self, n: int) -> int:
        """Keys per block for a cloud of `n` tokens: `block` (default `BLOCK_ELEMENTS // n`),
        clipped to `[1, n]`."""
        b = self.block if self.block is not None else max(1, BLOCK_ELEMENTS // max(n, 1))
        return int(max(1, min(b, n)))


class Scores:
    r"""Block log-weights of one attention field on the cloud `X` (queries = keys = `X`).

    Fast path (`"exp"` weights, quadratic kernel): $\log w_{ij} = q_i \cdot y_j + kc_j + c_{0,i}$
    with query features $q = X H^\top + h_0^\top$, key term $kc_j = -\tfrac12 y_j^\top P y_j$
    (folded into the key bias, `key_const`) and row term $c_{0,i}$ (`row_const`; cancels under
    softmax/Sinkhorn normalisation; applied at the end for `"none"`). Otherwise the full score is
    formed before the weight hook. `values` `(N, d)`: the values $v_j = M y_j$ ($M$ the value
    matrix).

    Parameters
    ----------
    spec : KernelSpec
        The generated code of the field's class (`kernel_spec`).
    field : Field
        The attention field (its parameter values).
    X : jax.Array
        The cloud, shape `(N, d)`.
    t : float or jax.Array
        The time at which a time-dependent declaration is evaluated.
    """

    def __init__(self, spec: KernelSpec, field: Field, X: jax.Array,
                 t: float | jax.Array = 0.0) -> None:
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

    def query_data(self) -> tuple[jax.Array, ...]:
        """Per-query arrays the block logits need (sliced into blocks by the column pass)."""
        if self.spec.quadratic and not self.fast:
            return (self.q, self._c0)
        return (self.q,)

    def key_data(self) -> tuple[jax.Array, ...]:
        """Per-key arrays the block logits need (sliced into blocks by the row pass)."""
        if self.spec.quadratic and not self.fast:
            return (self.y, self._kc)
        return (self.y,)

    def scores(self, qd: tuple[jax.Array, ...], kd: tuple[jax.Array, ...]) -> jax.Array:
        """Scores $s_{ij}$ (before the weight hook) of query data `qd` against key data `kd`."""
        if self.spec.quadratic:
            s = qd[0] @ kd[0].T
            return s if self.fast else s + qd[1][:, None] + kd[1][None, :]
        return self._pair(qd[0], kd[0])

    def logits(self, qd: tuple[jax.Array, ...], kd: tuple[jax.Array, ...]) -> jax.Array:
        """Log-weights, shape `(a, b)`, of query data `qd` (`a` queries) against key data `kd`
        (`b` keys) (no biases)."""
        s = self.scores(qd, kd)
        return s if self.fast else self.hook(s)


def add_bias(a: jax.Array | None, b: jax.Array | None) -> jax.Array | None:
    """`a + b` where either may be `None` (no bias)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _blocks(a, n_blocks, block, fill):
    """Pad the leading axis of `a` to `n_blocks * block` with `fill` and split into blocks."""
    pad = n_blocks * block - a.shape[0]
    if pad:
        a = jnp.concatenate([a, jnp.full((pad,) + a.shape[1:], fill, a.dtype)], axis=0)
    return a.reshape((n_blocks, block) + a.shape[1:])


def _scan_lse(n_out, xs, block_logits, dv=None):
    r"""Running log-sum-exp over blocks: returns `(m, l, acc)` with
    $\sum_j e^{\mathrm{logit}_j} = e^m l$ and
    $\sum_j e^{\mathrm{logit}_j} v_j = e^m \mathrm{acc}$ per output row.

    `block_logits(x) -> (logits (n_out, B), -inf where excluded; values (B, dv) or None)`.
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


def row_pass(sc: Scores, key_bias: jax.Array | None, positions: jax.Array | None, ctx: Context,
             with_values: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""For every query $i$, over keys $j$ (masked to `positions[j] <= positions[i]` when
    given): `(m_i, l_i, acc_i)` of the logits $\log w_{ij} + b_j$ ($b$ = `key_bias`), with
    $\sum_j \exp(\mathrm{logit}_{ij}) = e^{m_i} l_i$ and
    $\sum_j \exp(\mathrm{logit}_{ij}) v_j = e^{m_i} \mathrm{acc}_i$ (see `_scan_lse`).

    Parameters
    ----------
    sc : Scores
        The score blocks of the cloud.
    key_bias : jax.Array or None
        `(N,)` key bias $b$ (`-inf` excludes a key), or `None`.
    positions : jax.Array or None
        `(N,)` token positions of a causal mask, or `None`.
    ctx : Context
        Evaluation context (block size, dense reference).
    with_values : bool
        Whether to accumulate the values (else `acc` has shape `(N, 0)`).

    Returns
    -------
    tuple of jax.Array
        `(m, l, acc)`, shapes `(N,)`, `(N,)` and `(N, d)`.
    """
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


def direct_pass(sc: Scores, a: jax.Array, ctx: Context,
                positions: jax.Array | None = None) -> jax.Array:
    r"""$\sum_j a_j w(s_{ij}) v_j$ for every query $i$, with a bounded or linear weight
    `w = DIRECT_WEIGHTS[weight]` (block-wise over keys; `a` `(N,)` the key masses). With
    `positions`: the average over the prefix,
    $\sum_{j \le i} a_j w_{ij} v_j / \sum_{j \le i} a_j$. Returns the `(N, d)` velocities."""
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


def row_lse(sc: Scores, key_bias: jax.Array | None, ctx: Context) -> jax.Array:
    r"""For every query $i$: $\log \sum_j \exp(\log w_{ij} + b_j)$ (block-wise over keys).

    Parameters
    ----------
    sc : Scores
        The score blocks of the cloud.
    key_bias : jax.Array or None
        `(N,)` key bias $b$ (`-inf` excludes a key) or `None`.
    ctx : Context
        Evaluation context.

    Returns
    -------
    jax.Array
        `(N,)` row log-sum-exps (the row term $c_{0,i}$ excluded).
    """
    m, l, _ = row_pass(sc, key_bias, None, ctx, with_values=False)
    return m + jnp.log(l)


def col_lse(sc: Scores, query_bias: jax.Array, ctx: Context) -> jax.Array:
    r"""For every key $j$: $\log \sum_i \exp(\log w_{ij} + b_i)$ (block-wise over queries).

    Parameters
    ----------
    sc : Scores
        The score blocks of the cloud.
    query_bias : jax.Array
        `(N,)` query bias $b$ (`-inf` excludes a query).
    ctx : Context
        Evaluation context.

    Returns
    -------
    jax.Array
        `(N,)` column log-sum-exps (including the key term $kc_j$ of the fast path, excluding the
        row term $c_{0,i}$).
    """
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
