"""Print derived SymPy matrix expressions as matrix-level JAX source.

`JaxMatrixPrinter` is a SymPy `CodePrinter` with one `_print_X` rule per node type it can print
exactly, and nothing else: a node without a rule (inherited `StrPrinter` rules included) raises
`NotImplementedError` when the source is generated, never a guessed text. The rules work on whole
matrices: `MatMul` becomes `@` (ordered and shared by `gaussflow.codegen.products.ProductRules`),
`Inverse(B) @ Y` becomes `jnp.linalg.solve(B, Y)` (never an explicit inverse when a solve
serves), special functions map to `jax.numpy` / `jax.scipy.special` (SymPy's own JAX printer
emits `math.erf`, which breaks under `jit`), and a symbolic node whose class has a `_jax_name`
(`gaussflow.symbolic.special`) prints as a call of that runtime name. Repeated sub-expressions
are bound once to temporaries `_t0, _t1, ...`. Vectors are `(n, 1)` columns, exactly as in the
symbolic derivation; the field classes reshape at the boundary. Scalars print as float64
literals (`2` as `2.0`).

`generate_function` checks the names first: every argument and free symbol prints as its SymPy
name, so two distinct symbols with one name, a name that is not a Python identifier, a keyword,
a runtime name (`gaussflow.codegen.compile.RUNTIME`) or a temporary's name are refused with a
`ValueError`.
"""

from __future__ import annotations

import keyword
import re
from collections import Counter
from typing import Iterable, Sequence

import sympy as sp
from sympy import Identity, MatMul, MatrixSymbol, OneMatrix, ZeroMatrix
from sympy.printing.codeprinter import CodePrinter

from ..symbolic import symbols as S
from .compile import RUNTIME
from .products import ProductRules

_TEMPORARY = re.compile(r"_t\d+\Z")
#: How products print: `A @ B`, `_mm(A, B)` (layout by inner dimension at run time), or
#: `"stacked"`: `A @ B` on stacks of matrices (leading member axes; transposes `.mT`, traces and
#: determinants kept as `(..., 1, 1)`), the source of `gaussflow.numpy_engine`.
PRODUCT_STYLES = ("matmul", "by_size", "stacked")


