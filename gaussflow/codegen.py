"""Print derived SymPy matrix expressions as matrix-level JAX source, and compile it.

The printer works on whole matrices: ``MatMul`` becomes ``@``, ``Inverse(B) @ Y`` becomes
``jnp.linalg.solve(B, Y)`` (never an explicit inverse when a solve serves), special functions map
to ``jax.numpy`` / ``jax.scipy.special`` (SymPy's own JAX printer emits ``math.erf``, which breaks
under ``jit``). Repeated sub-expressions are bound once to temporaries. Vectors are ``(n, 1)``
columns, exactly as in the symbolic derivation; the field classes reshape at the boundary.

The generated source is plain text kept on the :class:`~gaussflow.derive.Derivation`
(``.jax_source``); :func:`compile_source` executes it in a fresh namespace holding only
``jnp``, ``jsp`` and the runtime helpers below. Source is produced in-process from the package's own
expressions and never read back from disk.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import sympy as sp
from sympy import (
    Determinant,
    HadamardProduct,
    Identity,
    Inverse,
    MatAdd,
    MatMul,
    MatPow,
    MatrixExpr,
    MatrixSymbol,
    OneMatrix,
    Trace,
    Transpose,
    ZeroMatrix,
)
from sympy.matrices.expressions.matexpr import MatrixElement


# ----------------------------------------------------------------------------------------------
# Custom symbolic functions with a JAX meaning, shared by the derivations.


class SqrtPSD(MatrixExpr):
    """Principal square root of a symmetric positive semi-definite matrix (printed as an eigh)."""

    def __new__(cls, arg):
        arg = sp.sympify(arg)
        return super().__new__(cls, arg)

    @property
    def arg(self):
        return self.args[0]

    @property
    def shape(self):
        return self.arg.shape

    def _eval_transpose(self):
        return self

    def _latex(self, printer):
        return r"\left(%s\right)^{1/2}" % printer._print(self.arg)


@jax.custom_jvp
def _sqrtm_psd(X):
    """Symmetric PSD square root via ``eigh`` (runs on GPU, unlike Schur-based ``sqrtm``).

    Differentiated by its own rule (the Sylvester equation ``S dS + dS S = dX``, solved in the
    eigenbasis: ``dS_ij = dX_ij / (s_i + s_j)``), which stays finite for repeated eigenvalues
    where differentiating ``eigh`` itself gives NaN.
    """
    w, U = jnp.linalg.eigh((X + X.T) / 2)
    return (U * jnp.sqrt(jnp.clip(w, 0.0, None))) @ U.T


@_sqrtm_psd.defjvp
def _sqrtm_psd_jvp(primals, tangents):
    (X,), (dX,) = primals, tangents
    w, U = jnp.linalg.eigh((X + X.T) / 2)
    s = jnp.sqrt(jnp.clip(w, 0.0, None))
    den = s[:, None] + s[None, :]
    dXu = U.T @ ((dX + dX.T) / 2) @ U
    dS = jnp.where(den > 0, dXu / jnp.where(den > 0, den, 1.0), 0.0)
    return (U * s) @ U.T, U @ dS @ U.T


RUNTIME = {"jnp": jnp, "jsp": jsp, "jax": jax, "_sqrtm_psd": _sqrtm_psd}

_FUNCTIONS = {
    sp.exp: "jnp.exp",
    sp.log: "jnp.log",
    sp.sqrt: "jnp.sqrt",
    sp.erf: "jsp.erf",
    sp.erfc: "jsp.erfc",
    sp.tanh: "jnp.tanh",
    sp.Abs: "jnp.abs",
}


def _is_inverse(f) -> bool:
    return isinstance(f, Inverse) or (isinstance(f, MatPow) and f.exp == -1)


#: Size assumed for a symbolic dimension when choosing the order of a matrix product.
_DIM_GUESS = 64
#: Relative cost of a product of constants only (computed once per solve, not per evaluation).
_CONSTANT_WEIGHT = 1e-3


class JaxMatrixPrinter:
    """Matrix-level JAX printer with common-subexpression binding.

    ``dims`` maps dimension symbols to source text giving them at run time
    (e.g. ``d -> "Sigma.shape[0]"``); ``symmetric``: matrix symbols known to be symmetric at run
    time (``Sigma``), so that a product and its transpose are recognised as one another.

    **Products.** A ``MatMul`` is a chain of factors ``F_1 ... F_n``; the printer chooses its
    parenthesisation by the matrix-chain recurrence on flop counts (symbolic dimensions taken as
    ``_DIM_GUESS``, so ``(n, 1)`` vectors are multiplied in first), where a sub-chain that is
    already bound, or whose transpose is, costs nothing, and one that occurs in several products of
    the function (or transposed, e.g. ``X`` and ``X^T`` in ``X + X^T``) is bound to a temporary
    and reused (``X^T`` printed as ``_t.T``). A sub-chain of ``constants`` only (weights and
    scales, fixed during a solve) counts ``_CONSTANT_WEIGHT`` of its flops: XLA hoists it out of
    the solver loop, so ``Sigma Q^T K Sigma`` becomes ``Sigma (Q^T K) Sigma`` (two products
    per evaluation, not three). An ``Inverse(B)`` factor is never formed:
    ``Inverse(B) @ R`` is ``solve(B, R)`` and ``L @ Inverse(B)`` is ``solve(B^T, L^T)^T``.
    """

    def __init__(self, dims: dict, symmetric=(), constants=(), state=None):
        self.dims = dims
        self.constants = frozenset(constants)
        self.state = state
        self.symmetric = {sp.Transpose(s): s for s in symmetric}
        self.lines: list[str] = []
        self.bound: dict = {}
        self.counts: Counter = Counter()
        self.chains: Counter = Counter()   # {key, transposed key} -> occurrences
        self.products: dict = {}           # key of a bound sub-chain -> temporary name
        self._tcache: dict = {}
        self._n = 0

    # -- common sub-expressions ------------------------------------------------------------
    def count(self, expr):
        if self._atomic(expr):
            return
        self.counts[expr] += 1
        if self.counts[expr] == 1:
            if isinstance(expr, MatMul):
                fs = self._factors(expr)[1]
                for i in range(len(fs)):
                    for j in range(i + 2, len(fs) + 1):
                        self.chains[self._pair(fs[i:j])] += 1
                for f in fs:  # factors merged with the state (not among expr.args)
                    if isinstance(f, MatMul) and f not in expr.args:
                        self.count(f)
            for a in expr.args:
                self.count(a)

    @staticmethod
    def _atomic(expr) -> bool:
        return (
            isinstance(expr, (MatrixSymbol, sp.Symbol, sp.Number, Identity, ZeroMatrix, OneMatrix))
            or not expr.args
            or isinstance(expr, sp.Tuple)
        )

    def _bind(self, text: str) -> str:
        name = f"_t{self._n}"
        self._n += 1
        self.lines.append(f"{name} = {text}")
        return name

    def print(self, expr) -> str:
        if expr in self.bound:
            return self.bound[expr]
        text = self._print(expr)
        if self.counts.get(expr, 0) > 1 and not self._atomic(expr):
            name = self._bind(text)
            self.bound[expr] = name
            return name
        return text

    # -- dispatch ----------------------------------------------------------------------------
    def _dim(self, n) -> str:
        n = sp.sympify(n)
        if n.is_Integer:
            return str(int(n))
        return "(" + sp.pycode(n.xreplace({s: sp.Symbol(self.dims[s]) for s in n.free_symbols})) + ")"

    def _print(self, e) -> str:
        P = self.print
        if isinstance(e, MatrixSymbol):
            return e.name
        if isinstance(e, sp.Symbol):
            return e.name
        if isinstance(e, sp.Integer):
            return f"{int(e)}.0" if abs(int(e)) < 2**52 else str(float(e))
        if isinstance(e, sp.Rational):
            return f"({int(e.p)}.0 / {int(e.q)}.0)"
        if isinstance(e, sp.Float):
            return repr(float(e))
        if e is sp.pi:
            return "jnp.pi"
        if isinstance(e, Identity):
            return f"jnp.eye({self._dim(e.shape[0])})"
        if isinstance(e, ZeroMatrix):
            return f"jnp.zeros(({self._dim(e.shape[0])}, {self._dim(e.shape[1])}))"
        if isinstance(e, OneMatrix):
            return f"jnp.ones(({self._dim(e.shape[0])}, {self._dim(e.shape[1])}))"
        if isinstance(e, Transpose):
            return f"{P(e.arg)}.T"
        if isinstance(e, SqrtPSD):
            return f"_sqrtm_psd({P(e.arg)})"
        if _is_inverse(e):
            A = e.args[0]
            return f"jnp.linalg.solve({P(A)}, jnp.eye({self._dim(A.shape[0])}))"
        if isinstance(e, MatPow):
            return f"jnp.linalg.matrix_power({P(e.base)}, {int(e.exp)})"
        if isinstance(e, MatAdd):
            return "(" + " + ".join(P(a) for a in e.args) + ")"
        if isinstance(e, MatMul):
            return self._matmul(e)
        if isinstance(e, HadamardProduct):
            return "(" + " * ".join(P(a) for a in e.args) + ")"
        if isinstance(e, Trace):
            return f"jnp.trace({P(e.arg)})"
        if isinstance(e, Determinant):
            return f"jnp.linalg.det({P(e.arg)})"
        if isinstance(e, MatrixElement):
            return f"{P(e.parent)}[{int(e.i)}, {int(e.j)}]"
        if isinstance(e, sp.Add):
            return "(" + " + ".join(P(a) for a in e.args) + ")"
        if isinstance(e, sp.Mul):
            return "(" + " * ".join(P(a) for a in e.args) + ")"
        if isinstance(e, sp.Pow):
            if e.exp == sp.Rational(1, 2):
                return f"jnp.sqrt({P(e.base)})"
            if e.exp == -1:
                return f"(1.0 / {P(e.base)})"
            return f"({P(e.base)} ** {P(e.exp)})"
        if isinstance(e, sp.Function) and type(e) in _FUNCTIONS:
            return f"{_FUNCTIONS[type(e)]}(" + ", ".join(P(a) for a in e.args) + ")"
        if hasattr(type(e), "_jax_name"):  # sp.Function or MatrixExpr with a runtime rule
            return f"{type(e)._jax_name}(" + ", ".join(P(a) for a in e.args) + ")"
        raise NotImplementedError(f"codegen cannot print {type(e).__name__}: {e}")

    # -- products ----------------------------------------------------------------------------
    def _factors(self, e: MatMul):
        """``([], factors)``: the matrix factors, led by the scalar coefficient when there is one
        (so that ``beta X`` is shared as a whole, e.g. ``J`` inside ``J alpha``). With a ``state``
        symbol, each weight next to it is multiplied into it first (:meth:`_with_state`)."""
        scalars = [a for a in e.args if not isinstance(a, MatrixExpr)]
        mats = tuple(a for a in e.args if isinstance(a, MatrixExpr))
        if self.state is not None and len(mats) > 2:
            mats = self._with_state(mats)
        if scalars:
            mats = (sp.Mul(*scalars),) + mats
        return [], mats

    def _with_state(self, fs):
        """Merge ``Phi^T W`` and a trailing ``W Phi`` (``W`` a weight) into single factors.

        In ``J Phi = ... Phi Sigma0 Phi^T K^T Q Phi`` (``Sigma = Phi Sigma0 Phi^T``), where Sigma
        collapses ``Q Phi`` and ``K Phi`` are small, and ``Phi^T K^T Q Phi`` is only accurate as
        ``(K Phi)^T (Q Phi)``: formed as ``Phi^T (K^T Q Phi)`` it keeps an absolute round-off
        ``eps |Phi|^2`` that ``dPhi/dt`` integrates into an error growing like ``eps t``."""
        P, PT = self.state, Transpose(self.state)
        weight = (lambda f: isinstance(f, (MatrixSymbol, Transpose))
                  and f.free_symbols <= self.constants)
        out, i = [], 0
        while i < len(fs):
            if i + 2 == len(fs) and fs[i + 1] == P and weight(fs[i]):
                out.append(MatMul(fs[i], P))
                i += 2
            elif i + 1 < len(fs) and fs[i] == PT and weight(fs[i + 1]):
                out.append(MatMul(PT, fs[i + 1]))
                i += 2
            else:
                out.append(fs[i])
                i += 1
        return tuple(out)

    def _canon(self, f):
        """``f`` with a transposed symmetric symbol replaced by the symbol (top level only)."""
        return self.symmetric.get(f, f)

    def _transpose(self, f):
        """Transpose of one factor: cheap rules for symbols, SymPy's (slow) ``.T`` otherwise,
        cached per factor."""
        if isinstance(f, Transpose):
            return f.arg
        if f in self.symmetric.values() or isinstance(f, SqrtPSD):
            return f
        if isinstance(f, MatrixSymbol):
            return Transpose(f)
        if f not in self._tcache:
            self._tcache[f] = f.T.xreplace(self.symmetric)
        return self._tcache[f]

    def _key(self, fs) -> tuple:
        return tuple(self._canon(f) for f in fs)

    def _tkey(self, fs) -> tuple:
        lead = () if isinstance(fs[0], MatrixExpr) else (fs[0],)  # a scalar stays in front
        return lead + tuple(self._canon(self._transpose(f)) for f in reversed(fs[len(lead):]))

    def _pair(self, fs) -> frozenset:
        return frozenset((self._key(fs), self._tkey(fs)))

    def _size(self, n) -> int:
        n = sp.sympify(n)
        if n.is_Integer:
            return int(n)
        v = sp.sympify(n.subs({s: _DIM_GUESS for s in n.free_symbols}))
        return int(v) if v.is_Integer else _DIM_GUESS

    def _available(self, fs):
        """Name (or transposed name) of an already bound product of ``fs``, else None."""
        name = self.products.get(self._key(fs))
        if name is not None:
            return name
        name = self.products.get(self._tkey(fs))
        return None if name is None else f"{name}.T"

    def _matmul(self, e: MatMul) -> str:
        scalars, fs = self._factors(e)
        n = len(fs)
        rows = [self._size(f.shape[0]) if isinstance(f, MatrixExpr) else 1 for f in fs]
        cols = [self._size(f.shape[1]) if isinstance(f, MatrixExpr) else 1 for f in fs]
        scalar0 = not isinstance(fs[0], MatrixExpr)
        # Matrix-chain recurrence: cost[i, j], best split of fs[i:j].
        fixed = [f.free_symbols <= self.constants if self.constants else False for f in fs]
        const = {(i, j): all(fixed[i:j]) for i in range(n) for j in range(i + 1, n + 1)}
        cost, split = {}, {}
        for i in range(n):
            cost[i, i + 1] = 0.0
        for length in range(2, n + 1):
            for i in range(n - length + 1):
                j = i + length
                if self._available(fs[i:j]) is not None:
                    cost[i, j], split[i, j] = 0.0, None
                    continue
                share = max(1, self.chains.get(self._pair(fs[i:j]), 1))
                best, arg = None, None
                for s in range(i + 1, j):
                    if i == 0 and s == 1 and scalar0:  # coefficient times a matrix
                        flops = rows[1] * cols[j - 1]
                    else:
                        flops = rows[i + (i == 0 and scalar0)] * cols[s - 1] * cols[j - 1]
                    if s - i == 1 and _is_inverse(fs[i]):
                        flops += rows[i] ** 3  # factorisation
                    elif j - s == 1 and _is_inverse(fs[j - 1]):
                        flops += rows[j - 1] ** 3
                    if const[i, j]:
                        flops *= _CONSTANT_WEIGHT
                    c = cost[i, s] + cost[s, j] + flops / share
                    if best is None or c < best:
                        best, arg = c, s
                cost[i, j], split[i, j] = best, arg
        acc = self._chain(fs, 0, n, split)
        if scalars:
            coeff = " * ".join(self.print(s) for s in scalars)
            return f"({coeff} * {acc})"
        return acc

    def _chain(self, fs, i, j, split) -> str:
        if j - i == 1:
            return self.print(fs[i])
        name = self._available(fs[i:j])
        if name is not None:
            return name
        s = split[i, j]
        if s - i == 1 and not isinstance(fs[i], MatrixExpr):
            text = f"({self.print(fs[i])} * {self._chain(fs, s, j, split)})"
        elif s - i == 1 and _is_inverse(fs[i]):
            text = f"jnp.linalg.solve({self.print(fs[i].args[0])}, {self._chain(fs, s, j, split)})"
        elif j - s == 1 and _is_inverse(fs[j - 1]):
            text = (f"jnp.linalg.solve({self.print(fs[j - 1].args[0])}.T, "
                    f"{self._chain(fs, i, s, split)}.T).T")
        else:
            text = f"({self._chain(fs, i, s, split)} @ {self._chain(fs, s, j, split)})"
        if self.chains.get(self._pair(fs[i:j]), 0) > 1:
            name = self._bind(text)
            self.products[self._key(fs[i:j])] = name
            return name
        return text


def generate_function(name: str, args: Sequence, outputs: Sequence, doc: str = "",
                      symmetric=None, constants=(), state=None) -> str:
    """Source text of ``def name(*args): ... return outputs`` for SymPy (matrix) expressions.

    ``symmetric``: matrix symbols among ``args`` that callers pass symmetric (default: the shared
    covariance ``Sigma`` when it is an argument). ``constants``: arguments fixed while the
    function is evaluated many times (the weights and scales of a field): products of them alone
    are preferred, as computed once. ``state``: a flow-map symbol ``Phi`` that each adjacent
    weight multiplies first (for round-off, see :meth:`JaxMatrixPrinter._with_state`). Larger
    outputs are printed first, so smaller ones reuse their products (e.g. ``d alpha/dt = J alpha
    + ...`` after ``J``).
    """
    if symmetric is None:
        from .derive import symbols as S

        symmetric = [a for a in args if a == S.Sigma]
    dims = {}
    for a in args:
        if isinstance(a, MatrixSymbol):
            for axis, n in enumerate(a.shape):
                for s in sp.sympify(n).free_symbols:
                    dims.setdefault(s, f"{a.name}.shape[{axis}]")
    printer = JaxMatrixPrinter(dims, symmetric, constants, state)
    for out in outputs:
        printer.count(out)

    def size(e):
        shape = getattr(e, "shape", (1, 1))
        return printer._size(shape[0]) * printer._size(shape[1])

    order = sorted(range(len(outputs)), key=lambda i: -size(outputs[i]))
    rendered = [None] * len(outputs)
    for i in order:
        rendered[i] = printer.print(outputs[i])
    arg_names = ", ".join(a.name for a in args)
    body = [f"def {name}({arg_names}):"]
    if doc:
        body.append(f'    """{doc}"""')
    body += [f"    {line}" for line in printer.lines]
    if len(rendered) == 1:
        body.append(f"    return {rendered[0]}")
    else:
        body.append(f"    return ({', '.join(rendered)},)")
    return "\n".join(body) + "\n"


def compile_source(source: str, extra: dict | None = None) -> dict[str, Callable]:
    """Execute generated source in a fresh namespace; return the functions it defines.

    ``extra`` adds runtime helpers (numerical rules such as quadrature) that the source calls.
    """
    namespace = dict(RUNTIME)
    namespace.update(extra or {})
    code = compile(source, "<gaussflow-generated>", "exec")
    exec(code, namespace)  # noqa: S102 - our own generated text, never read from disk
    skip = set(RUNTIME) | set(extra or {})
    return {k: v for k, v in namespace.items() if callable(v) and k not in skip}
