r"""Particle dynamics: the empirical velocity field of a cloud and its integration in time.

`particle_velocity` evaluates $\Gamma[\mu^N]$ at every particle (attention fields through
their normalisation's block-wise passes, sums part by part, local fields particle by particle);
`simulate` / `simulate_batch` integrate $dx_i/dt = \Gamma[\mu^N](x_i)$ with diffrax
(layer schedules segment by segment) and return `ParticleTrajectory` records with their
status and, for Sinkhorn fields, a report of the Sinkhorn iterations at every saved time;
`velocity` is the field of one cloud.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field as dc_field
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .. import cache
from .._checks import as_array, as_scalar, check_times
from ..gaussian import Gaussian
from ..field import Field
from ..stepping import resolve_solver
from .factored import factored_scores
from .kernels import Context, Scores, is_attention, kernel_spec
from .sinkhorn import prefix_sinkhorn, sinkhorn_potentials, uniform_or
from .sampling import check_count, empirical_moments



def particle_velocity(field: Any, X: jax.Array, positions: jax.Array | None = None,
                      ctx: Context = Context(), log_a: jax.Array | None = None,
                      t: float | jax.Array = 0.0) -> jax.Array:
    r"""$\Gamma[\mu](x_i)$ at time `t` at every particle of the cloud `X` `(N, d)` for the
    empirical measure $\mu = \sum_j a_j \delta_{x_j}$ (`log_a` `(N,)`; `None`: uniform
    $a_j = 1/N$; entries `-inf` drop particles, e.g. padding). Pure JAX (traceable).
    `positions` `(N,)` or `None`: causal mask (see `gaussflow.particles`). Returns the `(N, d)`
    velocities; raises `TypeError` for a field without a particle system.
    """
    hook = getattr(field, "_particle_velocity", None)
    if callable(hook):
        return hook(X, ctx, positions=positions, log_a=log_a, t=t)
    parts = getattr(field, "parts", None)
    if isinstance(parts, tuple) and parts:
        out = [particle_velocity(p, X, positions, ctx, log_a, t) for p in parts]
        return functools.reduce(jnp.add, out)
    if is_attention(field):
        fs = factored_scores(field, X)  # gf.Softmax with narrow factors: O(N^2 k), not O(N^2 d)
        if fs is not None:
            out = type(field).normalisation.particle_velocity(fs, ctx, positions, log_a)
            return out @ fs.out.T
        sc = Scores(kernel_spec(type(field)), field, X, t)
        return type(field).normalisation.particle_velocity(sc, ctx, positions, log_a)
    if is_local(field):
        d = X.shape[1]
        return jax.vmap(lambda x: field._velocity(t, jnp.zeros((d,)), jnp.eye(d), x))(X)
    raise TypeError(f"{type(field).__name__} has no particle system: declare it as a "
                    "gf.Attention, or implement _particle_velocity(X, ctx, positions, log_a, t)")


def is_local(field: Any) -> bool:
    """True for derived fields whose velocity does not depend on the measure (e.g. affine)."""
    deriv = getattr(type(field), "derivation", None)
    if not callable(deriv):
        return False
    names = {s.name for s in deriv().velocity.free_symbols}
    return not names & {"alpha", "Sigma"}


def sinkhorn_fields(field: Any) -> list:
    """The Sinkhorn-normalised attention fields inside `field` (itself, sum parts, segments, the
    inner field of a causal `gf.Masked`)."""
    if is_attention(field) and kernel_spec(type(field)).normalisation == "sinkhorn":
        return [field]
    out = []
    inner = getattr(field, "field", None)
    if getattr(field, "causal", False) and inner is not None:
        out += sinkhorn_fields(inner)
    for p in getattr(field, "parts", ()) or ():
        out += sinkhorn_fields(p)
    for f, _ in _segments(field) or ():
        out += sinkhorn_fields(f)
    return out


def _segments(field):
    """`[(field, duration), ...]` of a layer schedule (`gf.Layers`), else `None`."""
    fields, durations = getattr(field, "fields", None), getattr(field, "durations", None)
    if isinstance(fields, tuple) and isinstance(durations, tuple):
        return list(zip(fields, durations))
    return None


# ----------------------------------------------------------------------------- integration
@dataclass(frozen=True)
class ParticleTrajectory:
    """Token positions of a particle simulation.

    `ts` `(n_t,)`, `xs` `(n_t, N, d)` NumPy arrays: the requested save times reached (all of them
    when `status == "completed"`). `status`: `"completed"`, `"max_steps"` or
    `"nonfinite"`; `t_stop`: the time the run stopped at; `num_steps`: solver steps;
    `positions`: the token positions of a causal run (else `None`); `field_name`: the field's
    name. `np.asarray(traj)` is `xs`. `info`: solver steps, and for Sinkhorn
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

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        return self.xs if dtype is None else self.xs.astype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of `xs`, `(n_t, N, d)`."""
        return self.xs.shape

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Empirical means `(n_t, d)` and covariances `(n_t, d, d)` (`1/N` normalisation)."""
        m, S = empirical_moments(self.xs)
        return np.asarray(m), np.asarray(S)

    def gaussians(self) -> list[Gaussian]:
        """The moment-matched `gaussflow.Gaussian` at each saved time."""
        m, S = self.moments()
        return [Gaussian(mi, Si) for mi, Si in zip(m, S)]

    def __repr__(self) -> str:
        return (f"ParticleTrajectory({self.field_name or 'field'}, status={self.status!r}, "
                f"N={self.xs.shape[1]}, d={self.xs.shape[2]}, n_saved={len(self.ts)}, "
                f"steps={self.num_steps})")


