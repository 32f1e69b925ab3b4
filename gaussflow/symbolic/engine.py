r"""The derivation engine: from a declaration's score, normalisation and value map to closure ODEs.

Every normalisation rule turns the declaration into a velocity
$\Gamma[\mathcal N(\alpha, \Sigma)](x)$:

- `derive_normalised_exp` (softmax over keys): tilt $\mathcal N(\alpha, \Sigma)$ by the kernel
  and complete the square;
- `derive_sinkhorn` (doubly stochastic): the Gaussian Schrödinger system and conditioning;
- the rules of `.projection` (no normalisation): Gaussian moments, exp-quadratic integrals,
  Stein's lemma;
- `derive_affine`: a velocity given directly (e.g. $W x + b$).

Then `finish` decides exactness: an affine velocity gets the affine closure rule (exact);
otherwise the rule must name its moment projection (`exact = False`). `build` assembles the
`.derivation.Derivation` with the list of functions to generate (`.derivation.Program`,
printed later by `gaussflow.codegen`; this layer imports nothing numeric).
`sum_derivations` gives the derivation of a superposition. Scores and values may involve the
time $t$; every generated function takes it first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sympy as sp
from sympy import Identity, MatrixExpr, MatrixSymbol, ZeroMatrix

from . import symbols as S
from .calculus import (
    NotAffineError,
    affine_closure,
    complete_the_square,
    inverse_rhs,
    quadratic_coefficients,
    simplify_matrix,
)
from .coupling import gaussian_conditioning, gaussian_self_coupling
from .derivation import ClosedForm, Derivation, Program, Step, order_params, signature


def value_map() -> MatrixExpr:
    r"""The default value map $y \mapsto W_O V y$ as a matrix acting on column vectors."""
    return S.W_O * S.V


def build(name: str, exact: bool, velocity: MatrixExpr, mean_rhs: MatrixExpr,
          jacobian: MatrixExpr, cov_rhs: MatrixExpr, steps: Sequence[Step],
          closed_forms: Sequence[ClosedForm] = (), notes: Sequence[str] = (),
          runtime: Mapping[str, Any] | None = None,
          extras: Sequence[tuple[str, str, Sequence[sp.Basic], str]] = (),
          projection: str | None = None, extra_params: Sequence[sp.Basic] = ()) -> Derivation:
    r"""Assemble a `Derivation` and the functions to generate.

    The standard functions are `velocity` ($\Gamma[\mathcal N(\alpha, \Sigma)](x)$), `closure`
    ($(d\alpha/dt, J)$), `moment_rhs` ($(d\alpha/dt, d\Sigma/dt)$), `flow_rhs` (the solver's
    flow-map state, `flow_exprs`) and one function per generated closed form.

    Parameters
    ----------
    name : str
        The field's name.
    exact : bool
        Whether the closure is exact (`False`: a moment projection, named by `projection`).
    velocity, mean_rhs, jacobian, cov_rhs : MatrixExpr
        $\Gamma(x)$, $d\alpha/dt$, $J$ and $d\Sigma/dt$.
    steps : sequence of Step
        The derivation's steps, for the rendered derivation.
    closed_forms : sequence of ClosedForm
        Closed forms (those with `generate` set become functions).
    notes : sequence of str
        Notes shown with the derivation.
    runtime : mapping, optional
        Runtime data of the rule, stored on the `Derivation`.
    extras : sequence of (str, str, sequence, str)
        `(name, kind, outputs, doc)` with `kind` `"token"` (arguments
        `t, x, alpha, Sigma, *params`) or `"state"` (`t, alpha, Sigma, *params`): rule-specific
        functions (e.g. a Jacobian or an integrability matrix) generated next to the standard
        ones.
    projection : str, optional
        The moment projection of an approximate closure.
    extra_params : sequence of sympy objects
        Parameters every generated function takes although no expression involves them.

    Returns
    -------
    Derivation
    """
    extra_outputs = [o for _, _, outs, _ in extras for o in outs]
    closed_exprs = [cf.expr for cf in closed_forms if cf.generate]
    params = order_params([velocity, mean_rhs, jacobian, cov_rhs, *extra_outputs, *closed_exprs,
                           *extra_params])
    vel_args, mom_args = signature(params)
    programs = [
        Program("velocity", vel_args, (velocity,), f"Gamma[N(alpha, Sigma)](x) for the {name} field.",
                params),
        Program("closure", mom_args, (mean_rhs, jacobian),
                "(d alpha/dt, J) with d Sigma/dt = J Sigma + Sigma J^T.", params),
        Program("moment_rhs", mom_args, (mean_rhs, cov_rhs), "(d alpha/dt, d Sigma/dt).", params),
        Program("flow_rhs", (S.t, S.alpha, S.Phi, S.Sigma0, *params), flow_exprs(mean_rhs, jacobian),
                "(d alpha/dt, d Phi/dt = J Phi) with Sigma = Phi Sigma0 Phi^T.", params,
                state=S.Phi, symmetric=(S.Sigma0,)),
    ]
    for ex_name, kind, outs, doc in extras:
        args = vel_args if kind == "token" else mom_args
        programs.append(Program(ex_name, args, tuple(outs), doc, params))
    for cf in (c for c in closed_forms if c.generate):
        programs.append(Program(cf.key, (S.t, *params), (cf.expr,), cf.doc, params))
    return Derivation(name=name, exact=exact, params=params, velocity=velocity, mean_rhs=mean_rhs,
                      jacobian=jacobian, cov_rhs=cov_rhs, steps=tuple(steps),
                      closed_forms=tuple(closed_forms), notes=tuple(notes), projection=projection,
                      programs=tuple(programs), runtime=dict(runtime or {}))


def flow_exprs(mean_rhs: MatrixExpr, jacobian: MatrixExpr) -> tuple[MatrixExpr, MatrixExpr]:
    r"""$(d\alpha/dt,\ d\Phi/dt = J \Phi)$ in the solver's state: $\Sigma = \Phi \Sigma_0 \Phi^T$
    substituted, so that the printer can form $Q \Phi$, $K \Phi$ before anything else."""
    sub = {S.Sigma: S.Phi * S.Sigma0 * S.Phi.T}
    fix = {sp.Transpose(S.Sigma0): S.Sigma0}
    return (mean_rhs.xreplace(sub).doit().xreplace(fix),
            (jacobian.xreplace(sub) * S.Phi).doit().expand().xreplace(fix))


def integrate_in_time(expr: MatrixExpr) -> MatrixExpr:
    r"""$\int_0^t \mathrm{expr}(s)\, ds$ for a matrix expression whose terms are
    (scalar of $t$) $\times$ (matrix)."""
    s = sp.Dummy("s", real=True)
    terms = sp.Add.make_args(expr) if not isinstance(expr, sp.MatAdd) else expr.args
    out = []
    for term in terms:
        coeff, mat = term.as_coeff_mmul() if hasattr(term, "as_coeff_mmul") else (1, term)
        coeff = sp.sympify(coeff)
        scal = [a for a in getattr(mat, "args", ()) if not isinstance(a, sp.MatrixExpr)]
        mats = [a for a in getattr(mat, "args", ()) if isinstance(a, sp.MatrixExpr)]
        if isinstance(mat, sp.MatMul) and scal:
            coeff, mat = coeff * sp.Mul(*scal), sp.MatMul(*mats)
        integral = sp.integrate(coeff.xreplace({S.t: s}), (s, 0, S.t))
        out.append(sp.simplify(integral) * mat)
    return simplify_matrix(sp.MatAdd(*out))


def identity_value_closed_form(cov_rhs: MatrixExpr) -> tuple[ClosedForm, ...]:
    r"""With $W_O = V = I$: $d\Sigma^{-1}/dt$; a closed form when it does not involve $\Sigma$.

    Then $\Sigma(t)^{-1} = \Sigma(0)^{-1} + \int_0^t (d\Sigma^{-1}/ds)\, ds$ (the time integral
    taken symbolically, so a depth schedule such as $\beta(t)$ is covered). Returns `ClosedForm`
    records (none when `cov_rhs` has no value map $W_O$, $V$; only the rate, not generated,
    when it involves $\Sigma$); the increment is generated as `inverse_increment(t, *params)` for
    `gaussflow.theory` and `gaussflow.closed_form`.
    """
    subs = {S.W_O: Identity(S.d), S.V: Identity(S.d)}
    if not cov_rhs.has(S.W_O) or not cov_rhs.has(S.V):
        return ()
    rhs = inverse_rhs(cov_rhs.xreplace(subs), S.Sigma)
    rate = ClosedForm("inverse_rate", r"\frac{d\Sigma^{-1}}{dt}\Big|_{W_O V = I}", rhs,
                      "d Sigma^{-1}/dt with W_O V = I.", generate=False)
    if rhs.has(S.Sigma):
        return (rate,)
    inc = integrate_in_time(rhs)
    return (
        rate,
        ClosedForm("inverse_increment",
                   r"\Sigma(t)^{-1} - \Sigma(0)^{-1}\Big|_{W_O V = I}", inc,
                   "Sigma(t)^{-1} - Sigma(0)^{-1} = int_0^t d Sigma^{-1}/ds ds, with W_O V = I."),
    )


def finish(name: str, velocity: MatrixExpr, steps: Sequence[Step], notes: Sequence[str] = (),
           runtime: Mapping[str, Any] | None = None, symmetric: Sequence[sp.Basic] = (),
           realise: Callable[[sp.Basic], sp.Basic] | None = None) -> Derivation:
    r"""The closure of a velocity: the affine closure rule when `velocity` is affine in $x$.

    `symmetric`: placeholder symbols known to be symmetric; `realise`: a map applied to the
    final expressions (replacing placeholders, e.g. $\Sigma^{1/2}$). A velocity that is not
    affine needs a moment projection, which only the rules of `.projection` supply: raises
    `.calculus.NotAffineError` naming the variant. The closed forms of
    `identity_value_closed_form` are attached when there is no `realise` map.
    """
    try:
        cl = affine_closure(velocity, S.x, S.alpha, S.Sigma, symmetric)
    except NotAffineError:
        raise NotAffineError(
            f"{name}: the velocity is not affine in x, and this normalisation has no moment "
            f"projection rule; Gamma(x) = {velocity}") from None
    steps = list(steps) + [
        Step(
            "Affine closure",
            "The velocity is affine in $x$ with Jacobian $J$; a Gaussian pushed by an affine field "
            "stays Gaussian, with $\\dot\\alpha = \\Gamma(\\alpha)$ and "
            "$\\dot\\Sigma = J\\Sigma + \\Sigma J^\\top$.",
            (("J", cl.jacobian), (r"\frac{d\alpha}{dt}", cl.mean_rhs),
             (r"\frac{d\Sigma}{dt}", cl.cov_rhs)),
        )
    ]
    exprs = [velocity, cl.mean_rhs, cl.jacobian, cl.cov_rhs]
    if realise is not None:
        exprs = [realise(e) for e in exprs]
    closed = identity_value_closed_form(exprs[3]) if realise is None else ()
    return build(name, True, *exprs, steps, closed, notes, runtime)


def kernel_step(log_kernel: MatrixExpr, text: str) -> Step:
    """The derivation step that shows the log-kernel, with the explanation `text`."""
    return Step("Kernel", text, ((r"\log k(x, y)", log_kernel),))


def derive_normalised_exp(name: str, log_kernel: MatrixExpr, value: MatrixExpr | None = None,
                          notes: Sequence[str] = ()) -> Derivation:
    """Derive the closure of attention with weights `exp(log_kernel(x, y))` normalised over $y$.

    `value` is the value map (default `value_map`).
    """
    value = value_map() if value is None else value
    quad = quadratic_coefficients(log_kernel, S.y, (S.Sigma,))
    tilt = complete_the_square(log_kernel, S.y, S.alpha, S.Sigma)
    velocity = simplify_matrix(value * tilt.mean, (S.Sigma,))
    steps = [
        kernel_step(log_kernel, "Attention weights of key $y$ seen from query $x$, normalised "
                    "over $y \\sim \\mu$:"),
        Step("Canonical form in y",
             "Read off $\\log k = c_0(x) + h(x)^\\top y - \\tfrac12 y^\\top P y$:",
             (("h(x)", quad.h), ("P", quad.P))),
        Step("Tilted Gaussian (completing the square)",
             "$\\mathcal N(\\alpha,\\Sigma)(dy)\\,k(x,y)/Z(x)$ is Gaussian with precision "
             "$\\Sigma^{-1}B$, $B = I + \\Sigma P$:",
             (("m(x)", tilt.mean), (r"\Sigma_x", tilt.cov))),
        Step("Velocity", "$\\Gamma[\\mu](x) = (\\text{value map})\\, m(x)$:",
             ((r"\Gamma(x)", velocity),)),
    ]
    return finish(name, velocity, steps, notes)


def derive_sinkhorn(name: str, log_kernel: MatrixExpr, value: MatrixExpr | None = None,
                    notes: Sequence[str] = ()) -> Derivation:
    r"""Derive the closure of attention with weights `exp(log_kernel)` made doubly stochastic.

    The weights of key $y$ seen from query $x$ are $\pi(x, y) / \mu(x)$ where $\pi$ is the
    entropic self-coupling of $\mu$ (`.coupling.gaussian_self_coupling`); the velocity is
    the conditional mean $E_\pi[\mathrm{value}(Y) \mid X = x]$
    (`.coupling.gaussian_conditioning`). `value` is the value map (default `value_map`).
    """
    value = value_map() if value is None else value
    sc = gaussian_self_coupling(log_kernel, S.x, S.y, S.Sigma)
    R = sc.R
    sym = (S.Sigma, R, sc.M)
    # Conditioning on X = x in N((alpha, alpha), [[Sigma, C], [C^T, Sigma]]), with Sigma = R^2.
    cond = gaussian_conditioning(S.x, S.alpha, S.alpha, R**2, sc.cross_cov, R**2, sym)
    velocity = simplify_matrix(value * cond.mean, sym)
    lhs, rhs = sc.equation
    steps = [
        kernel_step(log_kernel, "Attention weights of key $y$ seen from query $x$, before the "
                    "Sinkhorn scaling:"),
        Step("Schrödinger system",
             "Find $\\pi(x, y) = a(x)\\, b(y)\\, k(x, y)\\, \\mu(x) \\mu(y)$ with both marginals "
             "$\\mu = \\mathcal N(\\alpha, \\Sigma)$. With quadratic potentials $\\log a, \\log b$ the "
             "coupling is Gaussian, $\\mathcal N\\big((\\alpha, \\alpha), "
             "\\left[\\begin{smallmatrix}\\Sigma & C\\\\ C^\\top & \\Sigma\\end{smallmatrix}\\right]\\big)$"
             " with $C = \\operatorname{Cov}(X, Y)$. Terms of $\\log k$ in $x$ alone or $y$ alone are "
             "absorbed by the potentials; the bilinear part $x^\\top G y$ must equal minus the "
             "off-diagonal block of the joint precision. Block inversion gives a matrix equation "
             "for $C$:",
             (("G", sc.G), (sp.latex(lhs, mat_symbol_style="plain"), rhs))),
        Step("Closed-form solution",
             "Whiten with $R = \\Sigma^{1/2}$ (symmetric PSD root): $C = R D R$, "
             "$D (I - D^\\top D)^{-1} = H$. In the singular basis of $H$ each singular value "
             "solves $\\delta/(1 - \\delta^2) = s$, so $\\delta = 2s/(1 + \\sqrt{1 + 4 s^2})$; no "
             "inverse of $G$ is needed (singular kernels included). The code evaluates "
             "$(I + M)^{-1}$ from the singular values $s$ of $H$ (one eigendecomposition of "
             "$\\left[\\begin{smallmatrix} 0 & H \\\\ H^\\top & 0 \\end{smallmatrix}\\right]$), "
             "never forming $I + 4 H^\\top H$, whose rounding swamps the small $s$ when "
             "$\\Sigma$ is large and ill-conditioned:",
             (("R", sc.realise(R)), ("H", sc.H), ("M", sc.M_value), ("D", sc.D),
              ("C", sc.cross_cov))),
        Step("Gaussian conditioning",
             "Seen from $x$ the keys have law $\\pi(y \\mid x)$; its mean is "
             "$E[Y \\mid X = x] = \\alpha + C^\\top \\Sigma^{-1}(x - \\alpha)$, in which $\\Sigma^{-1}$ "
             "cancels against $R$:",
             ((r"E[Y \mid X = x]", cond.mean),)),
        Step("Velocity", "$\\Gamma[\\mu](x) = (\\text{value map})\\, E[Y \\mid X = x]$:",
             ((r"\Gamma(x)", velocity),)),
    ]
    return finish(name, velocity, steps, notes, symmetric=(R, sc.M), realise=sc.realise)


def derive_affine(name: str, velocity: MatrixExpr, notes: Sequence[str] = ()) -> Derivation:
    r"""Derive the closure of a velocity field that does not depend on $\mu$ (e.g. $W x + b$)."""
    steps = [Step("Velocity", "The field does not depend on the token distribution:",
                  ((r"\Gamma(x)", velocity),))]
    return finish(name, velocity, steps, notes)


def _subscripted(derivation, i):
    """Map every weight symbol (and the dimensions `k`, `k_v`) of `derivation` to a copy indexed
    `i`."""
    dims = {S.k: sp.Symbol(f"k_{i}", integer=True, positive=True),
            S.k_v: sp.Symbol(f"k_{{v,{i}}}", integer=True, positive=True)}
    mapping = {}
    for p in derivation.params:
        if isinstance(p, MatrixSymbol):
            shape = tuple(sp.sympify(n).xreplace(dims) for n in p.shape)
            mapping[p] = MatrixSymbol(f"{p.name}_{i}", *shape)
        else:
            mapping[p] = sp.Symbol(f"{p.name}_{i}", **p.assumptions0)
    return mapping


def sum_derivations(name: str, parts: Sequence[Derivation],
                    notes: Sequence[str] = ()) -> Derivation:
    r"""The derivation of a superposition $\Gamma_1 + \dots + \Gamma_n$ from the parts' derivations.

    Velocities add; both the affine closure rule and the moment projection are linear in the
    field, so $d\alpha/dt$, $J$ and $d\Sigma/dt$ add. Part $i$'s weights get the subscript $i$
    ($Q \to Q_1$, $\beta \to \beta_1$, ...). Exact iff every part is exact.
    """
    parts = tuple(parts)
    steps, terms, runtime = [], [], {}
    for i, D in enumerate(parts, 1):
        m = _subscripted(D, i)
        e = [simplify_matrix(ex.xreplace(m), (S.Sigma,))
             for ex in (D.velocity, D.mean_rhs, D.jacobian, D.cov_rhs)]
        terms.append(e)
        runtime.update(D.runtime)
        kernel = [(lab.replace(r"k(x, y)", f"k_{i}(x, y)"), ex.xreplace(m))
                  for st in D.steps if st.title == "Kernel" for lab, ex in st.exprs]
        steps.append(Step(f"Summand {i}: {D.name}",
                          f"From `gaussflow derive {D.name}`, weights indexed by {i}:",
                          (*kernel, (rf"\Gamma_{i}(x)", e[0]), (rf"J_{i}", e[2]))))
    velocity, mean_rhs, J, cov_rhs = (simplify_matrix(sp.MatAdd(*[t[j] for t in terms]), (S.Sigma,))
                                      for j in range(4))
    steps.append(Step("Superposition",
                      "Velocities add, and the closure is linear in the field, so "
                      "$\\dot\\alpha$, $J$ and $\\dot\\Sigma$ are the sums of the summands'.",
                      ((r"\Gamma(x)", velocity), ("J", J))))
    exact = all(D.exact for D in parts)
    projection = None if exact else "sum of the summands' moment projections"
    return build(name, exact, velocity, mean_rhs, J, cov_rhs, steps, (), notes, runtime,
                 projection=projection)


def zero_vector() -> MatrixExpr:
    """The zero column vector of dimension $d$."""
    return ZeroMatrix(S.d, 1)
