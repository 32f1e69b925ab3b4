"""Causal (masked) attention on a position-indexed family of Gaussians.

Tokens carry a position ``s in [0, 1]``; a token at ``s`` attends only to tokens at ``s' <= s``
(softmax over its prefix). The state is one Gaussian per position block,
:class:`~gaussflow.PositionalGaussians` (``B`` equal blocks ``[b/B, (b+1)/B)``, equal masses).

**Closure (approximate, ``exact = False``).** Block ``b`` moves under the field of its prefix
``mu_{<=b} = (1/(b+1)) sum_{c <= b} N(alpha_c, Sigma_c)`` (blocks up to and including its own),
with the prefix mixture replaced by its moment-matched Gaussian ``N(alpha_{<=b}, Sigma_{<=b})``
(law of total covariance, computed recursively:
``alpha_{<=b} = p alpha_{<b} + (1 - p) alpha_b``,
``Sigma_{<=b} = p Sigma_{<b} + (1 - p) Sigma_b + p (1 - p) D D^T``, ``D = alpha_{<b} - alpha_b``,
``p = b / (b + 1)``). The inner field (softmax, or any exact field) is affine in x under a
Gaussian, so each block stays Gaussian:
``d alpha_b/dt = Gamma_{<=b}(alpha_b)``, ``d Sigma_b/dt = J_b Sigma_b + Sigma_b J_b^T``.

Two approximations: the prefix mixture is moment-matched, and a token sees its whole block
(the particle system, :mod:`gaussflow.particles` with ``positions``, sees only ``s' <= s``; the
gap shrinks as ``B`` grows). When every block carries the same Gaussian the prefix mixture *is*
that Gaussian, and the closure coincides with the unmasked one (tested).
"""

from __future__ import annotations

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from sympy import MatrixSymbol

from .._checks import as_array
from ..codegen import generate_function
from ..derive import symbols as S
from ..derive.calculus import affine_closure, moment_match_mixture, simplify_matrix
from ..derive.derivation import Step
from ..derive.engine import build
from ..gaussian import Gaussian, PositionalGaussians
from .base import Field

#: Symbols of the masked derivation: prefix moments and the mixture weight.
ALPHA_LT = MatrixSymbol("alpha_lt", S.d, 1)
SIGMA_LT = MatrixSymbol("Sigma_lt", S.d, S.d)
ALPHA_P = MatrixSymbol("alpha_p", S.d, 1)
SIGMA_P = MatrixSymbol("Sigma_p", S.d, S.d)
P = sp.Symbol("p", nonnegative=True)


