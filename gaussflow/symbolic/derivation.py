"""The `Derivation` record: what the engine derived for a variant, and its renderings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import sympy as sp
from sympy import MatrixExpr, MatrixSymbol

from . import symbols as S


@dataclass(frozen=True)
class Program:
    """One function to generate: `def name(*args): return outputs` (symbolic; printed by
    `gaussflow.codegen`).

    Attributes
    ----------
    name : str
        The function's name.
    args : tuple
        Its arguments, SymPy `Symbol`s and `MatrixSymbol`s.
    outputs : tuple
        The SymPy expressions it returns.
    doc : str
        The generated function's docstring.
    constants : tuple
        Arguments fixed during a solve (weights, scales).
    state : MatrixSymbol or None
        The flow-map symbol whose adjacent weights multiply first.
    symmetric : tuple or None
        Matrix arguments passed symmetric (`None`: `Sigma` when it is an argument).
    """

    name: str
    args: tuple
    outputs: tuple
    doc: str = ""
    constants: tuple = ()
    state: Any = None
    symmetric: tuple | None = None


@dataclass(frozen=True)
class ClosedForm:
    """A closed-form result a rule found.

    Attributes
    ----------
    key : str
        A name for code, e.g. `"inverse_increment"`.
    label : str
        The left-hand side, in LaTeX.
    expr : sympy.Basic
        The result.
    doc : str
        A one-line description.
    generate : bool
        Whether it is generated as a function `key(t, *params)` (`gaussflow.theory` evaluates
        those).
    """

    key: str
    label: str
    expr: Any
    doc: str = ""
    generate: bool = True

    @property
    def time_structure(self) -> str:
        r"""How `expr` depends on the time $t$: `"linear"` ($\mathrm{expr} = t X$, $X$ free of
        $t$), `"profile"` ($\mathrm{expr} = g(t) X$: one scalar profile times a matrix free of
        $t$), or `"general"` (anything else, e.g. terms with different profiles)."""
        return time_structure(self.expr)


def time_structure(expr: sp.Basic) -> str:
    """`"linear"`, `"profile"` or `"general"`: see `ClosedForm.time_structure`."""
    terms = expr.args if isinstance(expr, sp.MatAdd) else (expr,)
    coeffs = []
    for term in terms:
        coeff, mat = term.as_coeff_mmul() if hasattr(term, "as_coeff_mmul") else (1, term)
        coeff = sp.sympify(coeff)
        scal = [a for a in getattr(mat, "args", ()) if not isinstance(a, MatrixExpr)]
        if isinstance(mat, sp.MatMul) and scal:
            coeff, mat = coeff * sp.Mul(*scal), sp.MatMul(*[a for a in mat.args
                                                           if isinstance(a, MatrixExpr)])
        if mat.has(S.t):
            return "general"
        coeffs.append(coeff)
    ratios = [sp.simplify(c / coeffs[0]) for c in coeffs[1:]] if coeffs[0] != 0 else [S.t]
    if any(r.has(S.t) for r in ratios):
        return "general"
    g = coeffs[0]
    if sp.simplify(g - S.t * g.subs(S.t, 1)) == 0:
        return "linear"
    return "profile"


@dataclass(frozen=True)
class Step:
    """One step of a derivation: a title, a sentence, and the expressions it produced."""

    title: str
    text: str
    exprs: tuple = ()  # ((label, sympy expr), ...)


#: LaTeX names of symbols whose Python name is longer than their mathematical one.
_LATEX_NAMES = {S.bias: "b"}


def _latex(expr) -> str:
    if isinstance(expr, str):
        return expr
    return sp.latex(expr, mat_symbol_style="plain",
                    symbol_names=_LATEX_NAMES).replace("+ -", "- ")


@dataclass(frozen=True, eq=False)
class Derivation:
    r"""Symbolic derivation of one variant's Gaussian closure.

    Attributes
    ----------
    name : str
        The variant.
    exact : bool
        Whether the Gaussian family is invariant under its flow.
    params : tuple
        The weight symbols, in the order of the generated functions' trailing arguments.
    velocity : MatrixExpr
        $\Gamma[\mathcal N(\alpha, \Sigma)](x)$ as a `(d, 1)` matrix expression.
    mean_rhs : MatrixExpr
        $d\alpha/dt$.
    jacobian : MatrixExpr
        The matrix $J$ with $d\Sigma/dt = J \Sigma + \Sigma J^\top$.
    cov_rhs : MatrixExpr
        $d\Sigma/dt$ itself.
    steps : tuple of Step
        The chain of rules that produced them (rendered by `markdown`).
    closed_forms : tuple of ClosedForm
        Extra results (e.g. $d\Sigma^{-1}/dt$ when $W_O V = I$).
    notes : tuple of str
        Remarks listed under "Exactness" in the document.
    projection : str or None
        `None` for an exact closure, else the name of the moment projection used.
    programs : tuple of Program
        The functions to generate; every one takes the time `t` first:
        `velocity(t, x, alpha, Sigma, *params)`, `closure(t, alpha, Sigma, *params)`
        ($(d\alpha/dt, J)$), `moment_rhs(t, alpha, Sigma, *params)`,
        `flow_rhs(t, alpha, Phi, Sigma0, *params)` (the solver's right-hand side in its state
        $\Sigma = \Phi \Sigma_0 \Phi^\top$), and rule-specific extras.
    runtime : dict
        Further names the generated code calls (numerical rules of custom nodes), passed to
        `gaussflow.codegen.compile_source` as `extra`.
    jax_source : str
        The printed source of `programs`, filled in by `gaussflow.field.realise` (empty on a
        purely symbolic derivation).
    functions : dict
        The compiled functions by name, filled in likewise: `jax_source` with each product
        laid out by its size (`gaussflow.codegen.compile.matmul_by_size`).
    matmul_functions : dict
        The same functions compiled from `jax_source` as printed (`A @ B`); equal to
        `functions` up to rounding (tested), used to compare the two layouts.
    """

    name: str
    exact: bool
    params: tuple
    velocity: MatrixExpr
    mean_rhs: MatrixExpr
    jacobian: MatrixExpr
    cov_rhs: MatrixExpr
    steps: tuple = ()
    closed_forms: tuple = ()  # (ClosedForm, ...)
    notes: tuple = ()
    projection: str | None = None
    programs: tuple = ()
    runtime: dict = field(default_factory=dict, compare=False, repr=False)
    jax_source: str = ""
    functions: dict = field(default_factory=dict, compare=False, repr=False)
    matmul_functions: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def time_dependent(self) -> bool:
        """Whether the closure depends on the time `t` explicitly (a depth schedule)."""
        return any(e.has(S.t) for e in (self.velocity, self.mean_rhs, self.jacobian))

    # -- rendering ------------------------------------------------------------------------
    def equations(self) -> list[tuple[str, str]]:
        """`(label, LaTeX)` pairs of the final results."""
        eqs = [
            (r"\Gamma[\mu](x)", _latex(self.velocity)),
            (r"\frac{d\alpha}{dt}", _latex(self.mean_rhs)),
            (r"J", _latex(self.jacobian)),
            (r"\frac{d\Sigma}{dt}", _latex(self.cov_rhs)),
        ]
        return eqs

    def latex(self) -> str:
        """The final ODEs as a LaTeX `aligned` block."""
        return aligned(self.equations())

    def text(self) -> str:
        """Plain-text summary (what `gaussflow derive NAME` prints)."""
        kind = "exact" if self.exact else f"approximate ({self.projection})"
        lines = [f"{self.name}: {kind} closure", ""]
        lines.append(f"  Gamma(x)     = {sp.sstr(self.velocity)}")
        lines.append(f"  d alpha/dt   = {sp.sstr(self.mean_rhs)}")
        lines.append(f"  J            = {sp.sstr(self.jacobian)}")
        lines.append(f"  d Sigma/dt   = {sp.sstr(self.cov_rhs)}")
        for cf in self.closed_forms:
            lines.append(f"  {cf.doc or cf.key}: {sp.sstr(cf.expr)}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The derivation written out step by step (the files in `derivations/`)."""
        kind = "exact" if self.exact else "approximate"
        out = [f"# {self.name} — Gaussian closure ({kind})", ""]
        out.append("_Generated by `gaussflow derive " + self.name + " --markdown`; do not edit._")
        out.append("")
        out.append(
            "Conventions: query token $x$, key token $y$, $\\mu = \\mathcal N(\\alpha, \\Sigma)$, "
            "score $s(x, y) = \\beta \\langle Q x, K y\\rangle = \\beta\\, y^\\top K^\\top Q x$, "
            "value map $y \\mapsto W_O V y$; vectors are columns."
        )
        out.append("")
        out += render_steps(self.steps)
        out.append("## Result")
        out.append("")
        out.append("$$")
        out.append(self.latex())
        out.append("$$")
        out.append("")
        if self.closed_forms:
            out.append("## Closed forms")
            out.append("")
            for cf in self.closed_forms:
                out.append(f"$$ {cf.label} = {_latex(cf.expr)} $$")
                out.append("")
        out.append("## Exactness")
        out.append("")
        if self.exact:
            out.append(
                "The velocity field is affine in $x$, so the Gaussian family is invariant: the "
                "ODEs above are exact."
            )
        else:
            out.append(
                "The velocity field is not affine in $x$: the Gaussian family is not invariant and "
                f"the ODEs above are a moment projection ({self.projection}; an approximation, "
                "whose error against the particle system is measured by `gaussflow validate`)."
            )
        out.append("")
        for note in self.notes:
            out.append(f"- {note}")
        if self.notes:
            out.append("")
        out.append("## Generated JAX source")
        out.append("")
        out.append("```python")
        out.append(self.jax_source.rstrip())
        out.append("```")
        out.append("")
        return "\n".join(out)

    def _repr_latex_(self) -> str:
        return "$$" + self.latex() + "$$"

    def __repr__(self) -> str:
        kind = "exact" if self.exact else "approximate"
        return f"Derivation({self.name!r}, {kind}, params={[p.name for p in self.params]})"


