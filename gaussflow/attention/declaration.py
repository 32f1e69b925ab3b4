r"""`gf.Attention`: one declaration is the whole variant.

A variant is a subclass that states, as class attributes:

- `name`: a short name (`gf.derive(name)`, the CLI, `derivations/`);
- `score`: $s(x, y)$, a SymPy `(1, 1)` expression of the query `x`, the key `y` (columns,
  `gaussflow.attention.symbols`), named weight matrices and scalars, and optionally the time
  `t` (a depth schedule);
- `normalisation`: a `gaussflow.attention.Normalisation` object (softmax over keys, Sinkhorn,
  none with a weight function), which owns both the derivation rule and the particle evaluation;
- `value` (optional): the value matrix $M$ of the value map $y \mapsto M y$ (default $W_O V$);
- `defaults` (optional): default values by parameter name (`"identity"` for a square matrix),
  `keywords` (optional): keyword names of scalar parameters whose SymPy names differ,
  `notes` (optional): remarks appended to the derivation's document.

From that alone: the derivation (steps, LaTeX, Markdown, exact or the named moment projection),
the generated JAX, the constructor (matrices positional in the order `Q, K, V, W_O`, then the
others alphabetically; scalars keyword-only, checked with their SymPy assumptions, e.g. a
positive `c`; shapes checked against the symbolic shapes), the particle system, a validation
example, and a registry entry (`gf.derive("name")`, the CLI and `derivations/` read the
registry).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from numpy.typing import ArrayLike
from sympy import MatrixExpr, MatrixSymbol, ZeroMatrix

from .._checks import as_array, as_scalar
from ..codegen import compile_source, generate_function
from ..symbolic import symbols as S
from ..symbolic.calculus import is_zero_matrix, jacobian, quadratic_coefficients, simplify_matrix
from ..symbolic.derivation import order_params
from ..gaussian import Gaussian, example_state
from ..field import DerivedField
from .normalisation import Normalisation
from .. import registry

#: `_domain_ok` is False once the smallest eigenvalue of a derivation's integrability matrix
#: ($I + \Sigma^{1/2} P \Sigma^{1/2}$) falls below this margin ...
INTEGRABILITY_MARGIN = 1e-6
#: ... or once the closure's rate $\max_{ij} |J_{ij}|$ exceeds this (time scale below `1e-8`).
#: Near the boundary the integrals grow like $e^{c / \mathrm{margin}}\, \mathrm{margin}^{-k}$: the
#: trajectory then is within solver resolution of the divergence time.
RATE_MAX = 1e8

_MATRIX_ORDER = ("Q", "K", "V", "W_O")


class Attention(DerivedField):
    """Base class of attention declarations (see the module docstring); subclass it to declare a
    variant. Instances hold the numeric weights: `f.params` (by name; also `f.Q`, `f.beta`...)."""

    params: dict
    options: tuple = eqx.field(static=True)

    name: ClassVar[str] = "attention"
    score: ClassVar = None
    value: ClassVar = S.W_O * S.V
    normalisation: ClassVar = None
    defaults: ClassVar[dict] = {}
    keywords: ClassVar[dict] = {}
    notes: ClassVar[tuple] = ()

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.__dict__.get("score") is None and cls.__dict__.get("normalisation") is None:
            return  # an intermediate base, not a declaration
        _check_declaration(cls)
        registry.register(cls)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def parameters(cls) -> tuple:
        """The declaration's parameter symbols: matrices (in constructor order: those without a
        default first, then `Q, K, V, W_O`, then the others alphabetically), then scalars (in the
        order of `gaussflow.symbolic.derivation.order_params`)."""
        syms = order_params([cls.score, cls.value])
        mats = [s for s in syms if isinstance(s, MatrixSymbol)]
        mats.sort(key=lambda s: (s.name in cls.defaults,
                                 _MATRIX_ORDER.index(s.name) if s.name in _MATRIX_ORDER else 9,
                                 s.name))
        return tuple(mats) + tuple(s for s in syms if not isinstance(s, MatrixSymbol))

    @classmethod
    def _keyword(cls, sym) -> str:
        return cls.keywords.get(sym.name, sym.name)

    @classmethod
    def signature(cls) -> inspect.Signature:
        """The constructor's signature, read from the declaration."""
        P, empty = inspect.Parameter, inspect.Parameter.empty
        out = []
        for s in cls.parameters():
            kind = P.POSITIONAL_OR_KEYWORD if isinstance(s, MatrixSymbol) else P.KEYWORD_ONLY
            default = cls.defaults.get(s.name, empty)
            if default == "identity":
                default = None
            elif default is empty and s.name == "beta":
                default = 1.0
            out.append(P(cls._keyword(s), kind, default=default))
        for k, v in cls.normalisation.options().items():
            out.append(P(k, P.KEYWORD_ONLY, default=v))
        # defaults must follow non-defaults among positional parameters
        pos = [p for p in out if p.kind is P.POSITIONAL_OR_KEYWORD]
        seen_default = False
        for i, p in enumerate(pos):
            if p.default is not empty:
                seen_default = True
            elif seen_default:
                raise TypeError(f"{cls.__name__}: matrix {p.name!r} without a default follows one "
                                "with a default; give it a default or reorder")
        return inspect.Signature(out)

    @classmethod
    def input_keys(cls) -> tuple:
        """`(required, optional)` keyword names of the weights (`gaussflow solve --input`)."""
        sig = cls.signature().parameters
        names = [cls._keyword(s) for s in cls.parameters()]
        req = tuple(n for n in names if sig[n].default is inspect.Parameter.empty)
        return req, tuple(n for n in names if n not in req)

    @classmethod
    def scalar_keys(cls) -> tuple:
        """Keyword names of the scalar parameters."""
        return tuple(cls._keyword(s) for s in cls.parameters() if not isinstance(s, MatrixSymbol))

    @classmethod
    def positive_keys(cls) -> tuple:
        """Keyword names of the scalar parameters declared positive (e.g. `c`, `eps`)."""
        return tuple(cls._keyword(s) for s in cls.parameters()
                     if not isinstance(s, MatrixSymbol) and s.is_positive)

    @classmethod
    def from_inputs(cls, **values: Any) -> Attention:
        """The field from named values (`gaussflow solve --input`; keys of `input_keys`)."""
        return cls(**values)

    def __init__(self, *args: ArrayLike | None, **kwargs: Any):
        """Bind the weights by the declaration's `signature`: matrices positional (or by keyword),
        scalars keyword-only, then the normalisation's options.

        Every matrix is checked against its symbolic shape (a dimension named twice must agree),
        a square matrix declared `"identity"` defaults to $I$, and each scalar is checked with
        its SymPy assumptions (e.g. `c > 0`). Raises `TypeError` for a wrong call and
        `ValueError` for a wrong value, naming the argument.
        """
        cls = type(self)
        try:
            bound = cls.signature().bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{cls.__name__}{cls.signature()}: {e}") from None
        bound.apply_defaults()
        given = bound.arguments
        dims, params, first = {}, {}, {}
        mats = [s for s in cls.parameters() if isinstance(s, MatrixSymbol)]
        for sym in mats:
            key = cls._keyword(sym)
            if given[key] is None and cls.defaults.get(sym.name) == "identity":
                continue
            arr = as_array(key, given[key], ndim=None if sym.shape[1] == 1 else 2)
            if arr.ndim == 1 and sym.shape[1] == 1:
                arr = arr[:, None]
            if arr.ndim != 2:
                raise ValueError(f"{key} must be a matrix of shape {_shape_text(sym)}, got an "
                                 f"array of shape {arr.shape}")
            for axis, n in enumerate(sym.shape):
                n = sp.sympify(n)
                if n.is_Integer:
                    if arr.shape[axis] != int(n):
                        raise ValueError(f"{key} must have shape {_shape_text(sym)}, got {arr.shape}")
                elif n in dims and dims[n] != arr.shape[axis]:
                    raise ValueError(
                        f"{key} has shape {arr.shape} but axis {axis} must be {dims[n]} ({n} = "
                        f"{dims[n]} from {first[n]}; {key} must have shape "
                        f"{_shape_text(sym, dims)})")
                else:
                    dims.setdefault(n, arr.shape[axis])
                    first.setdefault(n, key)
            params[sym.name] = jnp.asarray(arr, dtype=jnp.float64)
        for sym in mats:
            if sym.name not in params:  # "identity" default
                shape = [dims.get(sp.sympify(n), None) if not sp.sympify(n).is_Integer else int(n)
                         for n in sym.shape]
                if None in shape or shape[0] != shape[1]:
                    raise ValueError(
                        f"{cls._keyword(sym)} is required when it is not square: the other weights "
                        f"give it shape {_shape_text(sym, dims)}; pass {cls._keyword(sym)} of shape "
                        f"{_shape_text(sym, dims)}")
                params[sym.name] = jnp.eye(shape[0])
        for sym in cls.parameters():
            if isinstance(sym, MatrixSymbol):
                continue
            key = cls._keyword(sym)
            if given[key] is inspect.Parameter.empty:
                raise TypeError(f"{cls.__name__} needs the keyword argument {key}=")
            val = as_scalar(key, given[key], positive=bool(sym.is_positive),
                            nonnegative=bool(sym.is_nonnegative) and not sym.is_positive)
            params[sym.name] = jnp.asarray(val, dtype=jnp.float64)
        if S.d not in dims:
            raise TypeError(f"{cls.__name__}: no weight fixes the token dimension d")
        opts = {k: given[k] for k in cls.normalisation.options()}
        self.params = params
        self.options = tuple(sorted(cls.normalisation.bind_options(dims[S.d], **opts).items()))

    def __getattr__(self, item):
        try:
            params = object.__getattribute__(self, "params")
        except AttributeError:
            raise AttributeError(item) from None
        names = {type(self)._keyword(s): s.name for s in type(self).parameters()}
        if item in names and names[item] in params:
            return params[names[item]]
        if item in params:
            return params[item]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {item!r}")

    @property
    def dim(self) -> int:
        """The token dimension $d$, read from a weight's shape."""
        for s in type(self).parameters():
            if isinstance(s, MatrixSymbol):
                for axis, n in enumerate(s.shape):
                    if sp.sympify(n) == S.d:
                        return int(self.params[s.name].shape[axis])
        raise AttributeError("no weight fixes the token dimension")

    @property
    def A(self) -> jax.Array:
        r"""$A = K^\top Q$ (dot-product scores
        $\beta \langle Q x, K y\rangle = \beta\, y^\top A x$)."""
        return self.params["K"].T @ self.params["Q"]

    @property
    def exact(self) -> bool:  # type: ignore[override]
        """Whether the derivation's closure is exact (the Gaussian family invariant)."""
        return self.derivation().exact

    def _param_values(self) -> dict:
        return {**self.params, **dict(self.options)}

    # -- derivation -----------------------------------------------------------------------
    @classmethod
    def _derive(cls):
        return cls.normalisation.derive(cls.name, cls.score, cls.value, tuple(cls.notes))

    @classmethod
    def particle_score(cls) -> MatrixExpr:
        """The score $s(x, y)$ the particle system weighs keys by (the declared one)."""
        return cls.score

    @classmethod
    def value_map(cls) -> MatrixExpr:
        r"""The value matrix $M$ of the value map $y \mapsto M y$ (the declared `value`)."""
        return cls.value

    @classmethod
    def log_kernel(cls) -> MatrixExpr:
        """The score $s(x, y)$: the log of the weight for exp weights (softmax, Sinkhorn, exp)."""
        return cls.score

    @classmethod
    def particle_source(cls, score: MatrixExpr, value: MatrixExpr) -> dict[str, Any]:
        r"""Generated particle-score code: the canonical form
        $s = c_0(x) + (H x + h_0)^\top y - \tfrac12 y^\top P y$ when the score is quadratic in
        $y$ (scores of a block are then matrix products), else a pairwise
        `log_kernel(t, x, y, ...)`.

        Parameters
        ----------
        score : MatrixExpr
            $s(x, y)$, a `(1, 1)` expression.
        value : MatrixExpr
            The value matrix of the value map.

        Returns
        -------
        dict
            `params` (the parameter symbols, in argument order), `quadratic` (whether the
            canonical form applies), `p_zero` and `c0_zero` (whether $P$, $c_0$ vanish),
            `source` (the generated text) and `functions` (`kernel_parts`, `kernel_c0`,
            `log_kernel`, compiled).
        """
        params = order_params([score, value])
        quadratic, p_zero, c0_zero = True, False, False
        try:
            q = quadratic_coefficients(score, S.y)
            H = jacobian(q.h, S.x)
            h0 = simplify_matrix(q.h.subs(S.x, ZeroMatrix(*S.x.shape)))
            P = q.P
            if any(getattr(e, "has", lambda *_: False)(S.x) for e in (H, h0, P)):
                quadratic = False
            p_zero, c0_zero = is_zero_matrix(P), is_zero_matrix(q.c0)
        except ValueError:
            quadratic = False
        parts = [H, h0, P, value] if quadratic else [value]
        args = (S.t, S.x, *params)
        src = "\n".join([
            f"# gaussflow generated code: {cls.__name__} particle scores.\n",
            generate_function("kernel_parts", args, parts, constants=params,
                              doc="(H, h0, P, value) with s = c0(x) + (H x + h0)^T y - 1/2 y^T P y"
                              if quadratic else "(value,)"),
            generate_function("kernel_c0", args, [q.c0 if quadratic else ZeroMatrix(1, 1)],
                              doc="c0(x), the part of the score free of y."),
            generate_function("log_kernel", (S.t, S.x, S.y, *params), [score], doc="s(x, y)."),
        ])
        return dict(params=params, quadratic=quadratic, p_zero=p_zero, c0_zero=c0_zero,
                    source=src, functions=compile_source(src))

    # -- rule-specific extras ---------------------------------------------------------------
    def _margin(self, t, mean, cov):
        M = self.derivation().functions["integrability"](t, mean[:, None], cov, *self._args())
        return jnp.linalg.eigvalsh((M + M.T) / 2)[0]

    def _closure_is_generated(self) -> bool:
        return "integrability" not in self.derivation().functions

    def _closure(self, t, mean, cov):
        dm, J = super()._closure(t, mean, cov)
        if "integrability" not in self.derivation().functions:
            return dm, J
        # Outside the domain the integrals diverge: NaN, so that a step crossing it is rejected.
        ok = self._margin(t, mean, cov) > 0
        return jnp.where(ok, dm, jnp.nan), jnp.where(ok, J, jnp.nan)

    def _moment_rhs(self, t, mean, cov):
        if "integrability" not in self.derivation().functions:
            return super()._moment_rhs(t, mean, cov)
        dm, J = self._closure(t, mean, cov)
        JS = J @ cov
        return dm, JS + JS.T

    def _has_domain_check(self) -> bool:
        return "integrability" in self.derivation().functions

    def _domain_ok(self, t, mean, cov):
        if "integrability" not in self.derivation().functions:
            return jnp.asarray(True)
        ok = self._margin(t, mean, cov) > INTEGRABILITY_MARGIN
        _, J = DerivedField._closure(self, t, mean, cov)
        return ok & (jnp.max(jnp.abs(jnp.where(ok, J, jnp.inf))) < RATE_MAX)

    def _need(self, fn, what):
        if fn not in self.derivation().functions:
            raise AttributeError(f"{type(self).__name__} has no {what}: its derivation "
                                 f"({self.derivation().projection or 'exact'}) does not generate "
                                 f"{fn!r}")
        return self.derivation().functions[fn]

    def moment_rhs(self, g: Gaussian, t: float = 0.0) -> tuple[jax.Array, jax.Array]:
        """`(d mean/dt, d cov/dt)` at `g` and time `t`; refused (`ValueError`) where the
        closure's integrals do not exist (exp weights without normalisation)."""
        if "integrability" in self.derivation().functions:
            margin = self.integrability_margin(g, t)
            if margin <= 0:
                raise ValueError(f"{type(self).__name__}: the closure's Gaussian integrals do not "
                                 f"exist at this state (integrability margin {margin:.3g} <= 0); "
                                 "gf.solve reports such a state as 'not_integrable'")
        return super().moment_rhs(g, t)

    def integrability_margin(self, g: Gaussian, t: float = 0.0) -> float:
        r"""Smallest eigenvalue of the integrability matrix $I + \Sigma^{1/2} P \Sigma^{1/2}$ (the
        closure's integrals exist while it is $> 0$; exp weights without normalisation only)."""
        self._need("integrability", "integrability matrix")
        self._check_state(g)
        return float(self._margin(jnp.asarray(float(t)), g.mean, g.cov))

    def log_mass(self, g: Gaussian, t: float = 0.0) -> float:
        r"""$\log E[\exp(s(X, Y))]$ for $X, Y$ iid $\sim \mathcal N$(`g.mean`, `g.cov`) (`inf`
        outside the domain)."""
        f = self._need("log_mass", "log mass")
        if self.integrability_margin(g, t) <= 0:
            return float("inf")
        return float(f(jnp.asarray(float(t)), g.mean[:, None], g.cov, *self._args()))

    def velocity_jacobian(self, g: Gaussian, x: ArrayLike, t: float = 0.0) -> jax.Array:
        r"""$\nabla\Gamma(x)$ (the derived per-token Jacobian, `(d, d)`), `x` of shape `(d,)`."""
        f = self._need("velocity_jacobian", "derived per-token Jacobian")
        self._check_state(g)
        return f(jnp.asarray(float(t)), jnp.asarray(x, dtype=float)[:, None], g.mean[:, None],
                 g.cov, *self._args())

    # -- examples ---------------------------------------------------------------------------
    #: Scalar values of `example` (others: their defaults).
    example_scales: ClassVar[dict] = {}

    @classmethod
    def example(cls, d: int = 3, seed: int = 0) -> tuple[Attention, Gaussian, float]:
        r"""A moderate validation problem `(field, g0, t1)` with random weights from `seed`.

        $Q = 0.6\, G_1 / \sqrt d$, $K = -Q + 0.3\, G_2 / \sqrt d$ (mostly contracting scores, so
        the closures stay finite and the particles reach their $N^{-1/2}$ regime at moderate
        $N$), $V = I + 0.3\, G_3 / \sqrt d$, other matrices $0.3\, G / \sqrt d$ (columns:
        $0.3\, g$), with $G_i$ standard normal; scalars from `example_scales` or their defaults;
        `g0` from `gaussflow.gaussian.example_state`; `t1 = 1`.
        """
        rng = np.random.default_rng(seed)
        s = math.sqrt(d)
        G = lambda: rng.normal(size=(d, d)) / s  # noqa: E731
        Q = 0.6 * G()
        mats = {"Q": Q, "K": -Q + 0.3 * G(), "V": np.eye(d) + 0.3 * G()}
        g0 = example_state(rng, d)
        kw = {}
        for sym in cls.parameters():
            key = cls._keyword(sym)
            if isinstance(sym, MatrixSymbol):
                if cls.defaults.get(sym.name) == "identity":
                    continue
                kw[key] = mats.get(sym.name, 0.3 * G() if sym.shape[1] != 1
                                   else 0.3 * rng.normal(size=d))
            elif sym.name in cls.example_scales:
                kw[key] = cls.example_scales[sym.name]
        return cls(**kw), g0, 1.0

    def __repr__(self):
        scal = ", ".join(f"{type(self)._keyword(s)}={float(self.params[s.name]):g}"
                         for s in type(self).parameters() if not isinstance(s, MatrixSymbol))
        return f"{type(self).__name__}(d={self.dim}{', ' + scal if scal else ''})"