class Masked(Field):
    """Causal masking of an exact field over ``n_blocks`` position blocks (approximate closure).

    ``Masked(gf.Softmax(Q, K, V), n_blocks=B)`` acts on :class:`~gaussflow.PositionalGaussians`
    with ``B`` blocks; ``gf.solve`` integrates it (``traj.means`` has shape ``(n, B, d)``,
    ``traj.final`` is a ``PositionalGaussians``). See the module docstring for the closure.
    """

    field: Field
    n_blocks: int = eqx.field(static=True)

    name = "masked"
    exact = False
    causal = True

    def __init__(self, field, n_blocks):
        if not isinstance(field, Field):
            raise TypeError(f"field must be a gaussflow field (e.g. gf.Softmax(Q, K, V)), got "
                            f"{type(field).__name__}")
        if not field.exact:
            raise ValueError(f"field must be an exact (affine-closure) field such as gf.Softmax; "
                             f"{getattr(field, 'name', type(field).__name__)!r} is approximate")
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or n_blocks < 1:
            raise ValueError(f"n_blocks must be a positive integer, got {n_blocks!r}")
        self.field = field
        self.n_blocks = int(n_blocks)

    @property
    def dim(self) -> int:
        return self.field.dim

    @classmethod
    def derivation(cls):
        """The masked softmax closure (the mixture rule and the block ODEs), derived once."""
        return _masked_derivation()

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
        """Moment-matched prefix Gaussians ``(alpha_{<=b}, Sigma_{<=b})`` for every block."""
        mix = _masked_derivation().functions["prefix_moments"]

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

    def _closure(self, means, covs):
        mp, Sp = self._prefix(means, covs)
        inner = self.field
        dm = jax.vmap(inner._velocity)(mp, Sp, means)
        J = jax.vmap(lambda m, C: inner._closure(m, C)[1])(mp, Sp)
        return dm, J

    def _moment_rhs(self, means, covs):
        dm, J = self._closure(means, covs)
        JS = J @ covs
        return dm, JS + jnp.swapaxes(JS, -1, -2)

    def _domain_ok(self, means, covs):
        mp, Sp = self._prefix(means, covs)
        return jnp.all(jax.vmap(self.field._domain_ok)(mp, Sp))

    def _velocity(self, means, covs, x, block):
        mp, Sp = self._prefix(means, covs)
        return self.field._velocity(mp[block], Sp[block], x)

    # -- public --------------------------------------------------------------------------------
    def prefix(self, g: PositionalGaussians) -> PositionalGaussians:
        """The moment-matched prefix Gaussian of every block."""
        self._check_state(g)
        mp, Sp = _jit_prefix(self, g.means, g.covs)
        return PositionalGaussians(mp, Sp)

    def velocity(self, g, x, block):
        """Closure velocity of tokens ``x`` (``(..., d)``) in block ``block`` (0-based)."""
        self._check_state(g)
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) \
                or not 0 <= block < self.n_blocks:
            raise ValueError(f"block must be an integer in [0, {self.n_blocks}), got {block!r}")
        x = as_array("x", x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        mp, Sp = _jit_prefix(self, g.means, g.covs)
        g_b = Gaussian(mp[int(block)], Sp[int(block)])
        return self.field.velocity(g_b, x)

    def moment_rhs(self, g):
        """``(d means/dt, d covs/dt)``, shapes ``(B, d)`` and ``(B, d, d)``."""
        self._check_state(g)
        return _jit_moment_rhs(self, g.means, g.covs)

    # -- particles -----------------------------------------------------------------------------
    def _particle_velocity(self, X, ctx, positions=None, log_a=None):
        from ..particles import particle_velocity

        if positions is None:
            raise ValueError("a Masked field needs token positions: pass positions=... or "
                             "causal=True to gf.particles.simulate")
        return particle_velocity(self.field, X, positions, ctx, log_a)

    def sample(self, g: PositionalGaussians, n_per_block: int, seed=0, method="random"):
        """Particles for the causal system: ``(X, positions)``, block ``b`` holding ``n_per_block``
        samples of ``N(means[b], covs[b])`` at evenly spaced positions inside ``[b/B, (b+1)/B)``
        (``X`` sorted by position, shape ``(B * n_per_block, d)``). ``method``: ``"random"`` or
        ``"sobol"`` (see :func:`gaussflow.particles.sample`); a Sobol block keeps the sequence's
        order, so every prefix of it is itself well spread (the joint empirical law of (position,
        value) still tends to uniform x Gaussian)."""
        from .. import particles

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
def _jit_moment_rhs(field, means, covs):
    return field._moment_rhs(means, covs)


@functools.cache
def _masked_derivation():
    """Derive the masked softmax closure: mixture moment matching + the affine closure rule."""
    from .softmax import Softmax

    sym = (S.Sigma, SIGMA_LT, SIGMA_P)
    mix = moment_match_mixture([P, 1 - P], [ALPHA_LT, S.alpha], [SIGMA_LT, S.Sigma])
    base = Softmax.derivation()
    velocity = simplify_matrix(base.velocity.xreplace({S.alpha: ALPHA_P, S.Sigma: SIGMA_P}), sym)
    cl = affine_closure(velocity, S.x, S.alpha, S.Sigma, (SIGMA_P,))
    steps = [
        Step("Causal kernel",
             "A token at position $s$ weighs a key at $s'$ by $\\exp(s(x, y))\\,1\\{s' \\le s\\}$, "
             "normalised over its prefix. With $B$ blocks of equal mass, block $b$ sees the "
             "mixture $\\mu_{\\le b} = \\frac{1}{b+1}\\sum_{c \\le b} \\mathcal N(\\alpha_c, \\Sigma_c)$ "
             "(its own block included).", ((r"\log k(x, y)", Softmax.log_kernel()),)),
        Step("Moment-matched prefix (mixture rule)",
             "Replace the prefix mixture by the Gaussian with its mean and covariance (law of total "
             "covariance), recursively: $\\mu_{\\le b} = p\\,\\mu_{<b} + (1-p)\\,\\mathcal N(\\alpha, "
             "\\Sigma)$ with $p = b/(b+1)$:",
             ((r"\alpha_{\le b}", mix.mean), (r"\Sigma_{\le b}", mix.cov))),
        Step("Block velocity",
             "Block $b$ moves under the softmax field of $\\mathcal N(\\alpha_p, \\Sigma_p) = "
             "\\mathcal N(\\alpha_{\\le b}, \\Sigma_{\\le b})$ (from `gaussflow derive softmax`):",
             ((r"\Gamma_{\le b}(x)", velocity),)),
        Step("Affine closure per block",
             "$\\Gamma_{\\le b}$ is affine in $x$, so block $b$ (law $\\mathcal N(\\alpha, \\Sigma)$) "
             "stays Gaussian:",
             (("J_b", cl.jacobian), (r"\frac{d\alpha_b}{dt}", cl.mean_rhs),
              (r"\frac{d\Sigma_b}{dt}", cl.cov_rhs))),
    ]
    notes = (
        "Approximation: each prefix mixture is moment-matched to one Gaussian, and a token sees "
        "its whole block; exact when every block carries the same Gaussian (then the prefix "
        "mixture is that Gaussian and the closure is the unmasked softmax closure).",
        "alpha, Sigma in the generated code are the block's own moments; alpha_p, Sigma_p its "
        "prefix moments (from prefix_moments). gf.Masked applies the same rule to any exact field.",
    )
    D = build("masked", False, velocity, cl.mean_rhs, cl.jacobian, cl.cov_rhs, steps, (), notes)
    extra = generate_function("prefix_moments", (ALPHA_LT, SIGMA_LT, S.alpha, S.Sigma, P),
                              [mix.mean, mix.cov],
                              doc="Moments of p N(alpha_lt, Sigma_lt) + (1 - p) N(alpha, Sigma).")
    return dataclasses.replace(D, jax_source=D.jax_source + "\n" + extra)
