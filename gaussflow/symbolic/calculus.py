r"""Gaussian calculus on SymPy matrix expressions.

Each function here is one rule of the calculus. Variants never call SymPy integration; they
declare a kernel and the engine (`gaussflow.symbolic.engine`) chains these rules. Every rule
is checked against brute force in `tests/test_calculus.py` (SymPy integration for $d = 1$,
Monte Carlo for $d \ge 2$).

Conventions: vectors are `(n, 1)` column matrices; a scalar-valued matrix expression is
`(1, 1)`; $\mathcal N(\alpha, \Sigma)$ has density proportional to
$\exp(-\tfrac12 (y - \alpha)^\top \Sigma^{-1} (y - \alpha))$.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import sympy as sp
from sympy import Identity, Inverse, MatAdd, MatMul, MatrixExpr, MatrixSymbol, Transpose, ZeroMatrix

from .special import SqrtPSD


class NotAffineError(ValueError):
    """The velocity field is not affine in $x$, so the affine closure rule is not exact."""


def simplify_matrix(expr: sp.Basic, symmetric: Sequence[MatrixExpr] = ()) -> sp.Basic:
    """Light canonicalisation: use the symmetry of the given symbols, evaluate, expand.

    Parameters
    ----------
    expr : sympy.Basic
        A matrix or scalar expression.
    symmetric : sequence of MatrixExpr
        Matrix symbols known to be symmetric: their transposes (and the inverses of their
        transposes) are replaced by themselves (their inverses) before and after expansion.

    Returns
    -------
    sympy.Basic
        The canonicalised expression (the same kind as `expr`).
    """
    for S in symmetric:
        expr = expr.xreplace({Transpose(S): S, Inverse(Transpose(S)): Inverse(S)})
    if not isinstance(expr, MatrixExpr):
        out = sp.expand(expr.doit())
    else:
        out = sp.expand(expr.doit()).doit()
    for S in symmetric:
        out = out.xreplace({Transpose(S): S, Inverse(Transpose(S)): Inverse(S)})
    return out


def is_zero_matrix(expr: sp.Basic) -> bool:
    """Whether `expr` is zero (a `ZeroMatrix` or `0`) after `simplify_matrix`."""
    e = simplify_matrix(expr)
    return isinstance(e, ZeroMatrix) or e == 0 or getattr(e, "is_ZeroMatrix", False) is True


def jacobian(F: MatrixExpr, v: MatrixSymbol) -> MatrixExpr:
    r"""$\partial F / \partial v$ in numerator layout, shape `(len F, len v)`.

    SymPy's `MatrixExpr.diff` returns the transposed (denominator) layout for column vectors;
    we transpose it back so that $F(v + dv) = F(v) + J\, dv$.
    """
    g = F.diff(v)
    if g.shape == (F.shape[0], v.shape[0]) and F.shape[0] != v.shape[0]:
        return simplify_matrix(g)
    return simplify_matrix(g.T)


@dataclass(frozen=True)
class Quadratic:
    r"""$f(y) = c_0 + h^\top y - \tfrac12 y^\top P y$ ($P$ symmetric), the canonical form of a
    log-kernel."""

    c0: MatrixExpr
    h: MatrixExpr
    P: MatrixExpr

    @property
    def has_quadratic_part(self) -> bool:
        """Whether $P$ is not (symbolically) zero."""
        return not is_zero_matrix(self.P)


def quadratic_coefficients(f: MatrixExpr, v: MatrixSymbol,
                           symmetric: Sequence[MatrixExpr] = ()) -> Quadratic:
    r"""Read off $c_0, h, P$ of a `(1, 1)` expression quadratic in the column vector `v`.

    $h$ is the gradient at $v = 0$, $P$ minus the (symmetrised) Hessian.

    Parameters
    ----------
    f : MatrixExpr
        A `(1, 1)` expression, $f(v) = c_0 + h^\top v - \tfrac12 v^\top P v$.
    v : MatrixSymbol
        The column vector.
    symmetric : sequence of MatrixExpr
        Matrix symbols known to be symmetric (e.g. `Sigma`).

    Returns
    -------
    Quadratic
        The coefficients `c0`, `h`, `P`.

    Raises
    ------
    ValueError
        When `f` is not `(1, 1)` or not quadratic in `v` (the Hessian still depends on `v`).
    """
    if f.shape != (1, 1):
        raise ValueError(f"quadratic_coefficients needs a (1, 1) expression, got shape {f.shape}")
    zero = ZeroMatrix(*v.shape)
    not_quadratic = ValueError(f"the expression is not quadratic in {v.name}: {f}")
    try:
        grad = f.diff(v)  # column (n, 1): h - P v
        hess = grad.diff(v) if grad.has(v) else None
    except (AttributeError, TypeError, NotImplementedError):
        raise not_quadratic from None
    h = simplify_matrix(grad.subs(v, zero), symmetric)
    if hess is None:
        P = ZeroMatrix(v.shape[0], v.shape[0])
    else:
        if not isinstance(hess, MatrixExpr) or hess.has(v):
            raise not_quadratic
        hess = simplify_matrix(hess, symmetric)
        if hess == simplify_matrix(hess.T, symmetric):
            P = simplify_matrix(-hess, symmetric)
        else:
            P = simplify_matrix(-(hess + hess.T) / 2, symmetric)
    c0 = simplify_matrix(f.subs(v, zero), symmetric)
    return Quadratic(c0=c0, h=h, P=P)


@dataclass(frozen=True)
class TiltedGaussian:
    r"""$\mathcal N(\alpha, \Sigma)(dy)\, e^{\mathtt{log\_kernel}(y)} / Z = \mathcal N(m, C)$.

    $m$ = `mean`, $C$ = `cov`.
    $\log Z$ = `log_norm[0, 0]` $- \tfrac12$ `log_det`, with `log_norm` a `(1, 1)` matrix
    expression and `log_det` $= \log\det B$ ($0$ when $B = I$).
    """

    mean: MatrixExpr
    cov: MatrixExpr
    precision_factor: MatrixExpr  # B = I + Sigma P, so that the tilted precision is Sigma^-1 B
    log_norm: MatrixExpr
    log_det: sp.Expr


def complete_the_square(log_kernel: MatrixExpr, v: MatrixSymbol, alpha: MatrixExpr,
                        Sigma: MatrixExpr) -> TiltedGaussian:
    r"""Tilt $\mathcal N(\alpha, \Sigma)$ in $v$ by $\exp(\mathtt{log\_kernel})$ and complete the
    square.

    The exponent of the product is $-\tfrac12 v^\top \Lambda v + v^\top \eta + \mathrm{const}$ with
    $\Lambda = \Sigma^{-1} + P$ and $\eta = \Sigma^{-1} \alpha + h$ (read off by
    `quadratic_coefficients`). Factoring $\Lambda = \Sigma^{-1} B$ with $B = I + \Sigma P$
    gives the inverse-free form $\mathrm{mean} = B^{-1} (\alpha + \Sigma h)$,
    $\mathrm{cov} = B^{-1} \Sigma$; the normaliser is
    $$\log Z = c_0 + \tfrac12 \eta^\top \Lambda^{-1} \eta - \tfrac12 \alpha^\top \Sigma^{-1} \alpha
    - \tfrac12 \log\det B$$
    ($Z = E[\exp(\mathtt{log\_kernel}(Y))]$ for $Y \sim \mathcal N(\alpha, \Sigma)$).

    Parameters
    ----------
    log_kernel : MatrixExpr
        A `(1, 1)` expression quadratic in `v`.
    v : MatrixSymbol
        The `(n, 1)` integration variable.
    alpha, Sigma : MatrixExpr
        Mean `(n, 1)` and (symmetric) covariance `(n, n)` of the Gaussian.

    Returns
    -------
    TiltedGaussian
        The tilted law's mean and covariance, $B$, and $\log Z$ in two parts.
    """
    n = v.shape[0]
    log_density = -sp.Rational(1, 2) * (v - alpha).T * Inverse(Sigma) * (v - alpha)
    sym = (Sigma,)
    total = quadratic_coefficients(MatAdd(log_density, log_kernel), v, sym)
    kern = quadratic_coefficients(log_kernel, v, sym)
    eta, Lam = total.h, total.P
    # Factor Sigma^{-1} out of the precision: Sigma * Lam = I + Sigma P.
    B = simplify_matrix(MatMul(Sigma, Lam), sym)
    Sigma_eta = simplify_matrix(MatMul(Sigma, eta), sym)  # alpha + Sigma h
    if B == Identity(n):
        mean, cov = Sigma_eta, Sigma
    else:
        mean = MatMul(Inverse(B), Sigma_eta)
        cov = MatMul(Inverse(B), Sigma)
    # log Z: the constant left after completing the square.
    quad = MatMul(eta.T, mean)  # eta^T Lam^{-1} eta = eta^T B^{-1} Sigma eta
    log_norm = simplify_matrix(
        kern.c0 + sp.Rational(1, 2) * quad - sp.Rational(1, 2) * alpha.T * Inverse(Sigma) * alpha,
        sym,
    )
    log_det = 0 if B == Identity(n) else sp.log(sp.Determinant(B))
    return TiltedGaussian(mean=simplify_matrix(mean, sym), cov=simplify_matrix(cov, sym),
                          precision_factor=B, log_norm=log_norm, log_det=log_det)


@dataclass(frozen=True)
class AffineClosure:
    r"""Moment ODEs of $\mathcal N(\alpha, \Sigma)$ pushed by an affine field
    $\Gamma(x) = \Gamma(0) + J x$."""

    jacobian: MatrixExpr
    mean_rhs: MatrixExpr
    cov_rhs: MatrixExpr


def affine_closure(velocity: MatrixExpr, x: MatrixSymbol, alpha: MatrixExpr, Sigma: MatrixExpr,
                   symmetric: Sequence[MatrixExpr] = ()) -> AffineClosure:
    r"""The closure rule for an affine velocity field.

    If $\Gamma(x) = b + J x$ then $X \sim \mathcal N(\alpha, \Sigma)$ flows to
    $\mathcal N(\alpha(t), \Sigma(t))$ with $d\alpha/dt = \Gamma(\alpha)$ and
    $d\Sigma/dt = J \Sigma + \Sigma J^\top$.

    Parameters
    ----------
    velocity : MatrixExpr
        $\Gamma(x)$, a `(d, 1)` expression.
    x : MatrixSymbol
        The token variable.
    alpha, Sigma : MatrixExpr
        The Gaussian's mean and covariance (`Sigma` is taken as symmetric).
    symmetric : sequence of MatrixExpr
        Further symbols known to be symmetric (besides `Sigma`).

    Returns
    -------
    AffineClosure
        $J$, $d\alpha/dt$ and $d\Sigma/dt$.

    Raises
    ------
    NotAffineError
        When the symbolic Jacobian still depends on `x`.
    """
    sym = (Sigma, *symmetric)
    J = simplify_matrix(jacobian(velocity, x), sym)
    if J.has(x):
        raise NotAffineError("velocity is not affine in x; use a moment closure instead")
    mean_rhs = simplify_matrix(velocity.subs(x, alpha), sym)
    cov_rhs = simplify_matrix(J * Sigma + Sigma * J.T, sym)
    return AffineClosure(jacobian=J, mean_rhs=mean_rhs, cov_rhs=cov_rhs)


def inverse_rhs(cov_rhs: MatrixExpr, Sigma: MatrixExpr) -> MatrixExpr:
    r"""$d(\Sigma^{-1})/dt = -\Sigma^{-1} (d\Sigma/dt) \Sigma^{-1}$, simplified (`cov_rhs` is
    $d\Sigma/dt$)."""
    out = simplify_matrix(-Inverse(Sigma) * cov_rhs * Inverse(Sigma), (Sigma,))
    return out


# ----------------------------------------------------------------------------------------------
# Gaussian conditioning and the Gaussian Schrödinger (entropic self-coupling) system.


def gaussian_affine_product(F: MatrixExpr, G: MatrixExpr, v: MatrixSymbol, mean: MatrixExpr,
                            cov: MatrixExpr, symmetric: Sequence[MatrixExpr] = ()) -> MatrixExpr:
    r"""$E[F(V) G(V)^\top]$ for affine $F$, $G$ and $V \sim \mathcal N(m, C)$ (`mean`, `cov`).

    $F(V) = F(m) + J_F (V - m)$ (same for $G$), so the expectation is
    $F(m) G(m)^\top + J_F C J_G^\top$. Raises `NotAffineError` if $F$ or $G$ is not affine.
    (`symmetric` is accepted for a uniform signature; the result is left unsimplified.)
    """
    JF, JG = _jacobian_or_zero(F, v), _jacobian_or_zero(G, v)
    if JF.has(v) or JG.has(v):
        raise NotAffineError("gaussian_affine_product needs affine maps of the Gaussian variable")
    return MatAdd(F.xreplace({v: mean}) * G.xreplace({v: mean}).T, JF * cov * JG.T)


def _jacobian_or_zero(F, v):
    if not F.has(v):
        return ZeroMatrix(F.shape[0], v.shape[0])
    return jacobian(F, v)


@dataclass(frozen=True)
class ExpQuadraticExpectation:
    r"""$E[\exp(\ell(V)) F(V)]$ for $V \sim \mathcal N(\alpha, \Sigma)$, $\ell$ quadratic and $F$
    affine.

    `mass` $= E[\exp(\ell(V))] = \exp(\mathtt{log\_mass}) / \sqrt{\det B}$; the tilted law
    $\mathcal N(\alpha, \Sigma)(dv)\, \exp(\ell(v)) / \mathtt{mass}$ is
    $\mathcal N(\mathtt{mean}, \mathtt{cov})$; `value` $= \mathtt{mass}\, F(\mathtt{mean})$;
    `jacobian`
    $= E[\nabla_v(e^{\ell} F)] = \mathtt{mass}\, (J_F + E_{\mathrm{tilt}}[F\, \nabla\ell^\top])$.
    The integrals exist only while the tilted precision $\Sigma^{-1} B$ is positive definite,
    i.e. while `integrability` $= I + \Sigma^{1/2} P \Sigma^{1/2}$ ($P$ minus the Hessian of
    $\ell$) is.
    """

    log_mass: MatrixExpr  # (1, 1)
    precision_factor: MatrixExpr  # B = I + Sigma P
    mass: sp.Expr
    mean: MatrixExpr
    cov: MatrixExpr
    value: MatrixExpr
    jacobian: MatrixExpr
    integrability: MatrixExpr
    quadratic: Quadratic


def expect_exp_quadratic_affine(log_weight: MatrixExpr, F: MatrixExpr, v: MatrixSymbol,
                                alpha: MatrixExpr, Sigma: MatrixExpr,
                                scalar: Callable[[MatrixExpr], sp.Expr] | None = None,
                                ) -> ExpQuadraticExpectation:
    r"""The rule "Gaussian expectation of exp-quadratic times affine", by completing the square.

    Centre first ($v = \alpha + z$, $z \sim \mathcal N(0, \Sigma)$) and tilt
    $\mathcal N(0, \Sigma)$ by $\exp(\ell(\alpha + z))$ with `complete_the_square`: at zero mean
    its normaliser is $\mathtt{log\_mass} = c_0 + \tfrac12 h^\top B^{-1} \Sigma h$ with no
    $\Sigma^{-1}$ (so singular $\Sigma$ is fine), and
    $\mathtt{mass} = \exp(\mathtt{log\_mass}) (\det B)^{-1/2}$ (here $c_0$, $h$, $B$ are those of
    $\ell(\alpha + z)$ in $z$). The tilted mean is $\alpha + B^{-1} \Sigma h$ and the tilted
    covariance $B^{-1} \Sigma$. For affine $F$,
    $E[e^{\ell} F] = \mathtt{mass}\, F(\mathtt{mean})$;
    $\nabla(e^{\ell} F) = e^{\ell} (J_F + F\, \nabla\ell^\top)$ with $g = \nabla\ell$ affine, so
    its expectation is
    $$\mathtt{mass}\, \left(J_F + F(\mathtt{mean})\, g(\mathtt{mean})^\top
    + J_F\, \mathtt{cov}\, J_g^\top\right)$$
    (`gaussian_affine_product`).

    Parameters
    ----------
    log_weight : MatrixExpr
        $\ell(v)$, a `(1, 1)` expression quadratic in `v`.
    F : MatrixExpr
        A column affine in `v`.
    v : MatrixSymbol
        The Gaussian variable.
    alpha, Sigma : MatrixExpr
        Mean and (symmetric) covariance of $V$.
    scalar : callable, optional
        Wraps a `(1, 1)` expression into a scalar (default: element `[0, 0]`; the derivations
        pass `gaussflow.symbolic.special.Scalar`, which codegen prints).

    Returns
    -------
    ExpQuadraticExpectation
        Mass, tilted moments, value, Jacobian and integrability matrix (see that class).

    Raises
    ------
    ValueError
        When `log_weight` is not quadratic in `v`.
    NotAffineError
        When `F` is not affine in `v`.
    """
    scalar = scalar or (lambda M: M[0, 0])
    sym = (Sigma,)
    n = v.shape[0]
    z = MatrixSymbol("z_c", n, 1)
    ell_z = simplify_matrix(log_weight.xreplace({v: alpha + z}), sym)
    tilt = complete_the_square(ell_z, z, ZeroMatrix(n, 1), Sigma)
    if tilt.log_norm.has(z) or tilt.mean.has(z):
        raise ValueError("the log-weight is not quadratic in the Gaussian variable")
    B = tilt.precision_factor
    q = quadratic_coefficients(log_weight, v, sym)
    if B == Identity(n):
        mass = sp.exp(scalar(tilt.log_norm))
    else:
        mass = sp.exp(scalar(tilt.log_norm)) / sp.sqrt(sp.Determinant(B))
    JF = _jacobian_or_zero(F, v)
    if JF.has(v):
        raise NotAffineError("expect_exp_quadratic_affine needs an affine F")
    # Results are left unexpanded (shared sub-expressions are bound once by the code generator).
    mean = MatAdd(alpha, tilt.mean) if tilt.mean != ZeroMatrix(n, 1) else alpha
    grad_ell = simplify_matrix(log_weight.diff(v), sym)  # column h - P v
    value = F.xreplace({v: mean})
    jac = MatAdd(JF, gaussian_affine_product(F, grad_ell, v, mean, tilt.cov, sym))
    R = SqrtPSD(Sigma)
    integ = simplify_matrix(Identity(n) + R * q.P * R, sym)
    return ExpQuadraticExpectation(log_mass=tilt.log_norm, precision_factor=B, mass=mass,
                                   mean=mean, cov=tilt.cov, value=value, jacobian=jac,
                                   integrability=integ, quadratic=q)


@dataclass(frozen=True)
class SteinProjection:
    r"""$E[f(w^\top Y + b)\, Y] = \alpha E[f(Z)] + \Sigma w\, E[f'(Z)]$ with
    $Z \sim \mathcal N(\mathtt{z\_mean}, \mathtt{z\_var})$."""

    z_mean: MatrixExpr  # (1, 1): w^T alpha + b
    z_var: MatrixExpr  # (1, 1): w^T Sigma w
    coef_f: MatrixExpr  # alpha
    coef_fprime: MatrixExpr  # Sigma w


def stein_linear_index(w: MatrixExpr, bias: sp.Expr | float, alpha: MatrixExpr,
                       Sigma: MatrixExpr) -> SteinProjection:
    r"""Stein's lemma for a function of a linear index of $Y \sim \mathcal N(\alpha, \Sigma)$.

    With $Z = w^\top Y + b$ ($b$ = `bias`, a scalar) and
    $Y - \alpha = \Sigma w\, (Z - E Z) / (w^\top \Sigma w) + (\text{independent part})$,
    Gaussian integration by parts $E[g(Z)(Z - E Z)] = \operatorname{Var}(Z)\, E[g'(Z)]$ gives
    $E[f(Z)\, Y] = \alpha E[f(Z)] + \Sigma w\, E[f'(Z)]$: every expectation left is
    one-dimensional.
    """
    sym = (Sigma,)
    return SteinProjection(z_mean=simplify_matrix(w.T * alpha + bias * sp.OneMatrix(1, 1), sym)
                           if bias != 0 else simplify_matrix(w.T * alpha, sym),
                           z_var=simplify_matrix(w.T * Sigma * w, sym),
                           coef_f=alpha, coef_fprime=simplify_matrix(Sigma * w, sym))


def scalar_gradient(expr: sp.Expr, v: MatrixSymbol, scalar_cls: type) -> MatrixExpr:
    r"""Gradient (a column) in `v` of a scalar expression built from `scalar_cls((1, 1) exprs)`.

    Chain rule: each `scalar_cls(M_i)` is replaced by a dummy $u_i$, the scalar derivative
    $\partial\, \mathtt{expr} / \partial u_i$ is taken by SymPy (through any function with an
    `fdiff`), and the gradients $\nabla M_i$ (matrix calculus) are summed with those weights.
    """
    atoms = sorted(expr.atoms(scalar_cls), key=sp.default_sort_key)
    dummies = [sp.Dummy(f"u{i}", real=True) for i in range(len(atoms))]
    plain = expr.xreplace(dict(zip(atoms, dummies)))
    terms = []
    for a, u in zip(atoms, dummies):
        coef = sp.diff(plain, u).xreplace(dict(zip(dummies, atoms)))
        if coef == 0:
            continue
        terms.append(coef * simplify_matrix(a.args[0].diff(v)))
    if not terms:
        return ZeroMatrix(v.shape[0], 1)
    return MatAdd(*terms)


def jacobian_weighted(terms: Sequence[tuple[sp.Expr, MatrixExpr]], v: MatrixSymbol,
                      scalar_cls: type) -> MatrixExpr:
    r"""Jacobian of $\sum_i c_i(v) F_i(v)$ (scalars $c_i$, columns $F_i$; `terms` holds the pairs
    $(c_i, F_i)$): product rule $\sum_i (F_i\, \nabla c_i^\top + c_i\, \partial F_i / \partial v)$,
    with $\nabla c_i$ by `scalar_gradient`."""
    out = []
    for c, F in terms:
        out.append(F * scalar_gradient(c, v, scalar_cls).T)
        out.append(c * _jacobian_or_zero(F, v))
    return MatAdd(*out)


@dataclass(frozen=True)
class MixtureMoments:
    """Mean and covariance of a mixture (`moment_match_mixture`)."""

    mean: MatrixExpr
    cov: MatrixExpr


def moment_match_mixture(weights: Sequence[sp.Expr], means: Sequence[MatrixExpr],
                         covs: Sequence[MatrixExpr]) -> MixtureMoments:
    r"""The Gaussian with the mean and covariance of $\sum_i p_i \mathcal N(m_i, S_i)$
    ($\sum_i p_i = 1$).

    $\mathrm{mean} = \sum_i p_i m_i$;
    $\mathrm{cov} = \sum_i p_i \left(S_i + (m_i - \mathrm{mean})(m_i - \mathrm{mean})^\top\right)$
    (law of total covariance). For two components this is
    $p S_1 + (1 - p) S_2 + p (1 - p) D D^\top$, $D = m_1 - m_2$, which `simplify_matrix` leaves
    with $D D^\top$ expanded.

    Raises `ValueError` unless the three sequences have the same positive length.
    """
    if len(weights) != len(means) or len(means) != len(covs) or not means:
        raise ValueError("weights, means and covs must have the same positive length")
    mean = simplify_matrix(MatAdd(*[p * m for p, m in zip(weights, means)]))
    dev = [m - mean for m in means]
    cov = simplify_matrix(MatAdd(*[p * (S + D * D.T) for p, S, D in zip(weights, covs, dev)]))
    return MixtureMoments(mean=mean, cov=cov)