def _shape_text(sym, dims=None) -> str:
    dims = dims or {}
    return "(" + ", ".join(str(dims.get(sp.sympify(n), n)) for n in sym.shape) + ")"


def _check_declaration(cls):
    """Refuse a malformed declaration when the class is created."""
    who = cls.__name__
    if not isinstance(cls.__dict__.get("name", cls.name), str) or not cls.name:
        raise TypeError(f"{who}.name must be a non-empty string")
    if not isinstance(cls.score, MatrixExpr) or cls.score.shape != (1, 1):
        raise TypeError(f"{who}.score must be a (1, 1) SymPy matrix expression of x and y, e.g. "
                        "beta * (Q * x).T * (K * y); got " + repr(cls.score))
    if not cls.score.has(S.y):
        raise TypeError(f"{who}.score does not involve the key y")
    if not isinstance(cls.normalisation, Normalisation):
        raise TypeError(f"{who}.normalisation must be a normalisation object, e.g. "
                        "gf.attention.SoftmaxNormalisation(); got " + repr(cls.normalisation))
    if not isinstance(cls.value, MatrixExpr) or cls.value.has(S.y) or cls.value.has(S.x):
        raise TypeError(f"{who}.value must be a matrix expression of the weights (the value map "
                        "is y -> value * y)")
    extra = {s.name for s in cls.score.free_symbols | cls.value.free_symbols} & {
        "alpha", "Sigma", "Phi", "Sigma0"}
    if extra:
        raise TypeError(f"{who}: the score and value may not use the reserved names {sorted(extra)}")
