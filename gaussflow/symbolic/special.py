r"""Symbolic nodes that stand for a numerical rule (matrix square root, quadrature).

Each class has a `_jax_name`: the code generator prints a node `N(a_1, ..., a_n)` as the call
`_jax_name(a_1, ..., a_n)` of its printed arguments, and the code generator's runtime
(`gaussflow.codegen.RUNTIME`) binds the name to the JAX implementation (`gaussflow.linalg`,
`gaussflow.quadrature`). So the generated source stays readable and says which rule runs. This
module is symbolic only: it imports nothing numeric.

- `SqrtPSD`: the principal square root $X^{1/2}$ of a symmetric positive semi-definite matrix
  (symmetric itself: $(X^{1/2})^\top = X^{1/2}$).
- `SinkhornFactor`: $(I + (I + 4 H^\top H)^{1/2})^{-1}$ (symmetric), the factor of the Gaussian
  Schrödinger system's solution, evaluated from the singular values of $H$.
- `Scalar`: the entry of a `(1, 1)` matrix expression, as a scalar.
- `LogisticGauss`: $E[\sigma^{(k)}(\mu + s\xi)]$, $\xi \sim \mathcal N(0, 1)$, by $n$-point
  Gauss–Hermite. Its derivatives are again of this form: $\partial_\mu$ maps $k \to k + 1$ and,
  by Stein's lemma $E[f'(\mu + s\xi)\, \xi] = s\, E[f''(\mu + s\xi)]$, $\partial_s$ maps it to
  $s$ times the term with $k + 2$.
- `GaussianExpectation` / `GaussianExpectationJacobian`: $E[\Gamma(X)]$ and
  $E[\nabla\Gamma(X)]$ for $X \sim \mathcal N(\alpha, \Sigma)$, by a cubature rule (a parameter
  of the field), applied to the generated per-point functions `velocity` / `velocity_jacobian`.
"""

from __future__ import annotations

import sympy as sp
from sympy import MatrixExpr


class _SymmetricOf(MatrixExpr):
    """A symmetric matrix function of one matrix argument (the node's only argument)."""

    def __new__(cls, arg: MatrixExpr) -> MatrixExpr:
        return super().__new__(cls, sp.sympify(arg))

    @property
    def arg(self) -> MatrixExpr:
        """The argument."""
        return self.args[0]

    def _eval_transpose(self):
        return self


class SqrtPSD(_SymmetricOf):
    """Principal square root of a symmetric positive semi-definite matrix (printed
    `_sqrtm_psd(X)`, an `eigh`: `gaussflow.linalg.sqrtm_psd`)."""

    _jax_name = "_sqrtm_psd"

    @property
    def shape(self) -> tuple:
        """The shape of $X$."""
        return self.arg.shape

    def _latex(self, printer):
        return r"\left(%s\right)^{1/2}" % printer._print(self.arg)


class SinkhornFactor(_SymmetricOf):
    r"""$\big(I + (I + 4 H^\top H)^{1/2}\big)^{-1} = \sum_i v_i v_i^\top / (1 + \sqrt{1 + 4 s_i^2})$
    for $H = \sum_i s_i u_i v_i^\top$ (symmetric; printed `_sinkhorn_factor(H)`:
    `gaussflow.linalg.sinkhorn_factor`, one `eigh` of
    $\left[\begin{smallmatrix} 0 & H \\ H^\top & 0 \end{smallmatrix}\right]$, so $H^\top H$ is
    never formed)."""

    _jax_name = "_sinkhorn_factor"

    @property
    def shape(self) -> tuple:
        """`(n, n)` for $H$ of shape `(m, n)`."""
        return (self.arg.shape[1], self.arg.shape[1])

    def _latex(self, printer):
        return (r"\left(\mathbb{I} + \left(\mathbb{I} + 4 \left(%s\right)^{T} \left(%s\right)"
                r"\right)^{1/2}\right)^{-1}" % (printer._print(self.arg), printer._print(self.arg)))


