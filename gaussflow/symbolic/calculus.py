"""Gaussian calculus on SymPy matrix expressions.

Each function here is one rule of the calculus. Variants never call SymPy integration; they
declare a kernel and the engine (:mod:`gaussflow.symbolic.engine`) chains these rules. Every rule
is checked against brute force in ``tests/test_calculus.py`` (SymPy integration for d = 1,
Monte Carlo for d >= 2).

Conventions: vectors are ``(n, 1)`` column matrices; a scalar-valued matrix expression is
``(1, 1)``; ``N(alpha, Sigma)`` has density proportional to
``exp(-1/2 (y - alpha)^T Sigma^{-1} (y - alpha))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy import Identity, Inverse, MatAdd, MatMul, MatrixExpr, MatrixSymbol, Transpose, ZeroMatrix

from .special import SqrtPSD


class NotAffineError(ValueError):
    """The velocity field is not affine in x, so the affine closure rule is not exact."""


def simplify_matrix(expr, symmetric=()):
    """Light canonicalisation: use the symmetry of the given symbols, evaluate, expand."""
    for S in symmetric:
        expr = expr.xreplace({Transpose(S): S, Inverse(Transpose(S)): Inverse(S)})
    if not isinstance(expr, MatrixExpr):
        out = sp.expand(expr.doit())
    else:
        out = sp.expand(expr.doit()).doit()
    for S in symmetric:
        out = out.xreplace({Transpose(S): S, Inverse(Transpose(S)): Inverse(S)})
    return out


def is_zero_matrix(expr) -> bool:
    e = simplify_matrix(expr)
    return isinstance(e, ZeroMatrix) or e == 0 or getattr(e, "is_ZeroMatrix", False) is True


def jacobian(F: MatrixExpr, v) -> MatrixExpr:
    """``dF/dv`` in numerator layout, shape ``(len F, len v)``.

    SymPy's ``MatrixExpr.diff`` returns the transposed (denominator) layout for column vectors;
    we transpose it back so that ``F(v + dv) = F(v) + J dv``.
    """
    g = F.diff(v)
    if g.shape == (F.shape[0], v.shape[0]) and F.shape[0] != v.shape[0]:
        return simplify_matrix(g)
    return simplify_matrix(g.T)


@dataclass(frozen=True)
class Quadratic:
    """``f(y) = c0 + h^T y - 1/2 y^T P y`` (P symmetric), the canonical form of a log-kernel."""

    c0: MatrixExpr
    h: MatrixExpr
    P: MatrixExpr

    @property
    def has_quadratic_part(self) -> bool:
        return not is_zero_matrix(self.P)


def quadratic_coefficients(f: MatrixExpr, v, symmetric=()) -> Quadratic:
    """Read off ``c0, h, P`` of a ``(1, 1)`` expression quadratic in the column vector ``v``.

    ``h`` is the gradient at ``v = 0``, ``P`` minus the (symmetrised) Hessian; ``symmetric``
    lists matrix symbols known to be symmetric (e.g. ``Sigma``). Raises
    ``ValueError`` when ``f`` is not quadratic in ``v`` (the Hessian still depends on ``v``).
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
    """``N(alpha, Sigma)(dy) exp(log_kernel(y)) / Z = N(mean, cov)``.

    ``log Z = log_norm[0, 0] - 1/2 log_det`` with ``log_norm`` a ``(1, 1)`` matrix expression and
    ``log_det = log det B`` (0 when ``B = I``).
    """

    mean: MatrixExpr
    cov: MatrixExpr
    precision_factor: MatrixExpr  # B = I + Sigma P, so that the tilted precision is Sigma^{-1} B
    log_norm: MatrixExpr
    log_det: sp.Expr