def _check_name(name: str, what) -> str:
    """`name` if it can be printed as a Python name in generated code, else `ValueError`."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"codegen: {what} has name {name!r}, which is not a valid Python "
                         "identifier (or is a keyword)")
    return name


def _is_sympy_class(cls) -> bool:
    return (getattr(cls, "__module__", None) or "").split(".")[0] == "sympy"


class JaxMatrixPrinter(ProductRules, CodePrinter):
    """Matrix-level JAX printer with common-subexpression binding (see the module docstring).

    Use: `count` every output (so shared sub-expressions are known), then `print` each; the bound
    temporaries are in `lines`. Dispatch walks the node's class hierarchy (for SymPy `Function`
    classes: the exact class only, so a subclass of `exp` is not printed as `exp`) and uses only
    the `_print_X` rules defined on this class and its subclasses.

    Parameters
    ----------
    dims : dict
        Maps dimension symbols to source text giving them at run time
        (e.g. `d -> "Sigma.shape[0]"`).
    symmetric : sequence of MatrixSymbol
        Matrix symbols known to be symmetric at run time (`Sigma`), so that a product and its
        transpose are recognised as one another.
    constants : iterable of Symbol or MatrixSymbol
        Symbols fixed while the function is evaluated many times (their products are preferred,
        as computed once).
    state : MatrixSymbol, optional
        A flow-map symbol `Phi` that each adjacent weight multiplies first
        (`gaussflow.codegen.products.ProductRules._with_state`).
    products : {"matmul", "by_size", "stacked"}
        `"matmul"` prints a product as `A @ B` (readable; the documented source); `"by_size"`
        as `_mm(A, B)`, laid out by its inner dimension at run time
        (`gaussflow.codegen.compile.matmul_by_size`); `"stacked"` as `A @ B` for arrays with
        leading member axes (`(..., n, m)`: transposes print `.mT`, a trace or determinant
        keeps two unit axes so it broadcasts like a scalar of its member).
    """

    printmethod = None  # nodes do not print themselves: every rule is a method of the printer
    language = "JAX"
    _default_settings = {**CodePrinter._default_settings, "strict": True}

    def __init__(self, dims: dict[sp.Symbol, str], symmetric: Sequence[MatrixSymbol] = (),
                 constants: Iterable[sp.Basic] = (), state: MatrixSymbol | None = None,
                 products: str = "matmul"):
        super().__init__({"strict": True})
        if products not in PRODUCT_STYLES:
            raise ValueError(f"products must be one of {PRODUCT_STYLES}, got {products!r}")
        self.product_style = products
        self.stacked = products == "stacked"
        self.tsuffix = ".mT" if self.stacked else ".T"
        self.dims = dims
        self.constants = frozenset(constants)
        self.state = state
        self.symmetric = {sp.Transpose(s): s for s in symmetric}
        self.lines: list[str] = []
        self.bound: dict = {}
        self.counts: Counter = Counter()
        self.chains: Counter = Counter()   # {key, transposed key} -> occurrences
        self.products: dict = {}           # key of a bound sub-chain -> temporary name
        self.runtime_names: set = set()    # _jax_name of every custom node counted
        self._tcache: dict = {}
        self._n = 0

    # -- common sub-expressions ------------------------------------------------------------
    def count(self, expr: sp.Basic) -> None:
        """Count the occurrences of every sub-expression (and sub-chain) of `expr`."""
        name = getattr(type(expr), "_jax_name", None)
        if name is not None:
            self.runtime_names.add(name)
        if self._atomic(expr):
            return
        self.counts[expr] += 1
        if self.counts[expr] == 1:
            if isinstance(expr, MatMul):
                for f in self._chain_counts(expr):  # factors merged with the state
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

    def print(self, expr: sp.Basic) -> str:
        """Text of `expr`; a sub-expression counted more than once is bound to a temporary."""
        if expr in self.bound:
            return self.bound[expr]
        text = self._print(expr)
        if self.counts.get(expr, 0) > 1 and not self._atomic(expr):
            name = self._bind(text)
            self.bound[expr] = name
            return name
        return text

    def doprint(self, expr: sp.Basic, assign_to: None = None) -> str:
        """Text of one expression (temporaries it binds are appended to `lines`).

        `assign_to` (SymPy's `CodePrinter` argument) is not supported: `ValueError` unless `None`.
        """
        if assign_to is not None:
            raise ValueError("JaxMatrixPrinter.doprint: assign_to is not supported; "
                             "use generate_function")
        return self.print(expr)

    # -- dispatch --------------------------------------------------------------------------
    @classmethod
    def _rules(cls) -> dict:
        """`{class name: (_print_X method, whether JaxMatrixPrinter itself defines it)}` for the
        rules defined on this printer class and its subclasses (not the inherited SymPy ones)."""
        if "_rule_table" not in cls.__dict__:
            table = {}
            for klass in reversed(cls.__mro__):
                if isinstance(klass, type) and issubclass(klass, JaxMatrixPrinter):
                    for attr, fn in vars(klass).items():
                        if attr.startswith("_print_") and attr not in (
                                "_print_not_supported", "_print_jax_node"):
                            table[attr[len("_print_"):]] = (fn, klass is JaxMatrixPrinter)
            cls._rule_table = table
        return cls.__dict__["_rule_table"]

    def _print(self, expr, **kwargs) -> str:
        self._print_level += 1
        try:
            if getattr(type(expr), "_jax_name", None) is not None:
                return self._print_jax_node(expr)
            t = type(expr)
            classes = (t,) if issubclass(t, sp.Function) else t.__mro__
            rules = self._rules()
            for cls in classes:
                rule, builtin = rules.get(cls.__name__, (None, False))
                # the built-in rules are for SymPy's own classes, not others of the same name
                # (e.g. an undefined function sp.Function("exp") is not exp)
                if rule is not None and (not builtin or _is_sympy_class(cls)):
                    return rule(self, expr)
            return self._print_not_supported(expr)
        finally:
            self._print_level -= 1

    def _print_not_supported(self, expr):
        raise NotImplementedError(
            f"codegen cannot print {type(expr).__name__}: {expr} (JaxMatrixPrinter has no "
            f"_print_{type(expr).__name__} rule; give the node a class attribute _jax_name "
            "bound at run time, or a rule in a subclass)")

    emptyPrinter = _print_not_supported

    def _print_jax_node(self, e) -> str:
        """A custom node `N(a_1, ..., a_n)` whose class has `_jax_name`: the call
        `_jax_name(a_1, ..., a_n)` (the name bound by the runtime, e.g. `_sqrtm_psd`)."""
        name = type(e)._jax_name
        if not isinstance(name, str) or not all(
                p.isidentifier() and not keyword.iskeyword(p) for p in name.split(".")):
            raise ValueError(f"codegen: {type(e).__name__}._jax_name = {name!r} is not a Python "
                             "(dotted) name")
        return self._call(name, e.args)

    def _call(self, fn: str, args) -> str:
        return f"{fn}(" + ", ".join(self.print(a) for a in args) + ")"

    def _dim(self, n) -> str:
        n = sp.sympify(n)
        if n.is_Integer:
            return str(int(n))
        missing = n.free_symbols - set(self.dims)
        if missing:
            raise ValueError(f"codegen: dimension {n} uses {sorted(map(str, missing))}, which no "
                             "argument's shape gives")
        runtime = n.xreplace({s: sp.Symbol(self.dims[s]) for s in n.free_symbols})
        return "(" + sp.pycode(runtime) + ")"

    # -- atoms -------------------------------------------------------------------------------
    def _print_MatrixSymbol(self, e) -> str:
        return _check_name(e.name, f"matrix symbol {e}")

    def _print_Symbol(self, e) -> str:
        """A scalar symbol prints as its name; a dimension symbol (not an argument) as the
        argument shape that gives it."""
        if e in self.dims:
            return self._dim(e)
        return _check_name(e.name, f"symbol {e}")

    def _print_Integer(self, e) -> str:
        v = int(e)
        if abs(v) < 2**52:
            return f"{v}.0"
        try:
            return repr(float(v))
        except OverflowError:
            raise ValueError(f"codegen: the integer {e} is not a finite float64") from None

    def _print_Rational(self, e) -> str:
        return f"({int(e.p)}.0 / {int(e.q)}.0)"

    def _print_Float(self, e) -> str:
        v = float(e)
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"codegen: the float {e} is not finite")
        return repr(v)

    def _print_Pi(self, e) -> str:
        return "jnp.pi"

    def _print_Exp1(self, e) -> str:
        return "jnp.e"

    def _print_Identity(self, e) -> str:
        return f"jnp.eye({self._dim(e.shape[0])})"

    def _print_ZeroMatrix(self, e) -> str:
        return f"jnp.zeros(({self._dim(e.shape[0])}, {self._dim(e.shape[1])}))"

    def _print_OneMatrix(self, e) -> str:
        return f"jnp.ones(({self._dim(e.shape[0])}, {self._dim(e.shape[1])}))"

    # -- matrix nodes ------------------------------------------------------------------------
    def _print_Transpose(self, e) -> str:
        return f"{self.print(e.arg)}{self.tsuffix}"

    def _print_Inverse(self, e) -> str:
        """$B^{-1}$ on its own: `solve(B, I)` (inside a product, `_chain` solves instead)."""
        A = e.args[0]
        return f"jnp.linalg.solve({self.print(A)}, jnp.eye({self._dim(A.shape[0])}))"

    def _print_MatPow(self, e) -> str:
        r"""$B^n$ for an integer $n$ only: $n = -1$ is the inverse (a solve), $n < -1$ the
        $|n|$-th power of that, $n \ge 0$ `matrix_power`. A fractional or symbolic power has
        no exact meaning here ($\Sigma^{1/2}$ is the node `SqrtPSD`) and is refused."""
        n = e.exp
        if not n.is_Integer:
            raise ValueError(f"codegen cannot print the matrix power {e}: the exponent {n} is not "
                             "an integer (use SqrtPSD for the square root of a PSD matrix)")
        if n == -1:
            return self._print_Inverse(e)
        if n < 0:
            inv = f"jnp.linalg.solve({self.print(e.base)}, jnp.eye({self._dim(e.base.shape[0])}))"
            return f"jnp.linalg.matrix_power({inv}, {-int(n)})"
        return f"jnp.linalg.matrix_power({self.print(e.base)}, {int(n)})"

    def _print_MatAdd(self, e) -> str:
        return "(" + " + ".join(self.print(a) for a in e.args) + ")"

    def _print_MatMul(self, e) -> str:
        return self._matmul(e)

    def _print_HadamardProduct(self, e) -> str:
        return "(" + " * ".join(self.print(a) for a in e.args) + ")"

    def _print_Trace(self, e) -> str:
        if self.stacked:
            return f"jnp.trace({self.print(e.arg)}, axis1=-2, axis2=-1)[..., None, None]"
        return f"jnp.trace({self.print(e.arg)})"

    def _print_Determinant(self, e) -> str:
        if self.stacked:
            return f"jnp.linalg.det({self.print(e.arg)})[..., None, None]"
        return f"jnp.linalg.det({self.print(e.arg)})"

    def _print_MatrixElement(self, e) -> str:
        if not (e.i.is_Integer and e.j.is_Integer):
            raise ValueError(f"codegen cannot print the element {e}: symbolic index")
        i, j = int(e.i), int(e.j)
        if self.stacked:
            return f"{self.print(e.parent)}[..., {i}:{i + 1}, {j}:{j + 1}]"
        return f"{self.print(e.parent)}[{i}, {j}]"

    # -- scalar nodes ------------------------------------------------------------------------
    def _print_Add(self, e) -> str:
        return "(" + " + ".join(self.print(a) for a in e.args) + ")"

    def _print_Mul(self, e) -> str:
        return "(" + " * ".join(self.print(a) for a in e.args) + ")"

    def _print_Pow(self, e) -> str:
        if e.exp == sp.Rational(1, 2):
            return f"jnp.sqrt({self.print(e.base)})"
        if e.exp == -1:
            return f"(1.0 / {self.print(e.base)})"
        return f"({self.print(e.base)} ** {self.print(e.exp)})"

    def _print_exp(self, e) -> str:
        return self._call("jnp.exp", e.args)

    def _print_log(self, e) -> str:
        if len(e.args) != 1:
            raise ValueError(f"codegen cannot print {e}: log with a base")
        return self._call("jnp.log", e.args)

    def _print_erf(self, e) -> str:
        return self._call("jsp.erf", e.args)

    def _print_erfc(self, e) -> str:
        return self._call("jsp.erfc", e.args)

    def _print_tanh(self, e) -> str:
        return self._call("jnp.tanh", e.args)

    def _print_Abs(self, e) -> str:
        return self._call("jnp.abs", e.args)


def _check_names(name, args, outputs, dims, runtime_names):
    """Refuse names that would make the generated source wrong or invalid (`ValueError`)."""
    _check_name(name, "the function")
    reserved = set(RUNTIME) | set(runtime_names)
    by_name: dict = {}
    for a in args:
        if not isinstance(a, (sp.Symbol, MatrixSymbol)):
            raise ValueError(f"codegen: argument {a!r} is not a Symbol or MatrixSymbol")
        n = _check_name(a.name, f"argument {a!r}")
        if n in reserved or _TEMPORARY.match(n):
            raise ValueError(f"codegen: argument {a!r} is named {n!r}, which the generated code "
                             "uses for a runtime name or temporary")
        if n in by_name:
            other = by_name[n]
            raise ValueError(f"codegen: arguments {other!r} ({type(other).__name__}) and {a!r} "
                             f"({type(a).__name__}) both print as {n!r}")
        by_name[n] = a
    free = set().union(*(getattr(o, "free_symbols", set()) for o in outputs))
    for s in sorted(free, key=str):
        if s in by_name.values() or s in dims:
            continue
        n = _check_name(getattr(s, "name", None), f"the outputs' symbol {s!r}")
        other = by_name.get(n)
        if other is not None:
            raise ValueError(f"codegen: the outputs' symbol {s!r} ({type(s).__name__}) and the "
                             f"argument {other!r} ({type(other).__name__}) both print as {n!r}")
        if n in reserved or _TEMPORARY.match(n):
            raise ValueError(f"codegen: the outputs' symbol {s!r} is named {n!r}, which the "
                             "generated code uses for a runtime name or temporary")


def generate_function(name: str, args: Sequence[sp.Symbol | MatrixSymbol],
                      outputs: Sequence[sp.Basic], doc: str = "",
                      symmetric: Sequence[MatrixSymbol] | None = None,
                      constants: Iterable[sp.Basic] = (), state: MatrixSymbol | None = None,
                      products: str = "matmul") -> str:
    r"""Source text of `def name(*args): ... return outputs` for SymPy (matrix) expressions.

    Larger outputs are printed first, so smaller ones reuse their products (e.g.
    $d\alpha/dt = J\alpha + \dots$ after $J$). A free symbol of the outputs that is not an
    argument is printed as its name (a caller may bind it around the function).

    Parameters
    ----------
    name : str
        The function's name.
    args : sequence of Symbol or MatrixSymbol
        Its arguments, printed as their SymPy names.
    outputs : sequence of sympy.Basic
        The returned expressions (one: returned as is; several: as a tuple).
    doc : str
        The generated function's docstring (may not hold three double quotes in a row or end
        with a backslash).
    symmetric : sequence of MatrixSymbol, optional
        Matrix symbols among `args` that callers pass symmetric (default: the shared covariance
        `Sigma` when it is an argument).
    constants : iterable of Symbol or MatrixSymbol
        Arguments fixed while the function is evaluated many times (the weights and scales of a
        field): products of them alone are preferred, as computed once.
    state : MatrixSymbol, optional
        A flow-map symbol `Phi` that each adjacent weight multiplies first (for round-off, see
        `gaussflow.codegen.products.ProductRules._with_state`).
    products : {"matmul", "by_size", "stacked"}
        How products print (see `JaxMatrixPrinter`); the texts compute the same values
        (`"stacked"` for stacks of members).

    Returns
    -------
    str
        The source text of the function, ending with a newline.

    Raises
    ------
    ValueError
        For names (see the module docstring) or a docstring that cannot be printed.
    NotImplementedError
        For a node without a printing rule.

    Both are raised here, never later when the source runs.
    """
    args, outputs = tuple(args), tuple(outputs)
    if symmetric is None:
        symmetric = [a for a in args if a == S.Sigma]
    dims = {}
    for a in args:
        if isinstance(a, MatrixSymbol):
            for axis, n in enumerate(a.shape):
                for s in sp.sympify(n).free_symbols:  # stacked: axes from the end
                    ax = axis - 2 if products == "stacked" else axis
                    dims.setdefault(s, f"{a.name}.shape[{ax}]")
    printer = JaxMatrixPrinter(dims, symmetric, constants, state, products)
    for out in outputs:
        printer.count(out)
    _check_names(name, args, outputs, dims, printer.runtime_names)

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
        if '"""' in doc or doc.endswith("\\"):
            raise ValueError(f"codegen: the docstring of {name}() cannot hold '\"\"\"' or end "
                             "with a backslash")
        body.append(f'    """{doc}"""')
    body += [f"    {line}" for line in printer.lines]
    if len(rendered) == 1:
        body.append(f"    return {rendered[0]}")
    else:
        body.append(f"    return ({', '.join(rendered)},)")
    return "\n".join(body) + "\n"


__all__ = ["JaxMatrixPrinter", "generate_function"]
