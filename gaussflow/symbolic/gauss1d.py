r"""One-dimensional Gaussian expectations $E[f(\mu + \sigma\xi)]$, $\xi \sim \mathcal N(0, 1)$,
in closed form, by rules (SymPy; nothing numeric).

`gauss_expect_1d(f, z, mu, sigma)` expands $f(z)$ into terms and applies one rule per term:

- **polynomial** $p(z)$: $\int p(\mu + \sigma u)\, \varphi(u)\, du$ by the moments of $\xi$;
- **truncated polynomial** $p(z)\, H(a z + b)$ ($H$ the Heaviside step, $a \ne 0$): the
  half-line integral $\int_c^\infty u^n \varphi(u)\, du = c^{n-1}\varphi(c) + (n-1) J_{n-2}$
  (integration by parts; $J_0 = \tfrac12 \operatorname{erfc}(c/\sqrt2)$, $J_1 = \varphi(c)$);
- **point mass** $p(z)\, \delta(z - c)$: $p(c)\, \varphi((c - \mu)/\sigma)/\sigma$;
- **exp-quadratic** $p(z)\, e^{q(z)}$ with $q$ quadratic and $\mu + \sigma u \mapsto q$ concave:
  complete the square in $u$ and use the moments again;
- **erf** $p(z) \operatorname{erf}(a z + b)$: differentiate in the offset $b$,
  $\partial_b E[p(Z)\operatorname{erf}(aZ + b)] = \tfrac{2}{\sqrt\pi} E[p(Z)\, e^{-(aZ + b)^2}]$
  (an exp-quadratic term), then integrate back from $b = -\infty$, where the expectation is
  $-E[p(Z)]$ (an exp-quadratic integral over a half-line in $b$).

A term of another form raises `NoClosedForm` (the caller falls back to quadrature).
Each rule is checked against numerical integration in `tests/test_mlp.py`.
"""

from __future__ import annotations

import sympy as sp

__all__ = ["NoClosedForm", "gauss_expect_1d", "half_line_moment", "exp_quadratic_integral"]


class NoClosedForm(ValueError):
    """A term of the integrand has none of the forms the rules know."""


def _std_normal_pdf(c: sp.Expr) -> sp.Expr:
    return sp.exp(-c ** 2 / 2) / sp.sqrt(2 * sp.pi)


def half_line_moment(n: int, c: sp.Expr) -> sp.Expr:
    r"""$J_n(c) = \int_c^\infty u^n \varphi(u)\, du$ ($c = -\infty$: the moment $E[\xi^n]$)."""
    if c == -sp.oo:
        return sp.Integer(0) if n % 2 else sp.factorial2(n - 1) if n > 0 else sp.Integer(1)
    if n == 0:
        return sp.erfc(c / sp.sqrt(2)) / 2
    if n == 1:
        return _std_normal_pdf(c)
    return c ** (n - 1) * _std_normal_pdf(c) + (n - 1) * half_line_moment(n - 2, c)


def _poly_half_line(p: sp.Expr, w: sp.Symbol, c: sp.Expr) -> sp.Expr:
    r"""$\int_c^\infty p(w) \varphi(w)\, dw$ for a polynomial $p$ in $w$."""
    poly = sp.Poly(sp.expand(p), w)
    return sp.Add(*[coef * half_line_moment(int(m[0]), c) for m, coef in poly.terms()])


def exp_quadratic_integral(p: sp.Expr, u: sp.Symbol, A: sp.Expr, B: sp.Expr, C: sp.Expr,
                           lower: sp.Expr = -sp.oo) -> sp.Expr:
    r"""$\int_{\mathrm{lower}}^\infty p(u)\, e^{-A u^2 + B u + C}\, du$ for a polynomial $p$ and
    $A > 0$: with $u = B/(2A) + w/\sqrt{2A}$ it is
    $e^{C + B^2/(4A)} \sqrt{\pi / A}\, \int_{c}^\infty p(u(w))\, \varphi(w)\, dw$."""
    w = sp.Dummy("w", real=True)
    m = B / (2 * A)
    r = sp.sqrt(2 * A)
    c = -sp.oo if lower == -sp.oo else (lower - m) * r
    inner = _poly_half_line(p.xreplace({u: m + w / r}), w, c)
    return sp.exp(C + B ** 2 / (4 * A)) * sp.sqrt(sp.pi / A) * inner


def _split(term: sp.Expr, z: sp.Symbol):
    """`(polynomial part, special factor or None)`; `NoClosedForm` for two special factors or a
    non-polynomial rest."""
    special, rest = [], []
    for f in sp.Mul.make_args(term):
        base, e = (f, 1) if isinstance(f, sp.exp) else f.as_base_exp()
        if isinstance(base, (sp.Heaviside, sp.DiracDelta, sp.erf, sp.exp)) and base.has(z):
            if e != 1 or special:
                raise NoClosedForm(f"term {term}: more than one special factor")
            special.append(base)
        else:
            rest.append(f)
    p = sp.Mul(*rest)
    if not p.is_polynomial(z):
        raise NoClosedForm(f"term {term}: {p} is not a polynomial in {z}")
    return p, (special[0] if special else None)


