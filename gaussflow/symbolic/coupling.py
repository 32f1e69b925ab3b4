r"""Gaussian conditioning and the Gaussian Schrödinger system: the rules behind doubly
stochastic (Sinkhorn) attention.

- `gaussian_conditioning`: the law of $y$ given $x$ for a jointly Gaussian pair;
- `cross_coefficient`: the matrix $G$ of the $x$-$y$ cross term $x^\top G^\top y$ of a
  jointly quadratic log-kernel;
- `gaussian_self_coupling`: the entropic self-coupling of $\mathcal N(\alpha, \Sigma)$ under a
  jointly quadratic kernel, in closed form.

Conventions as in `gaussflow.symbolic.calculus`; each rule is checked against brute force in
`tests/test_calculus.py` and `tests/test_sinkhorn.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import sympy as sp
from sympy import Identity, Inverse, MatrixExpr, MatrixSymbol

from .calculus import jacobian, quadratic_coefficients, simplify_matrix
from .special import SinkhornFactor, SqrtPSD


@dataclass(frozen=True)
class Conditional:
    r"""$Y \mid X = x \sim \mathcal N(\mathtt{mean}, \mathtt{cov})$;
    `regression` $= \operatorname{Cov}(Y, X) \operatorname{Cov}(X)^{-1}$
    (so $d\,\mathtt{mean}/dx$)."""

    mean: MatrixExpr
    cov: MatrixExpr
    regression: MatrixExpr


def gaussian_conditioning(x: MatrixExpr, mean_x: MatrixExpr, mean_y: MatrixExpr,
                          cov_xx: MatrixExpr, cov_xy: MatrixExpr, cov_yy: MatrixExpr,
                          symmetric: Sequence[MatrixExpr] = ()) -> Conditional:
    r"""Condition a jointly Gaussian pair on $X = x$.

    With $\operatorname{Cov}(X) = C_{xx}$,
    $\operatorname{Cov}(X, Y) = E[(X - m_x)(Y - m_y)^\top] = C_{xy}$ and
    $\operatorname{Cov}(Y) = C_{yy}$:
    $$E[Y \mid X = x] = m_y + C_{xy}^\top C_{xx}^{-1} (x - m_x), \qquad
    \operatorname{Cov}(Y \mid X) = C_{yy} - C_{xy}^\top C_{xx}^{-1} C_{xy}$$
    (Schur complement). The result is simplified with `symmetric` known to be symmetric, so that
    factors of $C_{xx}$ written as products (e.g. $R^2$ with $R = C_{xx}^{1/2}$) cancel against
    the inverse.

    Parameters
    ----------
    x : MatrixExpr
        The value conditioned on.
    mean_x, mean_y : MatrixExpr
        $m_x = E[X]$ and $m_y = E[Y]$.
    cov_xx, cov_xy, cov_yy : MatrixExpr
        $C_{xx}$, $C_{xy}$ and $C_{yy}$ as above.
    symmetric : sequence of MatrixExpr
        Matrix symbols known to be symmetric.

    Returns
    -------
    Conditional
        The conditional mean and covariance, and the regression matrix $C_{xy}^\top C_{xx}^{-1}$.
    """
    reg = simplify_matrix(cov_xy.T * Inverse(cov_xx), symmetric)
    mean = simplify_matrix(mean_y + reg * (x - mean_x), symmetric)
    cov = simplify_matrix(cov_yy - reg * cov_xy, symmetric)
    return Conditional(mean=mean, cov=cov, regression=reg)


def cross_coefficient(log_kernel: MatrixExpr, x: MatrixSymbol, y: MatrixSymbol,
                      symmetric: Sequence[MatrixExpr] = ()) -> MatrixExpr:
    r"""The matrix $G$ of the bilinear part $x^\top G y$ of a log-kernel jointly quadratic in
    $x$, $y$.

    $G^\top$ is the Jacobian in $x$ of $h(x) = \nabla_y \log k(x, y)|_{y=0}$; raises
    `ValueError` if $\log k$ is not jointly quadratic ($G$ would depend on $x$).
    """
    h = quadratic_coefficients(log_kernel, y, symmetric).h
    Gt = jacobian(h, x)
    if Gt.has(x) or Gt.has(y):
        raise ValueError("the log-kernel is not jointly quadratic in (x, y)")
    return simplify_matrix(Gt.T, symmetric)


@dataclass(frozen=True)
class SelfCoupling:
    r"""The entropic self-coupling of $\mathcal N(\alpha, \Sigma)$ for a log-kernel with bilinear
    part $x^\top G y$.

    Expressions use two placeholder symbols: `R` for $\Sigma^{1/2}$ (so $R^2 = \Sigma$) and
    `M` for $(I + 4 H^\top H)^{1/2}$; `realise` replaces them by `SqrtPSD` expressions.
    """

    G: MatrixExpr  # bilinear coefficient of the log-kernel
    C_symbol: MatrixExpr  # the unknown Cov(X, Y) in the stationarity equation
    equation: tuple  # (lhs, rhs): Sigma^-1 C (Sigma - C^T Sigma^-1 C)^-1 = G
    H: MatrixExpr  # whitened coefficient R G R
    R: MatrixExpr
    M: MatrixExpr
    M_value: MatrixExpr  # the expression M stands for (I + 4 H^T H)^{1/2}, with R^2 -> Sigma
    D: MatrixExpr  # whitened cross-covariance: C = R D R
    cross_cov: MatrixExpr  # C = Cov(X, Y) (X: first marginal, Y: second)
    Sigma: MatrixExpr

    def realise(self, expr: sp.Basic) -> sp.Basic:
        r"""Substitute $(I + M)^{-1}$ by `SinkhornFactor`$(H)$ (computed from the singular values
        of $H$, not from $H^\top H$), any other `M` and `R` $= \Sigma^{1/2}$ by symmetric PSD
        square roots."""
        d = self.M.shape[0]
        expr = expr.xreplace({Inverse(Identity(d) + self.M): SinkhornFactor(self.H)})
        expr = expr.xreplace({self.M: self.M_value})
        expr = expr.xreplace({sp.MatPow(self.R, 2): self.Sigma})
        return expr.xreplace({self.R: SqrtPSD(self.Sigma)})


def gaussian_self_coupling(log_kernel: MatrixExpr, x: MatrixSymbol, y: MatrixSymbol,
                           Sigma: MatrixExpr) -> SelfCoupling:
    r"""Solve the Gaussian Schrödinger system for the self-coupling of
    $\mathcal N(\alpha, \Sigma)$.

    Problem: find $\pi(x, y) = a(x)\, b(y)\, k(x, y)\, \mu(x)\, \mu(y)$ with both marginals equal
    to $\mu = \mathcal N(\alpha, \Sigma)$ ($k = \exp(\mathtt{log\_kernel})$ made doubly stochastic
    w.r.t. $\mu \otimes \mu$). With quadratic potentials $\log a$, $\log b$ the coupling is
    Gaussian,
    $$\mathcal N\left(\begin{pmatrix} \alpha \\ \alpha \end{pmatrix},
    \begin{pmatrix} \Sigma & C \\ C^\top & \Sigma \end{pmatrix}\right).$$
    Every term of $\log k$ that depends on $x$ alone or on $y$ alone is
    absorbed by the potentials; only the bilinear part $x^\top G y$ (`cross_coefficient`) is
    fixed, and it must equal minus the off-diagonal block of the joint precision. By block
    inversion this is the matrix equation

    $$\Sigma^{-1} C (\Sigma - C^\top \Sigma^{-1} C)^{-1} = G.$$

    Closed form: whiten, $C = R D R$ with $R = \Sigma^{1/2}$; the equation becomes
    $D (I - D^\top D)^{-1} = H$ with $H = R G R$. In the singular value basis of $H$ (values
    $s$) each value of $D$ solves $\delta / (1 - \delta^2) = s$, i.e.
    $\delta = 2 s / (1 + \sqrt{1 + 4 s^2})$ (in $[0, 1)$, so the joint covariance is valid), hence

    $$D = 2 H \left(I + (I + 4 H^\top H)^{1/2}\right)^{-1}, \qquad
    C = 2 R H \left(I + (I + 4 H^\top H)^{1/2}\right)^{-1} R.$$

    No inverse of $G$ (or $A$) appears: singular kernels are covered
    ($s = 0 \Rightarrow \delta = 0$). (Cf. the closed forms of entropic OT between Gaussians,
    Janati et al. 2020, Mallasto et al.)

    Parameters
    ----------
    log_kernel : MatrixExpr
        $\log k(x, y)$, a `(1, 1)` expression jointly quadratic in `x`, `y`.
    x, y : MatrixSymbol
        The two token variables.
    Sigma : MatrixExpr
        The shared `(d, d)` covariance.

    Returns
    -------
    SelfCoupling
        $G$, the stationarity equation, the whitened solution and $C$ (with the placeholders
        `R`, `M`; see `SelfCoupling.realise`).
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
