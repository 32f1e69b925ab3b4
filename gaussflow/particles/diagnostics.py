r"""How far a cloud is from its mean-field limit: the effective number of keys per query.

Query $x_i$ averages the values $v_j$ with its normalised attention weights $w_{ij}$
($\sum_j w_{ij} = 1$). The mean-field velocity is an expectation under the tilted measure
$k(x_i, y)\,\mu(dy) / \int k(x_i, z)\,\mu(dz)$; the particles estimate it by the weighted
average over the $N$ keys, an importance-sampling estimate whose effective sample size is

$$ N_{\mathrm{eff}}(x_i) = \frac{1}{\sum_j w_{ij}^2}
   = \frac{(\sum_j k_{ij})^2}{\sum_j k_{ij}^2}, \qquad k_{ij} = k(x_i, x_j), $$

between 1 (all the weight on one key) and $N$ (uniform weights). When it falls to a few keys
the tilt lies in the tail of the sample (or outside it): the particle field is no Monte Carlo
estimate of the mean-field one any more, and closure and particles part whatever the closure's
accuracy. `effective_keys` computes it per query, block-wise over keys (two running
log-sum-exp passes, `gaussflow.particles.kernels.row_pass`:
$\log N_{\mathrm{eff}} = 2\,\mathrm{LSE}_j(s_{ij}) - \mathrm{LSE}_j(2 s_{ij})$ for the
log-weights $s_{ij} = \log k_{ij}$), so no $N \times N$ matrix and no overflow.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import as_array, as_scalar
from .kernels import Context, Scores, add_bias, is_attention, kernel_spec, row_pass
from .sinkhorn import sinkhorn_potentials
from .sampling import check_count

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..field import Field

#: Below this many effective keys per query (the minimum over queries) the validation warns.
EFFECTIVE_KEYS_WARN = 3.0

#: Normalisations with a weight distribution per query (`"none"` has unnormalised weights).
NORMALISED = ("softmax", "sinkhorn")


class _Doubled:
    r"""The scores of `sc` times two (`row_pass` of it gives $\mathrm{LSE}_j(2 s_{ij})$)."""

    def __init__(self, sc: Scores) -> None:
        self.q, self.values = sc.q, sc.values
        self.query_data, self.key_data = sc.query_data, sc.key_data
        self._sc = sc

    def logits(self, qd: tuple[jax.Array, ...], kd: tuple[jax.Array, ...]) -> jax.Array:
        """Twice the log-weights of `sc`."""
        return 2.0 * self._sc.logits(qd, kd)


def attention_parts(field: Field) -> list:
    """The attention fields with normalised weights inside `field` (itself or its sum parts).

    Parts whose velocity does not depend on the weights of a query (affine layers) and
    unnormalised attention (`"none"`) are left out."""
    if is_attention(field):
        return [field] if kernel_spec(type(field)).normalisation in NORMALISED else []
    out = []
    for p in getattr(field, "parts", ()) or ():
        out += attention_parts(p)
    return out


def _one(field, X, positions, ctx, t):
    """Per-query effective keys of one attention field (pure JAX)."""
    sc = Scores(kernel_spec(type(field)), field, X, t)
    n = X.shape[0]
    bias = sc.key_const
    if kernel_spec(type(field)).normalisation == "sinkhorn":
        # the row-conditional of the coupling: weights exp(log w_ij + g_j), normalised over j
        g, _, _ = sinkhorn_potentials(sc, jnp.full((n,), -math.log(n)), ctx)
        bias = add_bias(g, bias)
    m1, l1, _ = row_pass(sc, bias, positions, ctx, with_values=False)
    m2, l2, _ = row_pass(_Doubled(sc), None if bias is None else 2.0 * bias, positions, ctx,
                         with_values=False)
    return jnp.exp(2.0 * (m1 + jnp.log(l1)) - (m2 + jnp.log(l2)))


@eqx.filter_jit
def _effective_keys(fields, X, positions, ctx, t):
    """Elementwise minimum over `fields` of the per-query effective keys; `X` `(n_t, N, d)`."""

    def at(x):
        return jnp.min(jnp.stack([_one(f, x, positions, ctx, t) for f in fields]), axis=0)

    return jax.lax.map(at, X)


def effective_keys(field: Field, X: ArrayLike, *, t: float = 0.0,
                   positions: ArrayLike | None = None, block: int | None = None,
                   sinkhorn_tol: float = 1e-10, sinkhorn_max_iter: int = 1000) -> np.ndarray:
    r"""Effective number of keys of every query, $1 / \sum_j w_{ij}^2$ (see the module doc).

    Parameters
    ----------
    field : Field
        A softmax- or Sinkhorn-normalised attention field (`gf.Softmax`, `gf.L2`, your
        own `gf.Attention`), or a sum of fields with at least one such part (multi-head, or
        `Affine + Softmax`): the elementwise minimum over its attention parts (the most
        concentrated head). Sinkhorn fields use the row-conditional of the self-coupling,
        $w_{ij} \propto k_{ij} e^{g_j}$.
    X : array_like
        The cloud, shape `(N, d)`, or several clouds (e.g. the saved times of a trajectory),
        shape `(n_t, N, d)`.
    t : float
        The time at which a time-dependent declaration is evaluated.
    positions : array_like or None
        Causal mask (shape `(N,)`): query $i$ weighs the keys $j$ with
        `positions[j] <= positions[i]` (softmax only).
    block, sinkhorn_tol, sinkhorn_max_iter : int or None, float, int
        As in `gaussflow.particles.simulate`.

    Returns
    -------
    numpy.ndarray
        Shape `(N,)` (or `(n_t, N)`), values in $[1, N]$: $N$ for uniform weights, about
        1 when each query puts its weight on one key. A layer schedule (`gf.Layers`) has no
        single set of weights: pass the layer acting at the time of `X`.

    Raises
    ------
    TypeError
        For a layer schedule, a causal `gf.Masked` field (pass its inner field and the
        positions), or a field without softmax- or Sinkhorn-normalised attention.
    ValueError
        For a malformed `X`, a dimension mismatch, or `positions` with Sinkhorn parts.
    """
    X = as_array("X", X)
    if X.ndim not in (2, 3):
        raise ValueError(f"X must be one cloud (N, d) or a stack of clouds (n_t, N, d), got shape "
                         f"{X.shape}")
    stack = X if X.ndim == 3 else X[None]
    n, d = stack.shape[1:]
    if getattr(field, "dim", d) != d:
        raise ValueError(f"X has dimension {d} but the field acts on dimension {field.dim}")
    if isinstance(getattr(field, "fields", None), tuple):
        raise TypeError("effective_keys of a layer schedule (gf.Layers) is undefined: pass the "
                        "layer acting at the time of X, e.g. schedule.fields[k]")
    if getattr(type(field), "causal", False) and hasattr(field, "field"):
        raise TypeError("effective_keys of a causal field (gf.Masked): pass its inner field and "
                        "the token positions, effective_keys(masked.field, X, positions=positions)")
    fields = attention_parts(field)
    if not fields:
        kinds = {kernel_spec(type(f)).normalisation for f in _attention_leaves(field)}
        what = ("its attention is unnormalised (normalisation 'none': no weight distribution "
                "per query, the weights are averaged with 1/N)" if kinds else
                "it has no attention part (its velocity does not weigh keys)")
        raise TypeError(f"effective_keys needs softmax- or Sinkhorn-normalised attention, but "
                        f"{getattr(field, 'name', type(field).__name__)!r} has none: {what}")
    t = float(as_scalar("t", t))
    pos = None
    if positions is not None:
        pos = jnp.asarray(as_array("positions", positions, ndim=1, shape=(n,)), jnp.float64)
        if any(kernel_spec(type(f)).normalisation != "softmax" for f in fields):
            raise ValueError("positions (a causal mask) needs softmax normalisation; Sinkhorn "
                             "fields have no masked particle system")
    ctx = Context(block=None if block is None else check_count("block", block),
                  sinkhorn_tol=float(as_scalar("sinkhorn_tol", sinkhorn_tol, positive=True)),
                  sinkhorn_max_iter=check_count("sinkhorn_max_iter", sinkhorn_max_iter))
    out = np.asarray(_effective_keys(tuple(fields), jnp.asarray(stack), pos, ctx, jnp.asarray(t)))
    return out if X.ndim == 3 else out[0]


def _attention_leaves(field) -> list:
    if is_attention(field):
        return [field]
    return [q for p in getattr(field, "parts", ()) or () for q in _attention_leaves(p)]


def effective_keys_path(field: Field, ts: ArrayLike, xs: ArrayLike, *, t0: float = 0.0,
                        positions: ArrayLike | None = None,
                        **options: Any) -> np.ndarray | None:
    """`effective_keys` at every saved time of a trajectory, or `None` when `field` has
    no normalised attention (e.g. an affine layer, unnormalised attention).

    Parameters
    ----------
    field : Field
        As in `effective_keys`, or a layer schedule (`gf.Layers`): the layer acting
        at each time (the one whose interval `(t_start, t_end]` holds it; `t0` the first).
    ts : array_like
        The saved times, shape `(n_t,)`.
    xs : array_like
        The clouds, shape `(n_t, N, d)`.
    t0 : float
        The time the schedule starts.
    positions, **options
        As in `effective_keys`.

    Returns
    -------
    numpy.ndarray or None
        Shape `(n_t, N)`; rows of layers without normalised attention are NaN.
    """
    ts = np.asarray(as_array("ts", ts, ndim=1))
    xs = as_array("xs", xs, ndim=3, shape=(len(ts), None, None))
    fields, durations = getattr(field, "fields", None), getattr(field, "durations", None)
    if not (isinstance(fields, tuple) and isinstance(durations, tuple)):
        fields, durations = (field,), (np.inf,)
    ends = float(t0) + np.cumsum([float(v) for v in durations])
    seg = np.minimum(np.searchsorted(ends, ts, side="left"), len(fields) - 1)
    out = np.full(xs.shape[:2], np.nan)
    found = False
    for k in np.unique(seg):
        if not attention_parts(fields[k]):
            continue
        found = True
        for i in np.flatnonzero(seg == k):
            out[i] = effective_keys(fields[k], xs[i], t=float(ts[i]), positions=positions,
                                    **options)
    return out if found else None
