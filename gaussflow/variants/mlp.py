r"""MLP layer as a velocity field: $\Gamma(x) = W_2\, s(W_1 x + b_1) + b_2$.

$s$ is GELU (erf form, $z \Phi(z)$), ReLU, tanh or the logistic sigmoid, entrywise. The field
does not depend on the token distribution; its Gaussian closure is the moment projection of
`gaussflow.symbolic.stein.derive_mlp` (`exact = False`): one-dimensional expectations over the
pre-activations, in closed form for GELU and ReLU, by Gauss–Hermite quadrature (`gh_order`
points) for tanh and sigmoid. The error against particles is measured by `gaussflow.validate`
(README, "Approximate closures: measured error").
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

import equinox as eqx

from .. import registry
from .._checks import as_array
from ..codegen import compile_source, generate_function
from ..field import DerivedField, as_weight, realise
from ..gaussian import example_state
from ..quadrature import gauss_hermite
from ..symbolic.derivation import Derivation
from ..symbolic.stein import ACTIVATIONS, activation_of, derive_mlp, helper_programs

if TYPE_CHECKING:
    from ..gaussian import Gaussian


def gh_expect(f: Callable[[jax.Array], jax.Array], mu: ArrayLike, s: ArrayLike,
              n: int) -> jax.Array:
    r"""$E[f(\mu + s\xi)]$, $\xi \sim \mathcal N(0, 1)$, entrywise, by `n`-point Gauss–Hermite
    (`n` static; `mu`, `s` broadcast together)."""
    u, w = gauss_hermite(int(n))
    zz = jnp.asarray(mu)[..., None] + jnp.asarray(s)[..., None] * jnp.asarray(u)
    return jnp.sum(f(zz) * jnp.asarray(w), axis=-1)


def step(z: ArrayLike) -> jax.Array:
    r"""The Heaviside step $H(z)$, $H(0) = 1/2$ (the node `HeavisideStep`)."""
    return jnp.heaviside(z, 0.5)


@functools.cache
def _runtime(activation: str) -> dict[str, Any]:
    """The compiled entrywise helpers of `activation` (so that sums, whose generated code does
    not repeat them, still find them) and `_gh_expect`."""
    base = {"_gh_expect": gh_expect, "_step": step}
    src = "\n".join(generate_function(p.name, p.args, p.outputs, doc=p.doc)
                    for p in helper_programs(activation))
    return {**base, **compile_source(src, base)}


@functools.cache
def _mlp_derivation(activation: str) -> Derivation:
    D = derive_mlp("mlp", activation)
    return realise(dataclasses.replace(D, runtime={**D.runtime, **_runtime(activation)}))


class _PerActivation:
    """`MLP.derivation()`: the derivation of the field's activation (on the class: GELU)."""

    def __get__(self, obj, cls):
        act = "gelu" if obj is None else obj.activation
        return lambda: _mlp_derivation(act)


class MLP(DerivedField):
    r"""The feed-forward field $\Gamma(x) = W_2\, s(W_1 x + b_1) + b_2$.

    An approximate closure (moment projection; see the module docstring and
    `gaussflow.derive(mlp)`). Each particle moves by the MLP velocity.

    Parameters
    ----------
    W1 : ArrayLike
        Shape `(m, d)`.
    b1 : ArrayLike or None
        Shape `(m,)`; `None`: zero.
    W2 : ArrayLike
        Shape `(d, m)`.
    b2 : ArrayLike or None
        Shape `(d,)`; `None`: zero.
    activation : str
        `"gelu"` (erf form), `"relu"`, `"tanh"` or `"sigmoid"`.
    gh_order : int
        Gauss–Hermite points for tanh and sigmoid (unused by GELU and ReLU), at most 350.
        Measured error of $E[\tanh(\mu + s\xi)]$ against mpmath at $s = 3$: $10^{-5}$ with
        128 points, $8 \cdot 10^{-8}$ with 256 (the default), $10^{-9}$ with 350; below
        $10^{-12}$ for $s \le 1$.

    Raises
    ------
    ValueError
        For shapes that do not match, an unknown activation or a bad `gh_order`.
    """

    W1: jax.Array
    b1: jax.Array
    W2: jax.Array
    b2: jax.Array
    activation: str = eqx.field(static=True)
    gh_order: int = eqx.field(static=True)

    name = "mlp"
    exact = False

    def __init__(self, W1: ArrayLike, b1: ArrayLike | None, W2: ArrayLike,
                 b2: ArrayLike | None = None, activation: str = "gelu",
                 gh_order: int = 256) -> None:
        activation_of(activation)
        if isinstance(gh_order, bool) or not isinstance(gh_order, (int, np.integer)) \
                or not 2 <= gh_order <= 350:
            raise ValueError(f"gh_order must be an integer in [2, 350] (NumPy's nodes overflow "
                             f"beyond), got {gh_order!r}")
        W1 = as_weight("W1", W1)
        m, d = W1.shape
        W2 = as_weight("W2", W2, shape=(d, m))
        b1 = jnp.zeros(m) if b1 is None else as_array("b1", b1, ndim=1, shape=(m,))
        b2 = jnp.zeros(d) if b2 is None else as_array("b2", b2, ndim=1, shape=(d,))
        self.W1, self.W2 = W1, W2
        self.b1 = jnp.asarray(b1, dtype=jnp.float64)
        self.b2 = jnp.asarray(b2, dtype=jnp.float64)
        self.activation = activation.lower()
        self.gh_order = int(gh_order)

    derivation = _PerActivation()

    @property
    def dim(self) -> int:
        return self.W1.shape[1]

    @classmethod
    def input_keys(cls) -> tuple:
        """`(required, optional)` keys of `gaussflow solve --input`."""
        return ("W1", "W2"), ("b1", "b2")

    @classmethod
    def from_inputs(cls, W1: ArrayLike, W2: ArrayLike, b1: ArrayLike | None = None,
                    b2: ArrayLike | None = None) -> MLP:
        """The field from the named inputs of `gaussflow solve --input` (GELU)."""
        return cls(W1, b1, W2, b2)

    @classmethod
    def example(cls, d: int = 3, seed: int = 0, scale: float = 0.5, width: int | None = None,
                activation: str = "gelu") -> tuple[MLP, Gaussian, float]:
        r"""A validation problem `(field, g0, t1)` with random weights from `seed`.

        Width $m = 2d$; $W_1 = \mathtt{scale}\, G_1/\sqrt d$, $W_2 = G_2 / \sqrt m$ ($G_i$
        standard normal), $b_1 \sim 0.1\, N(0, I)$, $b_2 = 0$, `t1 = 1`; `g0` as in
        `gaussflow.Attention.example`.
        """
        rng = np.random.default_rng(seed)
        g0 = example_state(rng, d)
        m = 2 * d if width is None else int(width)
        W1 = scale * rng.normal(size=(m, d)) / np.sqrt(d)
        W2 = rng.normal(size=(d, m)) / np.sqrt(m)
        return cls(W1, 0.1 * rng.normal(size=m), W2, None, activation), g0, 1.0

    def _param_values(self) -> dict:
        return {"W1": self.W1, "b1": self.b1[:, None], "W2": self.W2, "b2": self.b2[:, None],
                "n_GH": self.gh_order}


__all__ = ["MLP", "ACTIVATIONS", "gh_expect", "step"]

registry.register(MLP)
