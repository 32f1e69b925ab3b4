r"""Causal (masked) attention on a position-indexed family of Gaussians.

Tokens carry a position $s \in [0, 1]$; a token at $s$ attends only to tokens at $s' \le s$.
The state is one Gaussian per position block, `gaussflow.PositionalGaussians` ($B$ equal
blocks $[b/B, (b+1)/B)$, equal masses).

**Closure (approximate, `exact = False`).** Block $b$ moves under the inner field of its
prefix $\mu_{\le b} = \frac{1}{b+1} \sum_{c \le b} \mathcal{N}(\alpha_c, \Sigma_c)$ (blocks up to
and including its own), with the prefix mixture replaced by its moment-matched Gaussian (law of
total covariance, computed recursively), `gaussflow.symbolic.causal.derive_masked`. The inner
field must be exact (affine in $x$ under a Gaussian) and its particle system must support masks:
softmax-normalised declarations (softmax, L2, multi-head, your own), Sinkhorn, linear attention,
affine layers and sums of them. For a Sinkhorn inner field the block velocity is the Sinkhorn
closure of the prefix Gaussian (its self-coupling, conditioned on $x$) evaluated on block $b$'s
Gaussian; the particles are the causal particle Sinkhorn (each token under the Sinkhorn field of
its prefix cloud, `gaussflow.particles.prefix_sinkhorn`; $O(N^3)$ per sweep).
`gf.derive(gf.Masked(inner, B))` is the derivation whose generated functions
(`prefix_moments`, `block_closure`, `block_velocity`) this field runs.

Two approximations: the prefix mixture is moment-matched, and a token sees its whole block
(the particle system, `gaussflow.particles` with `positions`, sees only $s' \le s$; the
gap shrinks as $B$ grows). When every block carries the same Gaussian the prefix mixture *is*
that Gaussian, and the closure coincides with the unmasked one (tested).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from .. import particles, registry
from .._checks import as_array
from ..symbolic.causal import derive_masked
from ..gaussian import Gaussian, PositionalGaussians
from ..field import DerivedField, Field, cov_from_flow, realise
from .softmax import Softmax
from .superposition import Sum

if TYPE_CHECKING:
    from ..symbolic.derivation import Derivation


def _mask_support(field) -> str | None:
    """Why `field` cannot be masked, or `None` when it can."""
    if isinstance(field, Sum):
        for p in field.parts:
            why = _mask_support(p)
            if why:
                return why
        return None
    if not isinstance(field, DerivedField):
        return (f"{type(field).__name__} is not a declared variant (layer schedules and masked "
                "fields cannot be masked)")
    if not field.exact:
        return f"{type(field).__name__} is approximate; the mask rule needs an exact closure"
    norm = getattr(type(field), "normalisation", None)
    if norm is not None and not norm.supports_mask:
        return (f"{type(field).__name__} uses {norm.describe()} normalisation, whose particle "
                "system has no causal mask")
    return None


@functools.cache
def _masked_derivation(inner_derivation):
    return realise(derive_masked(inner_derivation))


class Masked(Field):
    """Causal masking of an exact field over `n_blocks` position blocks (approximate closure).

    `Masked(gf.Softmax(Q, K, V), n_blocks=B)` acts on `gaussflow.PositionalGaussians`
    with `B` blocks; `gf.solve` integrates it (`traj.means` has shape `(n, B, d)`,
    `traj.final` is a `PositionalGaussians`). See the module docstring for the closure.

    Parameters
    ----------
    field : Field
        The inner field: exact, with a particle system that supports causal masks (see the
        module docstring).
    n_blocks : int
        The number $B$ of position blocks, `>= 1`.

    Raises
    ------
    TypeError
        When `field` is not a gaussflow field.
    ValueError
        When `field` cannot be masked, or `n_blocks` is not a positive integer.
    """

    field: Field
    n_blocks: int = eqx.field(static=True)

    name = "masked"
    exact = False
    causal = True

    def __init__(self, field: Field, n_blocks: int) -> None:
        if not isinstance(field, Field):
            raise TypeError(f"field must be a gaussflow field (e.g. gf.Softmax(Q, K, V)), got "
                            f"{type(field).__name__}")
        why = _mask_support(field)
        if why:
            raise ValueError(f"gf.Masked cannot take this field: {why}. Supported: exact "
                             "declarations with softmax normalisation (softmax, L2, multi-head, "
                             "your own), Sinkhorn, linear attention, affine layers, and sums of "
                             "them")
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or n_blocks < 1:
            raise ValueError(f"n_blocks must be a positive integer, got {n_blocks!r}")
        self.field = field
        self.n_blocks = int(n_blocks)

    @property
    def dim(self) -> int:
        """The token dimension $d$ of the inner field."""
        return self.field.dim

    def derivation(self=None) -> Derivation:
        """The masked closure of the inner field (mixture rule and block ODEs); on the class, the
        masked softmax closure (`gf.derive("masked")`)."""
        inner = Softmax.derivation() if self is None else self.field.derivation()
        return _masked_derivation(inner)

    # -- state ---------------------------------------------------------------------------------
    def _check_state(self, g, argname="g"):
        if not isinstance(g, PositionalGaussians):
            raise TypeError(f"{argname} must be a gf.PositionalGaussians (one Gaussian per block), "
                            f"got {type(g).__name__}; e.g. gf.PositionalGaussians.repeat(g, "
                            f"{self.n_blocks})")
        if g.n_blocks != self.n_blocks:
            raise ValueError(f"{argname} has {g.n_blocks} blocks but the field has n_blocks="
                             f"{self.n_blocks}")
        if g.dim != self.dim:
            raise ValueError(f"{argname} has dimension {g.dim} but the field acts on dimension "
                             f"{self.dim}")

    # -- closure -------------------------------------------------------------------------------
    def _prefix(self, means, covs):
        r"""Moment-matched prefix Gaussians $(\alpha_{\le b}, \Sigma_{\le b})$ for every block."""
        mix = self.derivation().functions["prefix_moments"]

        def step(carry, inp):
            m_lt, S_lt = carry
            m, C, p = inp
            m_p, S_p = mix(m_lt[:, None], S_lt, m[:, None], C, p)
            S_p = (S_p + S_p.T) / 2
            return (m_p[:, 0], S_p), (m_p[:, 0], S_p)

        B = means.shape[0]
        ps = jnp.arange(B, dtype=means.dtype) / jnp.arange(1, B + 1, dtype=means.dtype)
        init = (jnp.zeros_like(means[0]), jnp.zeros_like(covs[0]))
        _, (mp, Sp) = jax.lax.scan(step, init, (means, covs, ps))
        return mp, Sp

    def _closure(self, t, means, covs):
        mp, Sp = self._prefix(means, covs)
        f = self.derivation().functions["block_closure"]
        args = self.field._args()

        def block(m, C, m_p, S_p):
            dm, J = f(t, m[:, None], C, m_p[:, None], S_p, *args)
            return dm[:, 0], J

        return jax.vmap(block)(means, covs, mp, Sp)

    def _moment_rhs(self, t, means, covs):
        dm, J = self._closure(t, means, covs)
        JS = J @ covs
        return dm, JS + jnp.swapaxes(JS, -1, -2)

    def _flow_rhs(self, t, means, Phi, covs0):
        dm, J = self._closure(t, means, cov_from_flow(Phi, covs0))
        return dm, J @ Phi

    def _domain_ok(self, t, means, covs):
        return jnp.asarray(True)

    def _velocity(self, t, means, covs, x, block):
        mp, Sp = self._prefix(means, covs)
        f = self.derivation().functions["block_velocity"]
        return f(t, x[:, None], mp[block][:, None], Sp[block], *self.field._args())[:, 0]

    # -- public --------------------------------------------------------------------------------
    def prefix(self, g: PositionalGaussians) -> PositionalGaussians:
        """The moment-matched prefix Gaussian of every block."""
        self._check_state(g)
        mp, Sp = _jit_prefix(self, g.means, g.covs)
        return PositionalGaussians(mp, Sp)

    def velocity(self, g: PositionalGaussians, x: ArrayLike, block: int,
                 t: float = 0.0) -> jax.Array:
        """Closure velocity of tokens `x` (`(..., d)`) in block `block` (0-based) at time `t`: the
        inner field's velocity under the block's prefix Gaussian (result of the shape of `x`)."""
        self._check_state(g)
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) \
                or not 0 <= block < self.n_blocks:
            raise ValueError(f"block must be an integer in [0, {self.n_blocks}), got {block!r}")
        x = as_array("x", x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        mp, Sp = _jit_prefix(self, g.means, g.covs)
        g_b = Gaussian(mp[int(block)], Sp[int(block)])
        return self.field.velocity(g_b, x, t)

    def moment_rhs(self, g: PositionalGaussians,
                   t: float = 0.0) -> tuple[jax.Array, jax.Array]:
        """`(d means/dt, d covs/dt)` at time `t`, shapes `(B, d)` and `(B, d, d)`."""
        self._check_state(g)
        return _jit_moment_rhs(self, jnp.asarray(float(t)), g.means, g.covs)

    # -- particles -----------------------------------------------------------------------------
    def _particle_velocity(self, X, ctx, positions=None, log_a=None, t=0.0):
        if positions is None:
            raise ValueError("a Masked field needs token positions: pass positions=... or "
                             "causal=True to gf.particles.simulate")
        return particles.particle_velocity(self.field, X, positions, ctx, log_a, t)

    def sample(self, g: PositionalGaussians, n_per_block: int, seed: int = 0,
               method: str = "random") -> tuple[np.ndarray, np.ndarray]:
        r"""Particles for the causal system: `(X, positions)`, block $b$ holding `n_per_block`
        samples of $\mathcal{N}$(`means[b]`, `covs[b]`) at evenly spaced positions inside
        $[b/B, (b+1)/B)$ (`X` sorted by position, shape `(B * n_per_block, d)`; block $b$ drawn
        from the seed `seed * 7919 + b`). `method`: `"random"`, `"antithetic"`, `"sobol"`
        (`gaussflow.particles.sample`); a Sobol block keeps its order, so every prefix of it is
        itself well spread (the joint empirical law of (position, value) still tends to
        uniform $\times$ Gaussian)."""
        self._check_state(g)
        if isinstance(n_per_block, bool) or not isinstance(n_per_block, (int, np.integer)) \
                or n_per_block < 1:
            raise ValueError(f"n_per_block must be a positive integer, got {n_per_block!r}")
        B, n = self.n_blocks, int(n_per_block)
        X = np.concatenate([np.asarray(particles.sample(g.block(b), n, seed=seed * 7919 + b,
                                                        method=method))
                            for b in range(B)])
        pos = (np.arange(B)[:, None] + (np.arange(n)[None, :] + 0.5) / n).reshape(-1) / B
        return X, pos


@eqx.filter_jit
def _jit_prefix(field, means, covs):
    return field._prefix(means, covs)


@eqx.filter_jit
def _jit_moment_rhs(field, t, means, covs):
    return field._moment_rhs(t, means, covs)


registry.register(Masked)