class Scalar(sp.Function):
    """The entry of a `(1, 1)` matrix expression (printed `_scalar(M)`)."""

    nargs = 1
    is_real = True
    _jax_name = "_scalar"

    def _latex(self, printer, exp=None):
        inner = printer._print(self.args[0])
        out = r"\left(%s\right)" % inner
        return out if exp is None else r"%s^{%s}" % (out, exp)

    def _sympystr(self, printer):
        return "(" + printer._print(self.args[0]) + ")"


class LogisticGauss(sp.Function):
    r"""$E[\sigma^{(k)}(\mu + s\xi)]$ with $\xi \sim \mathcal N(0, 1)$, computed by $n$-point
    Gauss–Hermite.

    Arguments `(k, mu, s, n)`; $\sigma(z) = 1 / (1 + e^{-z})$.
    """

    nargs = 4
    is_real = True
    _jax_name = "_logistic_gauss"

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        r"""The partial derivative in argument `argindex` (1-based): in $\mu$ (2) the term with
        $k + 1$; in $s$ (3), by Stein's lemma, $s$ times the term with $k + 2$."""
        k, mu, s, n = self.args
        if argindex == 2:
            return LogisticGauss(k + 1, mu, s, n)
        if argindex == 3:  # Stein: d/ds E f(mu + s xi) = E[f'(.) xi] = s E[f''(.)]
            return s * LogisticGauss(k + 2, mu, s, n)
        raise sp.ArgumentIndexError(self, argindex)

    def _latex(self, printer, exp=None):
        k, mu, s, n = self.args
        prime = {0: "", 1: "'", 2: "''", 3: "'''"}.get(int(k), f"^{{({k})}}")
        out = (r"\mathbb{E}_{%s}\left[\sigma%s\left(%s + %s\,\xi\right)\right]"
               % (printer._print(n), prime, printer._print(mu), printer._print(s)))
        return out if exp is None else r"\left(%s\right)^{%s}" % (out, exp)


class GaussianExpectation(MatrixExpr):
    r"""$E[\Gamma(X)]$, $X \sim \mathcal N(\alpha, \Sigma)$, by the field's cubature rule.

    Arguments `(integrand, rule, t, alpha, Sigma, *params)` where `integrand` is the name (a
    `Symbol`) of a generated function `integrand(t, x, alpha, Sigma, *params)` and `rule` the
    parameter symbol holding the `gaussflow.quadrature.Cubature`. Printed
    `_gauss_expect(integrand, rule, t, alpha, Sigma, *params)`
    (`gaussflow.quadrature.gauss_expect`).
    """

    _jax_name = "_gauss_expect"
    _label = r"\Gamma(X)"

    def __new__(cls, integrand: sp.Symbol, rule: sp.Symbol, t: sp.Symbol, alpha: MatrixExpr,
                Sigma: MatrixExpr, *params: sp.Basic) -> GaussianExpectation:
        return super().__new__(cls, integrand, rule, t, alpha, Sigma, *params)

    @property
    def shape(self) -> tuple:
        """`(d, 1)`, the shape of `alpha`."""
        return (self.args[3].shape[0], 1)

    @property
    def free_symbols(self) -> set:  # the integrand is a function name, not a parameter
        """The free symbols of the arguments after `integrand` (a function name, not a
        parameter)."""
        return set().union(*(a.free_symbols for a in self.args[1:]))

    def _latex(self, printer):
        return (r"\mathbb{E}^{\mathrm{cub}}_{X \sim \mathcal N(%s, %s)}\left[%s\right]"
                % (printer._print(self.args[3]), printer._print(self.args[4]), self._label))

    def _sympystr(self, printer):
        return f"E[{self._label} | {self.args[1]}]"


class GaussianExpectationJacobian(GaussianExpectation):
    r"""$E[\nabla\Gamma(X)]$ (`(d, d)`): like `GaussianExpectation` with integrand the
    Jacobian."""

    _label = r"\nabla \Gamma(X)"

    @property
    def shape(self) -> tuple:
        """`(d, d)`."""
        n = self.args[3].shape[0]
        return (n, n)

    def _eval_transpose(self):
        return None


__all__ = ["SqrtPSD", "SinkhornFactor", "Scalar", "LogisticGauss", "GaussianExpectation",
           "GaussianExpectationJacobian"]
