r"""Normalisations of attention weights. Each object owns the two things that must agree:

- its **derivation rule** (`Normalisation.derive`): from the declared score $s(x, y)$ and
  value map to the Gaussian closure, through the rules of `gaussflow.symbolic`;
- its **particle evaluation** (`Normalisation.particle_velocity`): the same weights on a
  cloud of $N$ tokens, through the block-wise passes of `gaussflow.particles`.

Built in: `SoftmaxNormalisation` ($e^{s}$ normalised over keys),
`SinkhornNormalisation` ($e^{s / \varepsilon}$ made doubly stochastic; the score declares the
$1/\varepsilon$) and `NoNormalisation` ($w(s)$ averaged over keys, not normalised, with
$w$ one of `"exp"`, `"sigmoid"`, `"linear"`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.numpy as jnp

from .._checks import as_scalar, positive_int
from ..symbolic.engine import derive_normalised_exp, derive_sinkhorn
from ..symbolic.projection import derive_linear, derive_sigmoid, derive_unnormalised_exp
from ..particles.kernels import add_bias, direct_pass, row_pass
from ..particles.sinkhorn import prefix_sinkhorn, sinkhorn_velocity
from ..quadrature import Cubature

if TYPE_CHECKING:
    from sympy import MatrixExpr

    from ..particles.kernels import Context, Scores
    from ..symbolic.derivation import Derivation

#: Default points per axis of the tensor Gauss-Hermite cubature of sigmoid weights, by dimension
#: (`cubature="auto"` uses it for $d \le 3$ and 4096 scrambled Sobol points above).
AUTO_ORDER = {1: 16, 2: 10, 3: 6}


class Normalisation:
    """How the weights $w(s(x, y))$ of the keys are normalised (abstract).

    `weight`: the weight function applied to the score (`"exp"`, `"sigmoid"`, `"linear"`);
    `kind`: the particle normalisation (`"softmax"`, `"none"`, `"sinkhorn"`);
    `supports_mask`: whether causal masks are supported (`gf.Masked`).
    """

    kind: ClassVar[str] = ""
    supports_mask: ClassVar[bool] = False
    weight: str = "exp"

    def derive(self, name: str, score: MatrixExpr, value: MatrixExpr,
               notes: Sequence[str] = ()) -> Derivation:
        """The `gaussflow.symbolic.Derivation` of a declaration with this normalisation.

        Parameters
        ----------
        name : str
            The declaration's name.
        score : MatrixExpr
            The score $s(x, y)$, a SymPy `(1, 1)` expression.
        value : MatrixExpr
            The value matrix of the value map.
        notes : Sequence of str
            The declaration's own remarks, appended to the document.

        Returns
        -------
        Derivation
            The symbolic derivation of the closure.
        """
        raise NotImplementedError

    def particle_velocity(self, sc: Scores, ctx: Context, positions: jax.Array | None = None,
                          log_a: jax.Array | None = None) -> jax.Array:
        """Velocities of every token of the cloud behind the score blocks `sc`.

        Parameters
        ----------
        sc : Scores
            The score blocks of the cloud (`gaussflow.particles.kernels.Scores`).
        ctx : Context
            Evaluation context.
        positions : jax.Array or None
            `(N,)` token positions of a causal mask, or `None`.
        log_a : jax.Array or None
            `(N,)` log-masses of the particles (`-inf` drops one), or `None` for uniform masses.

        Returns
        -------
        jax.Array
            `(N, d)` velocities.
        """
        raise NotImplementedError

    def options(self) -> dict:
        """Keyword options of a declaration's constructor that configure this rule, with their
        defaults (default none)."""
        return {}

    def bind_options(self, d: int, **options: Any) -> dict:
        """Numeric values of the rule's own parameters (by symbol name) from the options, for
        token dimension `d`."""
        return {}

    def describe(self) -> str:
        """The normalisation in words."""
        return type(self).__name__

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.weight == other.weight

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.weight))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxNormalisation(Normalisation):
    r"""Weights $e^{s(x, y)}$ normalised over $y \sim \mu$. Rule: tilt and complete the square
    (score quadratic in $y$); particles: block-wise log-sum-exp over keys (causal masks allowed)."""

    kind = "softmax"
    supports_mask = True

    def derive(self, name: str, score: MatrixExpr, value: MatrixExpr,
               notes: Sequence[str] = ()) -> Derivation:
        return derive_normalised_exp(name, score, value, notes)

    def particle_velocity(self, sc: Scores, ctx: Context, positions: jax.Array | None = None,
                          log_a: jax.Array | None = None) -> jax.Array:
        m, l, acc = row_pass(sc, add_bias(log_a, sc.key_const), positions, ctx)
        return acc / l[:, None]

    def describe(self) -> str:
        return "softmax over keys"


class SinkhornNormalisation(Normalisation):
    r"""Weights $e^{s(x, y)}$ scaled to be doubly stochastic w.r.t. $\mu \otimes \mu$ (the score
    states the temperature, e.g. $\beta \langle Q x, K y\rangle / \varepsilon$). Rule: the Gaussian
    Schrödinger system and conditioning (score jointly quadratic); particles: log-domain Sinkhorn
    on the cloud (Anderson-accelerated, `gaussflow.particles.sinkhorn`). Causal masks: each token
    moves under the Sinkhorn field of its prefix (the coupling of the prefix cloud with itself)."""

    kind = "sinkhorn"
    supports_mask = True

    def derive(self, name: str, score: MatrixExpr, value: MatrixExpr,
               notes: Sequence[str] = ()) -> Derivation:
        return derive_sinkhorn(name, score, value, notes)

    def particle_velocity(self, sc: Scores, ctx: Context, positions: jax.Array | None = None,
                          log_a: jax.Array | None = None) -> jax.Array:
        if positions is not None:
            return prefix_sinkhorn(sc, positions, log_a, ctx)[0]
        return sinkhorn_velocity(sc, log_a, ctx)

    def describe(self) -> str:
        return "doubly stochastic (Sinkhorn)"


class NoNormalisation(Normalisation):
    r"""Weights $w(s(x, y))$ averaged over $y \sim \mu$ without normalisation:
    $\Gamma(x) = \mathbb{E}_{Y \sim \mu}[w(s(x, Y))\, \mathrm{value}(Y)]$.

    `weight`: `"exp"` (unnormalised exponential: closed-form moment projection),
    `"sigmoid"` (Stein's lemma + Gauss–Hermite + cubature; options `gh_order`, `cubature`,
    `cubature_order`, `cubature_points`, `seed`) or `"linear"` ($w(s) = s$: exact when
    the velocity is affine). Particles: $\frac{1}{N} \sum_j w(s_{ij}) v_j$ (log-sum-exp stabilised
    for `"exp"`; bounded and linear weights summed directly; causal masks, linear weights only,
    average over the prefix). Raises `ValueError` for an unknown `weight`.
    """

    kind = "none"
    WEIGHTS = ("exp", "sigmoid", "linear")

    def __init__(self, weight: str = "exp") -> None:
        if weight not in self.WEIGHTS:
            raise ValueError(f"weight must be one of {self.WEIGHTS}, got {weight!r}")
        self.weight = weight

    @property
    def supports_mask(self) -> bool:  # type: ignore[override]
        """Whether causal masks are supported: linear weights only."""
        return self.weight == "linear"

    def derive(self, name: str, score: MatrixExpr, value: MatrixExpr,
               notes: Sequence[str] = ()) -> Derivation:
        if self.weight == "exp":
            return derive_unnormalised_exp(name, score, value, notes)
        if self.weight == "sigmoid":
            return derive_sigmoid(name, score, value, notes)
        return derive_linear(name, score, value, notes)

    def particle_velocity(self, sc: Scores, ctx: Context, positions: jax.Array | None = None,
                          log_a: jax.Array | None = None) -> jax.Array:
        n = sc.q.shape[0]
        if self.weight != "exp":
            a = jnp.full((n,), 1.0 / n) if log_a is None else jnp.exp(log_a)
            return direct_pass(sc, a, ctx, positions)
        if positions is not None:
            raise ValueError("causal masks are not supported with unnormalised exp weights")
        m, l, acc = row_pass(sc, add_bias(log_a, sc.key_const), None, ctx)
        m = add_bias(m, sc.row_const)
        out = jnp.exp(m)[:, None] * acc
        return out / n if log_a is None else out

    def options(self) -> dict:
        """The sigmoid rule's quadrature options and their defaults (none for other weights)."""
        if self.weight != "sigmoid":
            return {}
        return {"gh_order": 192, "cubature": "auto", "cubature_order": None,
                "cubature_points": 4096, "seed": 0}

    def bind_options(self, d: int, gh_order: int = 192, cubature: str = "auto",
                     cubature_order: int | None = None, cubature_points: int = 4096,
                     seed: int = 0) -> dict:
        r"""`n_GH` (Gauss–Hermite order, `gh_order`) and the `Cubature` rule of the sigmoid
        rule for token dimension `d` (`{}` for other weights).

        `cubature`: `"auto"` (`"gauss-hermite"` for $d \le 3$, else `"qmc"`),
        `"gauss-hermite"`, `"degree5"` or `"qmc"`; `cubature_order`: points per axis (default
        `AUTO_ORDER[d]`, 4 above $d = 3$); `cubature_points`, `seed`: the scrambled Sobol rule's
        size and seed. Raises `TypeError` for a `cubature` that is not a string.
        """
        if self.weight != "sigmoid":
            return {}
        if not isinstance(cubature, str):
            raise TypeError("cubature must be one of 'auto', 'gauss-hermite', 'degree5', 'qmc'; "
                            f"got {type(cubature).__name__}")
        if cubature == "auto":
            cubature = "gauss-hermite" if d <= 3 else "qmc"
        order = AUTO_ORDER.get(d, 4) if cubature_order is None else cubature_order
        rule = Cubature(cubature, positive_int("cubature_order", order),
                        positive_int("cubature_points", cubature_points),
                        int(as_scalar("seed", seed)))
        return {"n_GH": positive_int("gh_order", gh_order), "cubature": rule}

    def describe(self) -> str:
        return f"none ({self.weight} weights)"

    def __repr__(self) -> str:
        return f"NoNormalisation(weight={self.weight!r})"


__all__ = ["Normalisation", "SoftmaxNormalisation", "SinkhornNormalisation", "NoNormalisation"]
