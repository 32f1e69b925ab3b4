"""Gaussian calculus on SymPy matrix expressions.

Each function here is one rule of the calculus. Variants never call SymPy integration; they
declare a kernel and the engine (:mod:`gaussflow.derive.engine`) chains these rules. Every rule
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

from ..codegen import SqrtPSD


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
    grad = f.diff(v)  # column (n, 1): h - P v
    h = simplify_matrix(grad.subs(v, zero), symmetric)
    if not grad.has(v):
        P = ZeroMatrix(v.shape[0], v.shape[0])
    else:
        hess = grad.diff(v)
        if not isinstance(hess, MatrixExpr) or hess.has(v):
            raise ValueError("the log-kernel is not quadratic in the key token y")
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