def _linear(arg: sp.Expr, z: sp.Symbol, what: str):
    poly = sp.Poly(sp.expand(arg), z)
    if poly.degree() != 1:
        raise NoClosedForm(f"{what}({arg}): the argument is not affine in {z}")
    return poly.coeff_monomial(z), poly.coeff_monomial(1)


def _term_expect(term: sp.Expr, z: sp.Symbol, mu: sp.Expr, sigma: sp.Expr) -> sp.Expr:
    u = sp.Dummy("u", real=True)
    p, special = _split(term, z)
    pu = p.xreplace({z: mu + sigma * u})
    if special is None:
        return _poly_half_line(pu, u, -sp.oo)
    if isinstance(special, sp.Heaviside):
        a, b = _linear(special.args[0], z, "Heaviside")
        if not a.is_nonzero:
            raise NoClosedForm(f"{special}: zero slope")
        # a z + b >= 0  <=>  z >= -b/a (a > 0) or z <= -b/a (a < 0); u <-> -u for a < 0
        c = (-b / a - mu) / sigma
        if a.is_positive:
            return _poly_half_line(pu, u, c)
        if a.is_negative:
            return _poly_half_line(pu.xreplace({u: -u}), u, -c)
        raise NoClosedForm(f"{special}: the sign of the slope {a} is unknown")
    if isinstance(special, sp.DiracDelta):
        if len(special.args) != 1:
            raise NoClosedForm(f"{special}: derivatives of the delta")
        a, b = _linear(special.args[0], z, "DiracDelta")
        c0 = -b / a
        return p.xreplace({z: c0}) * _std_normal_pdf((c0 - mu) / sigma) / (sigma * sp.Abs(a))
    if isinstance(special, sp.exp):
        poly = sp.Poly(sp.expand(special.args[0].xreplace({z: mu + sigma * u})), u)
        if poly.degree() > 2:
            raise NoClosedForm(f"{special}: the exponent is not quadratic in {z}")
        A = sp.Rational(1, 2) - poly.coeff_monomial(u ** 2)
        B, C = poly.coeff_monomial(u), poly.coeff_monomial(1)
        if not A.is_positive:
            raise NoClosedForm(f"{special}: the integral may diverge")
        return exp_quadratic_integral(pu / sp.sqrt(2 * sp.pi), u, A, B, C)
    # erf(a z + b): d/db E[p erf(aZ + b)] = 2/sqrt(pi) E[p exp(-(aZ + b)^2)]; value -E[p] at -oo
    a, b = _linear(special.args[0], z, "erf")
    beta = sp.Dummy("b", real=True)
    rate = _term_expect(2 / sp.sqrt(sp.pi) * p * sp.exp(-(a * z + beta) ** 2), z, mu, sigma)
    # rate is p2(beta) exp(-A beta^2 + B beta + C): integrate beta over (-oo, b] by v = -beta
    v = sp.Dummy("v", real=True)
    return -_term_expect(p, z, mu, sigma) + _integrate_rate(rate.xreplace({beta: -v}), v, -b)


def _integrate_rate(expr: sp.Expr, v: sp.Symbol, lower: sp.Expr) -> sp.Expr:
    r"""$\int_{\mathrm{lower}}^\infty$ of a sum of terms $p(v) e^{q(v)}$ ($q$ quadratic)."""
    out = []
    for term in sp.Add.make_args(sp.powsimp(sp.expand(expr, power_exp=False))):
        p, special = _split(term, v)
        if special is None or not isinstance(special, sp.exp):
            raise NoClosedForm(f"rate term {term} is not exp-quadratic")
        poly = sp.Poly(sp.expand(special.args[0]), v)
        if poly.degree() != 2:
            raise NoClosedForm(f"rate term {term} is not exp-quadratic")
        A = -poly.coeff_monomial(v ** 2)
        out.append(exp_quadratic_integral(p, v, A, poly.coeff_monomial(v),
                                          poly.coeff_monomial(1), lower))
    return sp.Add(*out)


def gauss_expect_1d(f: sp.Expr, z: sp.Symbol, mu: sp.Expr, sigma: sp.Expr) -> sp.Expr:
    r"""$E[f(\mu + \sigma\xi)]$, $\xi \sim \mathcal N(0, 1)$, in closed form (see the module
    docstring for the rules).

    Parameters
    ----------
    f : sympy.Expr
        The integrand as an expression in `z` (`Max(0, z)` is rewritten with `Heaviside`).
    z : sympy.Symbol
        The integration variable.
    mu, sigma : sympy.Expr
        Mean and standard deviation ($\sigma > 0$) of $Z = \mu + \sigma\xi$.

    Returns
    -------
    sympy.Expr
        The expectation, simplified.

    Raises
    ------
    NoClosedForm
        When a term of the expanded integrand has none of the known forms.
    """
    f = sp.expand(sp.sympify(f).rewrite(sp.Heaviside))
    total = sp.Add(*[_term_expect(t, z, mu, sigma) for t in sp.Add.make_args(f)])
    return _tidy(total)


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Simplify a sum of (polynomial, erf and Gaussian-exponential) terms: exponents merged and
    factored term by term, then the whole simplified."""
    def merged(e):
        return sp.powsimp(e).replace(sp.exp, lambda a: sp.exp(sp.factor(a)))
    return sp.simplify(sp.Add(*[merged(t) for t in sp.Add.make_args(sp.expand(expr))]))