def complete_the_square(log_kernel: MatrixExpr, v, alpha, Sigma) -> TiltedGaussian:
    """Tilt ``N(alpha, Sigma)`` in ``v`` by ``exp(log_kernel)`` and complete the square.

    The exponent of the product is ``-1/2 v^T Lam v + v^T eta + const`` with
    ``Lam = Sigma^{-1} + P`` and ``eta = Sigma^{-1} alpha + h`` (read off by
    :func:`quadratic_coefficients`). Factoring ``Lam = Sigma^{-1} B`` with ``B = I + Sigma P``
    gives the inverse-free form ``mean = B^{-1} (alpha + Sigma h)``, ``cov = B^{-1} Sigma``; the
    normaliser is ``log Z = c0 + 1/2 eta^T Lam^{-1} eta - 1/2 alpha^T Sigma^{-1} alpha - 1/2 log det B``
    (``E[exp(log_kernel(Y))]`` for ``Y ~ N(alpha, Sigma)``).
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
    """Moment ODEs of ``N(alpha, Sigma)`` pushed by an affine field ``Gamma(x) = Gamma(0) + J x``."""

    jacobian: MatrixExpr
    mean_rhs: MatrixExpr
    cov_rhs: MatrixExpr


def affine_closure(velocity: MatrixExpr, x, alpha, Sigma, symmetric=()) -> AffineClosure:
    """The closure rule for an affine velocity field.

    If ``Gamma(x) = b + J x`` then ``X ~ N(alpha, Sigma)`` flows to ``N(alpha(t), Sigma(t))`` with
    ``d alpha/dt = Gamma(alpha)`` and ``d Sigma/dt = J Sigma + Sigma J^T``. Raises
    :class:`NotAffineError` when the symbolic Jacobian still depends on ``x``. ``symmetric`` lists
    further symbols known to be symmetric (besides ``Sigma``).
    """
    sym = (Sigma, *symmetric)
    J = simplify_matrix(jacobian(velocity, x), sym)
    if J.has(x):
        raise NotAffineError("velocity is not affine in x; use a moment closure instead")
    mean_rhs = simplify_matrix(velocity.subs(x, alpha), sym)
    cov_rhs = simplify_matrix(J * Sigma + Sigma * J.T, sym)
    return AffineClosure(jacobian=J, mean_rhs=mean_rhs, cov_rhs=cov_rhs)


def inverse_rhs(cov_rhs: MatrixExpr, Sigma) -> MatrixExpr:
    """``d(Sigma^{-1})/dt = -Sigma^{-1} (d Sigma/dt) Sigma^{-1}``, simplified."""
    out = simplify_matrix(-Inverse(Sigma) * cov_rhs * Inverse(Sigma), (Sigma,))
    return out


# ----------------------------------------------------------------------------------------------
# Gaussian conditioning and the Gaussian Schrödinger (entropic self-coupling) system.


@dataclass(frozen=True)
class Conditional:
    """``Y | X = x ~ N(mean, cov)``; ``regression = Cov(Y, X) Cov(X)^{-1}`` (so ``dmean/dx``)."""

    mean: MatrixExpr
    cov: MatrixExpr
    regression: MatrixExpr


def gaussian_conditioning(x, mean_x, mean_y, cov_xx, cov_xy, cov_yy, symmetric=()) -> Conditional:
    """Condition a jointly Gaussian pair on ``X = x``.

    With ``Cov(X) = cov_xx``, ``Cov(X, Y) = E[(X - mean_x)(Y - mean_y)^T] = cov_xy`` and
    ``Cov(Y) = cov_yy``: ``E[Y | X = x] = mean_y + cov_xy^T cov_xx^{-1} (x - mean_x)`` and
    ``Cov(Y | X) = cov_yy - cov_xy^T cov_xx^{-1} cov_xy`` (Schur complement). The result is
    simplified with ``symmetric`` known to be symmetric, so that factors of ``cov_xx`` written
    as products (e.g. ``R^2`` with ``R = cov_xx^{1/2}``) cancel against the inverse.
    """
    reg = simplify_matrix(cov_xy.T * Inverse(cov_xx), symmetric)
    mean = simplify_matrix(mean_y + reg * (x - mean_x), symmetric)
    cov = simplify_matrix(cov_yy - reg * cov_xy, symmetric)
    return Conditional(mean=mean, cov=cov, regression=reg)


def cross_coefficient(log_kernel: MatrixExpr, x, y, symmetric=()) -> MatrixExpr:
    """The matrix ``G`` of the bilinear part ``x^T G y`` of a log-kernel jointly quadratic in x, y.

    ``G^T`` is the Jacobian in ``x`` of ``h(x) = grad_y log k(x, y)|_{y=0}``; raises
    ``ValueError`` if ``log k`` is not jointly quadratic (``G`` would depend on ``x``).
    """
    h = quadratic_coefficients(log_kernel, y, symmetric).h
    Gt = jacobian(h, x)
    if Gt.has(x) or Gt.has(y):
        raise ValueError("the log-kernel is not jointly quadratic in (x, y)")
    return simplify_matrix(Gt.T, symmetric)


@dataclass(frozen=True)
class SelfCoupling:
    """The entropic self-coupling of ``N(alpha, Sigma)`` for a log-kernel with bilinear part ``x^T G y``.

    Expressions use two placeholder symbols: ``R`` for ``Sigma^{1/2}`` (so ``R^2 = Sigma``) and
    ``M`` for ``(I + 4 H^T H)^{1/2}``; :meth:`realise` replaces them by ``SqrtPSD`` expressions.
    """

    G: MatrixExpr  # bilinear coefficient of the log-kernel
    C_symbol: MatrixExpr  # the unknown Cov(X, Y) in the stationarity equation
    equation: tuple  # (lhs, rhs): Sigma^{-1} C (Sigma - C^T Sigma^{-1} C)^{-1} = G
    H: MatrixExpr  # whitened coefficient R G R
    R: MatrixExpr
    M: MatrixExpr
    M_value: MatrixExpr  # the expression M stands for (I + 4 H^T H)^{1/2}, with R^2 -> Sigma
    D: MatrixExpr  # whitened cross-covariance: C = R D R
    cross_cov: MatrixExpr  # C = Cov(X, Y) (X: first marginal, Y: second)
    Sigma: MatrixExpr

    def realise(self, expr):
        """Substitute ``M`` and ``R = Sigma^{1/2}`` by symmetric PSD square roots."""
        expr = expr.xreplace({self.M: self.M_value})
        expr = expr.xreplace({sp.MatPow(self.R, 2): self.Sigma})
        return expr.xreplace({self.R: SqrtPSD(self.Sigma)})


def gaussian_self_coupling(log_kernel: MatrixExpr, x, y, Sigma) -> SelfCoupling:
    """Solve the Gaussian Schrödinger system for the self-coupling of ``N(alpha, Sigma)``.

    Problem: find ``pi(x, y) = a(x) b(y) k(x, y) mu(x) mu(y)`` with both marginals equal to
    ``mu = N(alpha, Sigma)`` (``k = exp(log_kernel)`` made doubly stochastic w.r.t. ``mu x mu``).
    With quadratic potentials ``log a``, ``log b`` the coupling is Gaussian,
    ``N((alpha, alpha), [[Sigma, C], [C^T, Sigma]])``. Every term of ``log k`` that depends on x
    alone or on y alone is absorbed by the potentials; only the bilinear part ``x^T G y``
    (:func:`cross_coefficient`) is fixed, and it must equal minus the off-diagonal block of the
    joint precision. By block inversion this is the matrix equation

        ``Sigma^{-1} C (Sigma - C^T Sigma^{-1} C)^{-1} = G``.

    Closed form: whiten, ``C = R D R`` with ``R = Sigma^{1/2}``; the equation becomes
    ``D (I - D^T D)^{-1} = H`` with ``H = R G R``. In the singular value basis of ``H`` (values
    ``s``) each value of ``D`` solves ``delta / (1 - delta^2) = s``, i.e.
    ``delta = 2 s / (1 + sqrt(1 + 4 s^2))`` (in ``[0, 1)``, so the joint covariance is valid), hence

        ``D = 2 H (I + (I + 4 H^T H)^{1/2})^{-1}``,   ``C = 2 R H (I + (I + 4 H^T H)^{1/2})^{-1} R``.

    No inverse of ``G`` (or ``A``) appears: singular kernels are covered (``s = 0 -> delta = 0``).
    (Cf. the closed forms of entropic OT between Gaussians, Janati et al. 2020, Mallasto et al.)
    """
    d = Sigma.shape[0]
    R = MatrixSymbol("R", d, d)
    M = MatrixSymbol("M", d, d)
    Csym = MatrixSymbol("C", d, d)
    sym = (Sigma, R, M)
    G = cross_coefficient(log_kernel, x, y, (Sigma,))
    lhs = Inverse(Sigma) * Csym * Inverse(Sigma - Csym.T * Inverse(Sigma) * Csym)
    H = simplify_matrix(R * G * R, sym)
    M_value = simplify_matrix(Identity(d) + 4 * H.T * H, sym).xreplace({sp.MatPow(R, 2): Sigma})
    M_value = SqrtPSD(M_value)
    D = simplify_matrix(2 * H * Inverse(Identity(d) + M), sym)
    C = simplify_matrix(R * D * R, sym)
    return SelfCoupling(G=G, C_symbol=Csym, equation=(lhs, G), H=H, R=R, M=M, M_value=M_value,
                        D=D, cross_cov=C, Sigma=Sigma)


# ----------------------------------------------------------------------------------------------
# Rules for the approximate (moment-projection) closures: Gaussian expectations of exp-quadratic
# weights times affine maps, Stein's lemma, scalar chain rule, mixture moment matching.


def gaussian_affine_product(F: MatrixExpr, G: MatrixExpr, v, mean, cov, symmetric=()) -> MatrixExpr:
    """``E[F(V) G(V)^T]`` for affine ``F``, ``G`` and ``V ~ N(mean, cov)``.

    ``F(V) = F(mean) + J_F (V - mean)`` (same for G), so the expectation is
    ``F(mean) G(mean)^T + J_F cov J_G^T``. Raises :class:`NotAffineError` if F or G is not affine.
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
    """``E[exp(ell(V)) F(V)]`` for ``V ~ N(alpha, Sigma)``, ``ell`` quadratic and ``F`` affine.

    ``mass = E[exp(ell(V))] = exp(log_mass) / sqrt(det B)``; the tilted law
    ``N(alpha, Sigma)(dv) exp(ell(v)) / mass`` is ``N(mean, cov)``; ``value = mass F(mean)``;
    ``jacobian = E[grad_v(exp(ell) F)] = mass (J_F + E_tilt[F grad ell^T])``. The integrals exist
    only while the tilted precision ``Sigma^{-1} B`` is positive definite, i.e. while
    ``integrability = I + Sigma^{1/2} P Sigma^{1/2}`` (``P`` minus the Hessian of ``ell``) is.
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


def expect_exp_quadratic_affine(log_weight: MatrixExpr, F: MatrixExpr, v, alpha, Sigma,
                                scalar=None) -> ExpQuadraticExpectation:
    """The rule "Gaussian expectation of exp-quadratic times affine", by completing the square.

    Centre first (``v = alpha + z``, ``z ~ N(0, Sigma)``) and tilt ``N(0, Sigma)`` by
    ``exp(ell(alpha + z))`` with :func:`complete_the_square`: at zero mean its normaliser is
    ``log_mass = c0 + 1/2 h^T B^{-1} Sigma h`` with no ``Sigma^{-1}`` (so singular ``Sigma`` is
    fine), and ``mass = exp(log_mass) (det B)^{-1/2}``. The tilted mean is ``alpha + B^{-1} Sigma h``
    and the tilted covariance ``B^{-1} Sigma``. For affine ``F``, ``E[exp(ell) F] = mass F(mean)``;
    ``grad(exp(ell) F) = exp(ell) (J_F + F grad ell^T)`` with ``grad ell`` affine, so its
    expectation is ``mass (J_F + F(mean) g(mean)^T + J_F cov J_g^T)`` (:func:`gaussian_affine_product`).

    ``scalar`` wraps a ``(1, 1)`` expression into a scalar (default: element ``[0, 0]``; the
    derivations pass :class:`~gaussflow.symbolic.special.Scalar`, which codegen prints).
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
    """``E[f(w^T Y + b) Y] = alpha E[f(Z)] + Sigma w E[f'(Z)]`` with ``Z ~ N(z_mean, z_var)``."""

    z_mean: MatrixExpr  # (1, 1): w^T alpha + b
    z_var: MatrixExpr  # (1, 1): w^T Sigma w
    coef_f: MatrixExpr  # alpha
    coef_fprime: MatrixExpr  # Sigma w