def _integrate_impl(field, x0s, log_as, positions, t0, t1, ts, ctx, solver, rtol, atol,
                    max_steps):
    """Integrate a batch of clouds `x0s` `(B, N, d)` (particle log-weights `log_as` `(B, N)` or
    `None`: uniform) over `[t0, t1]`, saving at `ts`."""

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
    if not isinstance(field, Field):
        raise TypeError(f"field must be a gaussflow field (e.g. gf.Softmax(Q, K, V)), got "
                        f"{type(field).__name__}")
    if field.dim != d:
        raise ValueError(f"x0 has dimension {d} but the field {field.name!r} acts on dimension "
                         f"{field.dim}")


def simulate_batch(field: Field, x0s: ArrayLike, ts: ArrayLike, *, t0: float = 0.0,
                   n_valid: Sequence[int] | None = None, positions: ArrayLike | None = None,
                   causal: bool = False, rtol: float = 1e-8, atol: float = 1e-10,
                   solver: diffrax.AbstractSolver | str | None = None, max_steps: int = 16384,
                   block: int | None = None, sinkhorn_tol: float = 1e-10,
                   sinkhorn_max_iter: int = 1000, sinkhorn_anderson: int = 10,
                   dense: bool = False) -> list[ParticleTrajectory]:
    """`simulate` for a batch of clouds `x0s` `(B, N, d)` sharing one compiled solve.

    Parameters
    ----------
    field : Field
        As in `simulate`.
    x0s : array_like
        Initial token positions of the `B` clouds, shape `(B, N, d)`.
    ts : array_like
        Save times, as in `simulate`.
    n_valid : Sequence of int or None
        `B` counts (optional): cloud `b` is `x0s[b, :n_valid[b]]`; the rest is padding
        (weight zero: it does not act on the others), so clouds of different sizes share one
        compilation. Not combined with causal positions.
    t0, positions, causal, rtol, atol, solver, max_steps, block
        As in `simulate`.
    sinkhorn_tol, sinkhorn_max_iter, sinkhorn_anderson, dense
        As in `simulate`.

    Returns
    -------
    list of ParticleTrajectory
        One per cloud, holding the valid particles only.
    """
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
    max_steps = check_count("max_steps", max_steps)
    if block is not None:
        block = check_count("block", block)
    stol = float(as_scalar("sinkhorn_tol", sinkhorn_tol, positive=True))
    smax = check_count("sinkhorn_max_iter", sinkhorn_max_iter)
    sand = _check_anderson(sinkhorn_anderson)
    pos = _check_positions(positions, causal, n)
    cache.ensure_enabled()  # the persistent compilation cache, once per process
    log_as = None
    if n_valid is not None:
        nv = [check_count(f"n_valid[{i}]", v)
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
    ctx = Context(block=block, dense=bool(dense), sinkhorn_tol=stol, sinkhorn_max_iter=smax,
                  sinkhorn_anderson=sand, n_prefixes=_n_prefixes(pos))
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
            info.update(_sinkhorn_report(sk, xb[ok], pos, ctx))
        trajs.append(ParticleTrajectory(
            ts=ts[ok], xs=xb[ok], status=status[b], t_stop=float(t_stop[b]),
            num_steps=int(steps[b]), positions=None if pos is None else np.asarray(pos),
            field_name=getattr(field, "name", type(field).__name__), info=info))
    return trajs


def _check_anderson(m):
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
        raise ValueError(f"sinkhorn_anderson must be an integer >= 0 (the Anderson memory; 0 for "
                         f"plain Sinkhorn), got {m!r}")
    return int(m)


def _n_prefixes(pos):
    """Number of distinct positions (a static bound for the causal Sinkhorn), or `None`."""
    return None if pos is None else int(np.unique(np.asarray(pos)).size)


@eqx.filter_jit
def _sinkhorn_at(f, X, pos, ctx):
    sc = Scores(kernel_spec(type(f)), f, X)
    if pos is not None:
        _, it, err = prefix_sinkhorn(sc, pos, None, ctx)
        return it, err
    _, it, err = sinkhorn_potentials(sc, uniform_or(None, X.shape[0]), ctx)
    return it, err


def _sinkhorn_report(fields, xs, pos, ctx):
    its, errs = [], []
    for X in xs:
        per = [_sinkhorn_at(f, jnp.asarray(X), pos, ctx) for f in fields]
        its.append(max(int(p[0]) for p in per))
        errs.append(max(float(p[1]) for p in per))
    return {"sinkhorn_iterations": its, "sinkhorn_marginal_error": errs,
            "sinkhorn_tol": ctx.sinkhorn_tol, "sinkhorn_max_iter": ctx.sinkhorn_max_iter,
            "sinkhorn_converged": bool(max(errs) <= ctx.sinkhorn_tol)}


def simulate(field: Field, x0: ArrayLike, ts: ArrayLike, *, t0: float = 0.0,
             positions: ArrayLike | None = None, causal: bool = False, rtol: float = 1e-8,
             atol: float = 1e-10, solver: diffrax.AbstractSolver | str | None = None,
             max_steps: int = 16384, block: int | None = None, sinkhorn_tol: float = 1e-10,
             sinkhorn_max_iter: int = 1000, sinkhorn_anderson: int = 10,
             dense: bool = False) -> ParticleTrajectory:
    r"""Integrate the $N$-token system $dx_i/dt = \Gamma[\mu^N](x_i)$ from `x0` `(N, d)`.

    Parameters
    ----------
    field : Field
        A gaussflow field (the same objects as the closures: `gf.Softmax`, sums, ...).
    x0 : array_like
        Initial token positions, shape `(N, d)` (e.g. `sample`).
    ts : array_like
        Save times, strictly increasing, `ts[0] >= t0`; the run ends at `ts[-1]`.
    t0 : float
        The start time.
    positions, causal : array_like or None, bool
        Causal mask (see `gaussflow.particles`); `positions` `(N,)` overrides.
    rtol, atol, solver, max_steps : float, float, diffrax.AbstractSolver or str or None, int
        diffrax `PIDController` tolerances, solver (default adaptive `Tsit5`; a solver or a
        name, as in `gf.solve`) and step budget.
    block : int or None
        Keys per block (default `BLOCK_ELEMENTS // N`).
    sinkhorn_tol, sinkhorn_max_iter : float, int
        Sinkhorn stopping rule.
    sinkhorn_anderson : int
        Anderson memory of the Sinkhorn iteration (0: plain Sinkhorn; see
        `gaussflow.particles.sinkhorn`).
    dense : bool
        `True` uses the full score matrix (reference, small $N$).

    Returns
    -------
    ParticleTrajectory
        `.xs` of shape `(len(ts), N, d)` when completed. Never raises on numerical events: see
        `status`.
    """
    x0 = as_array("x0", x0, ndim=2)
    return simulate_batch(field, np.asarray(x0)[None], ts, t0=t0, positions=positions,
                          causal=causal, rtol=rtol, atol=atol, solver=solver, max_steps=max_steps,
                          block=block, sinkhorn_tol=sinkhorn_tol,
                          sinkhorn_max_iter=sinkhorn_max_iter,
                          sinkhorn_anderson=sinkhorn_anderson, dense=dense)[0]


def velocity(field: Field, X: ArrayLike, *, positions: ArrayLike | None = None,
             causal: bool = False, block: int | None = None, dense: bool = False,
             sinkhorn_tol: float = 1e-10, sinkhorn_max_iter: int = 1000,
             sinkhorn_anderson: int = 10) -> jax.Array:
    r"""The empirical field $\Gamma[\mu^N](x_i)$ of the cloud `X` `(N, d)` at every particle
    `(N, d)`; the keyword options as in `simulate` (a layer schedule has no single velocity:
    `ValueError`)."""
    X = as_array("X", X, ndim=2)
    n, d = X.shape
    _check_field(field, d)
    if block is not None:
        block = check_count("block", block)
    stol = float(as_scalar("sinkhorn_tol", sinkhorn_tol, positive=True))
    smax = check_count("sinkhorn_max_iter", sinkhorn_max_iter)
    sand = _check_anderson(sinkhorn_anderson)
    pos = _check_positions(positions, causal, n)
    ctx = Context(block=block, dense=bool(dense), sinkhorn_tol=stol, sinkhorn_max_iter=smax,
                  sinkhorn_anderson=sand, n_prefixes=_n_prefixes(pos))
    segs = _segments(field)
    if segs is not None:
        raise ValueError("a layer schedule has no single velocity; pass one of its fields")
    return jit_velocity(field, jnp.asarray(X), pos, ctx)


@eqx.filter_jit
def jit_velocity(field: Any, X: jax.Array, pos: jax.Array | None, ctx: Context,
                 log_a: jax.Array | None = None) -> jax.Array:
    """`particle_velocity` at `t = 0`, compiled (`eqx.filter_jit`; `ctx` static)."""
    return particle_velocity(field, X, pos, ctx, log_a)
