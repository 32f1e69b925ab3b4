r"""The engine every variant sits on.

A *field* is a velocity field $\Gamma[\mu](x)$ depending on the token distribution $\mu$ and on
the time (depth) $t$. Every field exposes, for $\mu = \mathcal N(\alpha, \Sigma)$:

- `_velocity(t, mean, cov, x)`: $\Gamma(x)$ for one token `x` of shape `(d,)`;
- `_closure(t, mean, cov)`: $(d\alpha/dt, J)$ where $d\Sigma/dt = J \Sigma + \Sigma J^\top$
  ($J$ is the Jacobian of an affine field, or $E[\nabla\Gamma(X)]$ for a moment closure);
- `_moment_rhs(t, mean, cov)`: $(d\alpha/dt, d\Sigma/dt)$;
- `_flow_rhs(t, mean, Phi, cov0)`: the solver's right-hand side in
  $\Sigma = \Phi \Sigma_0 \Phi^\top$;
- `_domain_ok(t, mean, cov)`: `False` where an approximate closure's integrals stop existing.

These are pure JAX functions (traceable, differentiable, vmappable); fields are equinox Modules,
hence pytrees. `DerivedField` gets them from the generated code of its
`gaussflow.symbolic.Derivation`, derived and compiled once per process (`realise`).
The public methods `velocity`/`moment_rhs` validate their inputs and run jitted versions.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from ._checks import as_array, as_scalar
from .codegen import compile_source, generate_function
from .codegen.compile import NUMPY_RUNTIME, RUNTIME, names_used
from .symbolic.derivation import Derivation
from .gaussian import Gaussian


def cov_from_flow(Phi: jax.Array, cov0: jax.Array) -> jax.Array:
    r"""$\Sigma = \Phi \Sigma_0 \Phi^\top$ (symmetrised; leading axes are blocks or save times)."""
    if isinstance(Phi, np.ndarray) and isinstance(cov0, np.ndarray):  # NumPy engine: stacks
        S = Phi @ cov0 @ Phi.mT
        return (S + S.mT) / 2
    S = jnp.einsum("...ij,...jk,...lk->...il", Phi, cov0, Phi)
    return (S + jnp.swapaxes(S, -1, -2)) / 2


class Field(eqx.Module):
    """Abstract mean-field velocity field. Subclasses set `name` and `exact`."""

    name: ClassVar[str] = "field"
    exact: ClassVar[bool] = True

    # -- to implement ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """The token dimension $d$ the field acts on."""
        raise NotImplementedError

    def _velocity(self, t, mean, cov, x):
        raise NotImplementedError

    def _closure(self, t, mean, cov):
        raise NotImplementedError

    def _moment_rhs(self, t, mean, cov):
        dm, J = self._closure(t, mean, cov)
        JS = J @ cov
        return dm, JS + JS.T

    def _flow_rhs(self, t, mean, Phi, cov0):
        r"""$(d\alpha/dt,\ d\Phi/dt = J \Phi)$ for the solver's state
        $\Sigma = \Phi \Sigma_0 \Phi^\top$."""
        dm, J = self._closure(t, mean, cov_from_flow(Phi, cov0))
        return dm, J @ Phi

    def _domain_ok(self, t, mean, cov):
        """False where the closure's integrals stop existing (approximate closures override)."""
        return jnp.asarray(True)

    # -- public API --------------------------------------------------------------------------
    def _check_state(self, g, argname="g"):
        if not isinstance(g, Gaussian):
            raise TypeError(f"{argname} must be a gf.Gaussian, got {type(g).__name__}; "
                            "wrap it as gf.Gaussian(mean, cov)")
        if g.dim != self.dim:
            raise ValueError(f"{argname} has dimension {g.dim} but the field {self.name!r} acts "
                             f"on dimension {self.dim}")

    def velocity(self, g: Gaussian, x: ArrayLike, t: float = 0.0) -> jax.Array:
        r"""$\Gamma[\mathcal N(\mathtt{g.mean}, \mathtt{g.cov})](x)$ at time `t` for tokens `x`
        of shape `(..., d)` (the result has the shape of `x`)."""
        self._check_state(g)
        x = as_array("x", x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        t = as_scalar("t", t)
        flat = jnp.reshape(jnp.asarray(x), (-1, self.dim))
        out = _jit_velocity(self, jnp.asarray(t, float), g.mean, g.cov, flat)
        return jnp.reshape(out, x.shape)

    def moment_rhs(self, g: Gaussian, t: float = 0.0) -> tuple[jax.Array, jax.Array]:
        """`(d mean/dt, d cov/dt)` of the Gaussian closure at `g` and time `t`."""
        self._check_state(g)
        t = as_scalar("t", t)
        return _jit_moment_rhs(self, jnp.asarray(t, float), g.mean, g.cov)

    def __add__(self, other):
        if not isinstance(other, Field):
            return NotImplemented
        if not _SUM:
            raise TypeError("field sums need gaussflow.variants (import gaussflow first)")
        return _SUM[0].of(self, other)


#: The class of `f1 + f2` (`gaussflow.variants.superposition.Sum`, which registers itself
#: with `register_sum`; the superposition layer sits above this module).
_SUM: list = []


def register_sum(cls: type) -> None:
    """Make `cls` (a `Sum` class with a classmethod `of(a, b)`) the class of `f1 + f2`."""
    _SUM[:] = [cls]


@eqx.filter_jit
def _jit_velocity(field, t, mean, cov, xs):
    return jax.vmap(lambda x: field._velocity(t, mean, cov, x))(xs)


@eqx.filter_jit
def _jit_moment_rhs(field, t, mean, cov):
    return field._moment_rhs(t, mean, cov)


def realise(derivation: Derivation) -> Derivation:
    """Print a symbolic derivation's programs as JAX source and compile them: the derivation with
    `jax_source`, `functions` and `matmul_functions` filled in (returned as is when they already
    are).

    The programs are printed twice from the same expressions: `jax_source` with products as
    `A @ B` (the documented text; compiled into `matmul_functions`), and the source that runs,
    compiled into `functions`, with products as `_mm(A, B)`
    (`gaussflow.codegen.compile.matmul_by_size`: multiply-adds when the inner dimension is
    small, `@` above), the layout that is fast for the small matrices of a sweep.
    """
    if derivation.functions:
        return derivation
    runtime = dict(derivation.runtime)
    src = program_source(derivation, "matmul")
    return dataclasses.replace(derivation, jax_source=src,
                               functions=compile_source(program_source(derivation, "by_size"),
                                                        runtime),
                               matmul_functions=compile_source(src, runtime))


def program_source(derivation: Derivation, products: str) -> str:
    """The source of a derivation's programs, products printed in style `products`
    (`gaussflow.codegen.printer.PRODUCT_STYLES`)."""
    header = f"# gaussflow generated code: {derivation.name} closure. Vectors are (n, 1) columns.\n"
    return "\n".join([header] + [
        generate_function(p.name, p.args, list(p.outputs), doc=p.doc, symmetric=p.symmetric,
                          constants=p.constants, state=p.state, products=products)
        for p in derivation.programs])


@functools.cache
def stacked_numpy_functions(cls: type) -> dict | None:
    """The generated programs of a `DerivedField` class printed for stacks of members
    (`products="stacked"`) and compiled against NumPy (`NUMPY_RUNTIME`), once per class and
    process; `None` when the source names a JAX-only runtime helper (e.g. a PSD square root)."""
    derivation = cls.derivation()
    src = program_source(derivation, "stacked")
    helpers = (set(RUNTIME) | set(derivation.runtime)) - set(NUMPY_RUNTIME)
    if names_used(src) & helpers:
        return None
    return compile_source(src, runtime=NUMPY_RUNTIME)


class DerivedField(Field):
    """A field whose closure is derived symbolically from a declaration.

    Subclasses implement the classmethod `_derive()` (returning a symbolic
    `gaussflow.symbolic.Derivation`) and `_param_values()` (the numeric value of each derivation
    parameter, by symbol name). `derivation()` realises it once per class and process.
    """

    @classmethod
    def _derive(cls):
        raise NotImplementedError

    @classmethod
    def derivation(cls) -> Derivation:
        """The class's `gaussflow.symbolic.Derivation`, with its generated JAX (once per
        process)."""
        return _derivation_of(cls)

    def _param_values(self) -> dict:
        raise NotImplementedError

    def _args(self):
        vals = self._param_values()
        return [vals[p.name] for p in self.derivation().params]

    def _has_domain_check(self) -> bool:
        """Whether `_domain_ok` can be `False` (the NumPy engine runs fields without one)."""
        return type(self)._domain_ok is not Field._domain_ok

    def _closure_is_generated(self) -> bool:
        """Whether `_closure` is exactly the generated `closure` (then the generated `flow_rhs`
        is its flow-map form); subclasses that alter the closure say `False`."""
        return type(self)._closure is DerivedField._closure

    def _velocity(self, t, mean, cov, x):
        f = self.derivation().functions["velocity"]
        return f(t, x[:, None], mean[:, None], cov, *self._args())[:, 0]

    def _closure(self, t, mean, cov):
        f = self.derivation().functions["closure"]
        dm, J = f(t, mean[:, None], cov, *self._args())
        return dm[:, 0], J

    def _moment_rhs(self, t, mean, cov):
        f = self.derivation().functions["moment_rhs"]
        dm, dS = f(t, mean[:, None], cov, *self._args())
        return dm[:, 0], dS

    def _flow_rhs(self, t, mean, Phi, cov0):
        # The generated flow_rhs forms Q Phi, K Phi first (accurate where Sigma collapses); only
        # when the closure is the generated one (subclasses may override _closure).
        f = self.derivation().functions.get("flow_rhs")
        if f is None or not self._closure_is_generated():
            return super()._flow_rhs(t, mean, Phi, cov0)
        dm, dPhi = f(t, mean[:, None], Phi, cov0, *self._args())
        return dm[:, 0], dPhi


@functools.cache
def _derivation_of(cls):
    return realise(cls._derive())


class StaticKey:
    """The non-array part of a field (`eqx.partition(field, eqx.is_array)[1]`) as a hashable key:
    its tree structure and static leaves (a declaration's `params` dict is not hashable itself).
    `.tree` is the part, for `eqx.combine`."""

    def __init__(self, tree: Any):
        self.tree = tree
        leaves, self.treedef = jax.tree_util.tree_flatten(tree)
        self.leaves = tuple(leaves)

    def __hash__(self):
        return hash((self.treedef, self.leaves))

    def __eq__(self, other):
        return (isinstance(other, StaticKey) and self.treedef == other.treedef
                and self.leaves == other.leaves)


def as_weight(name: str, value: ArrayLike,
              shape: tuple[int | None, ...] | None = None) -> jax.Array:
    """A weight matrix as a float64 JAX array, with its shape checked (`None` in `shape`: any
    length on that axis); errors name the argument `name`."""
    arr = as_array(name, value, ndim=2, shape=shape)
    return jnp.asarray(arr, dtype=jnp.float64)