def aligned(equations: Sequence[tuple[str, str]]) -> str:
    """`(label, LaTeX)` pairs as a LaTeX `aligned` block, one `label &= rhs` row each."""
    rows = [f"{lhs} &= {rhs}" for lhs, rhs in equations]
    return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"


def render_steps(steps: Sequence[Step]) -> list[str]:
    """Markdown lines of numbered steps (title, sentence, displayed equations)."""
    out = []
    for i, st in enumerate(steps, 1):
        out += [f"## {i}. {st.title}", ""]
        if st.text:
            out += [st.text, ""]
        for label, expr in st.exprs:
            out += [f"$$ {label} = {_latex(expr)} $$", ""]
    return out


@dataclass(frozen=True, eq=False)
class MapDerivation:
    r"""Symbolic derivation of a map applied between layers (e.g. layer norm): the moments of
    its output for a Gaussian input $\mathcal N(\alpha, \Sigma)$.

    Attributes
    ----------
    name : str
        The map (the document's title).
    exact : bool
        Whether the output is Gaussian with exactly these moments.
    outputs : tuple
        `(label, expr)` pairs: the output mean and covariance.
    steps : tuple of Step
        The rules that produced them.
    notes : tuple of str
        Remarks listed under "Exactness".
    projection : str or None
        The approximation used (`None` when exact).
    programs : tuple of Program
        The functions to generate.
    conventions : str
        The document's conventions line.
    names : tuple of str
        Plain-text names of the outputs (for `text`).
    runtime, jax_source, functions, matmul_functions
        As for `Derivation` (filled in by `gaussflow.field.realise`).
    """

    name: str
    exact: bool
    outputs: tuple
    steps: tuple = ()
    notes: tuple = ()
    projection: str | None = None
    programs: tuple = ()
    conventions: str = ""
    names: tuple = ("mean", "cov")
    runtime: dict = field(default_factory=dict, compare=False, repr=False)
    jax_source: str = ""
    functions: dict = field(default_factory=dict, compare=False, repr=False)
    matmul_functions: dict = field(default_factory=dict, compare=False, repr=False)

    def equations(self) -> list[tuple[str, str]]:
        """`(label, LaTeX)` pairs of the final results."""
        return [(lhs, _latex(rhs)) for lhs, rhs in self.outputs]

    def latex(self) -> str:
        """The results as a LaTeX `aligned` block."""
        return aligned(self.equations())

    def text(self) -> str:
        """Plain-text summary (what `gaussflow derive NAME` prints)."""
        kind = "exact" if self.exact else f"approximate ({self.projection})"
        lines = [f"{self.name}: {kind} Gaussian map", ""]
        lines += [f"  {name} = {sp.sstr(rhs)}" for name, (_, rhs) in zip(self.names, self.outputs)]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def markdown(self) -> str:
        """The derivation written out step by step (a file in `derivations/`)."""
        kind = "exact" if self.exact else "approximate"
        out = [f"# {self.name} — Gaussian map between layers ({kind})", "",
               f"_Generated by `gaussflow derive {self.name} --markdown`; do not edit._", ""]
        if self.conventions:
            out += [self.conventions, ""]
        out += render_steps(self.steps)
        out += ["## Result", "", "$$", self.latex(), "$$", "", "## Exactness", ""]
        out += [f"- {note}" for note in self.notes]
        out += ["", "## Generated JAX source", "", "```python", self.jax_source.rstrip(), "```", ""]
        return "\n".join(out)

    def _repr_latex_(self) -> str:
        return "$$" + self.latex() + "$$"

    def __repr__(self) -> str:
        return f"MapDerivation({self.name!r}, {'exact' if self.exact else 'approximate'})"


def signature(params: Sequence[sp.Basic]) -> tuple[tuple, tuple]:
    """Argument lists of the generated per-token and per-state functions (time first):
    `(t, x, alpha, Sigma, *params)` and `(t, alpha, Sigma, *params)`."""
    return (S.t, S.x, S.alpha, S.Sigma, *params), (S.t, S.alpha, S.Sigma, *params)


def order_params(exprs: Iterable[sp.Basic]) -> tuple:
    """The weight symbols appearing in `exprs`, in a fixed order: those named
    `Q, K, V, W_O, W, b, bias, beta, c, epsilon` first (in that order), then the others by name
    (the state symbols, the dimensions and `t` are left out)."""
    state = set(S.STATE)
    found = set()
    for e in exprs:
        for s in e.free_symbols:
            if isinstance(s, MatrixSymbol) and s not in state:
                found.add(s)
            elif isinstance(s, sp.Symbol) and s not in S.DIMENSIONS and s != S.t:
                found.add(s)
    order = ["Q", "K", "V", "W_O", "W", "b", "bias", "beta", "c", "epsilon"]
    return tuple(sorted(found, key=lambda s: (order.index(s.name) if s.name in order else 99,
                                              s.name)))