def stein_linear_index(w: MatrixExpr, bias, alpha, Sigma) -> SteinProjection:
    """Stein's lemma for a function of a linear index of ``Y ~ N(alpha, Sigma)``.

    With ``Z = w^T Y + b`` and ``Y - alpha = Sigma w (Z - E Z) / (w^T Sigma w) + (independent
    part)``, Gaussian integration by parts ``E[g(Z)(Z - E Z)] = Var(Z) E[g'(Z)]`` gives
    ``E[f(Z) Y] = alpha E[f(Z)] + Sigma w E[f'(Z)]``: every expectation left is one-dimensional.
    """
    sym = (Sigma,)
    return SteinProjection(z_mean=simplify_matrix(w.T * alpha + bias * sp.OneMatrix(1, 1), sym)
                           if bias != 0 else simplify_matrix(w.T * alpha, sym),
                           z_var=simplify_matrix(w.T * Sigma * w, sym),
                           coef_f=alpha, coef_fprime=simplify_matrix(Sigma * w, sym))


def scalar_gradient(expr, v, scalar_cls) -> MatrixExpr:
    """Gradient (a column) in ``v`` of a scalar expression built from ``scalar_cls((1,1) exprs)``.

    Chain rule: each ``scalar_cls(M_i)`` is replaced by a dummy ``u_i``, the scalar derivative
    ``d expr / d u_i`` is taken by SymPy (through any function with an ``fdiff``), and the
    gradients ``grad M_i`` (matrix calculus) are summed with those weights.
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


def jacobian_weighted(terms, v, scalar_cls) -> MatrixExpr:
    """Jacobian of ``sum_i c_i(v) F_i(v)`` (scalars ``c_i``, columns ``F_i``): product rule
    ``sum_i (F_i grad c_i^T + c_i dF_i/dv)``."""
    out = []
    for c, F in terms:
        out.append(F * scalar_gradient(c, v, scalar_cls).T)
        out.append(c * _jacobian_or_zero(F, v))
    return MatAdd(*out)


@dataclass(frozen=True)
class MixtureMoments:
    mean: MatrixExpr
    cov: MatrixExpr


def moment_match_mixture(weights, means, covs) -> MixtureMoments:
    """The Gaussian with the mean and covariance of ``sum_i p_i N(m_i, S_i)`` (``sum p_i = 1``).

    ``mean = sum_i p_i m_i``; ``cov = sum_i p_i (S_i + (m_i - mean)(m_i - mean)^T)`` (law of total
    covariance). For two components this is ``p S_1 + (1 - p) S_2 + p (1 - p) D D^T``,
    ``D = m_1 - m_2``, which is how :func:`simplify_matrix` leaves it after expansion.
    """
    if len(weights) != len(means) or len(means) != len(covs) or not means:
        raise ValueError("weights, means and covs must have the same positive length")
    mean = simplify_matrix(MatAdd(*[p * m for p, m in zip(weights, means)]))
    dev = [m - mean for m in means]
    cov = simplify_matrix(MatAdd(*[p * (S + D * D.T) for p, S, D in zip(weights, covs, dev)]))
    return MixtureMoments(mean=mean, cov=cov)
