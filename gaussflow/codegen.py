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


class JaxMatrixPrinter:
    """Matrix-level JAX printer with common-subexpression binding.

    ``dims`` maps dimension symbols to source text giving them at run time
    (e.g. ``d -> "Sigma.shape[0]"``).
    """

    def __init__(self, dims: dict):
        self.dims = dims
        self.lines: list[str] = []
        self.bound: dict = {}
        self.counts: Counter = Counter()
        self._n = 0

    # -- common sub-expressions ------------------------------------------------------------
    def count(self, expr):
        if self._atomic(expr):
            return
        self.counts[expr] += 1
        if self.counts[expr] == 1:
            for a in expr.args:
                self.count(a)

    @staticmethod
    def _atomic(expr) -> bool:
        return (
            isinstance(expr, (MatrixSymbol, sp.Symbol, sp.Number, Identity, ZeroMatrix, OneMatrix))
            or not expr.args
            or isinstance(expr, sp.Tuple)
        )

    def print(self, expr) -> str:
        if expr in self.bound:
            return self.bound[expr]
        text = self._print(expr)
        if self.counts.get(expr, 0) > 1 and not self._atomic(expr):
            name = f"_t{self._n}"
            self._n += 1
            self.lines.append(f"{name} = {text}")
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
        if isinstance(e, Inverse) or (isinstance(e, MatPow) and e.exp == -1):
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

    def _matmul(self, e: MatMul) -> str:
        scalars = [a for a in e.args if not isinstance(a, MatrixExpr)]
        mats = [a for a in e.args if isinstance(a, MatrixExpr)]
        # Fold right to left so that Inverse(B) * rest becomes solve(B, rest).
        acc = None
        for f in reversed(mats):
            inv = isinstance(f, Inverse) or (isinstance(f, MatPow) and f.exp == -1)
            if acc is None:
                acc = self.print(f)
            elif inv:
                acc = f"jnp.linalg.solve({self.print(f.args[0])}, {acc})"
            else:
                acc = f"({self.print(f)} @ {acc})"
        if scalars:
            coeff = " * ".join(self.print(s) for s in scalars)
            return f"({coeff} * {acc})"
        return acc


def generate_function(name: str, args: Sequence, outputs: Sequence, doc: str = "") -> str:
    """Source text of ``def name(*args): ... return outputs`` for SymPy (matrix) expressions."""
    dims = {}
    for a in args:
        if isinstance(a, MatrixSymbol):
            for axis, n in enumerate(a.shape):
                for s in sp.sympify(n).free_symbols:
                    dims.setdefault(s, f"{a.name}.shape[{axis}]")
    printer = JaxMatrixPrinter(dims)
    for out in outputs:
        printer.count(out)
    rendered = [printer.print(out) for out in outputs]
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
