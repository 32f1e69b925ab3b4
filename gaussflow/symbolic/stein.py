r"""The Stein rule for fields of the form $\Gamma(x) = W_2\, s(W_1 x + b_1) + b_2$ (an MLP).

For $X \sim \mathcal N(\alpha, \Sigma)$ the pre-activations $h = W_1 X + b_1$ are Gaussian,
$h_i \sim \mathcal N(m_i, v_i)$ with $m = W_1 \alpha + b_1$ and
$v = \operatorname{diag}(W_1 \Sigma W_1^\top)$. The Gaussian moment projection needs only

$$E[\Gamma(X)] = W_2\, E[s(h)] + b_2, \qquad
E[\nabla\Gamma(X)] = W_2 \operatorname{diag}(E[s'(h)])\, W_1,$$

and by Stein's lemma $\operatorname{Cov}(X, \Gamma(X)) = \Sigma\, E[\nabla\Gamma(X)]^\top$, so
$d\Sigma/dt = J\Sigma + \Sigma J^\top$ with $J = E[\nabla\Gamma(X)]$ is the exact instantaneous
covariance rate at a Gaussian state. Both are one-dimensional expectations
$E[s^{(k)}(m_i + \sqrt{v_i}\,\xi)]$: in closed form by `gaussflow.symbolic.gauss1d` where its
rules apply, else by Gauss–Hermite quadrature (the node `GaussHermite1D`).

Symbolic only (imports nothing numeric). The entrywise maps are nodes (`Entrywise`) printed as
calls of generated helper functions (`helper_programs`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import sympy as sp
from sympy import HadamardProduct, MatrixExpr, MatrixSymbol, OneMatrix

from . import symbols as S
from .derivation import Derivation, Program, Step
from .engine import build
from .gauss1d import NoClosedForm, gauss_expect_1d
from .projection import MOMENT_PROJECTION, N_GH

__all__ = ["ACTIVATIONS", "Entrywise", "GaussHermite1D", "HeavisideStep", "W1", "W2", "b1", "b2", "activation_of",
           "derive_mlp", "helper_programs", "one_dim_expectations"]

#: The scalar variable of activations, and the mean / variance of a pre-activation.
z = sp.Symbol("z", real=True)
mu = sp.Symbol("mu", real=True)
var = sp.Symbol("v", positive=True)

#: MLP weights: hidden width `k` (so that sums subscript it like an attention head's).
W1 = MatrixSymbol("W1", S.k, S.d)
b1 = MatrixSymbol("b1", S.k, 1)
W2 = MatrixSymbol("W2", S.d, S.k)
b2 = MatrixSymbol("b2", S.d, 1)

#: Built-in activations as expressions in `z`.
ACTIVATIONS = {
    "gelu": z * (1 + sp.erf(z / sp.sqrt(2))) / 2,
    "relu": sp.Max(0, z),
    "tanh": sp.tanh(z),
    # the logistic 1 / (1 + e^{-z}), in the form whose derivative cannot overflow
    "sigmoid": (1 + sp.tanh(z / 2)) / 2,
}


def activation_of(name: str) -> sp.Expr:
    """The activation `name` (one of `ACTIVATIONS`) as an expression in `z`; `ValueError`
    naming `activation` otherwise."""
    if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name.lower()]


class Entrywise(MatrixExpr):
    r"""A generated scalar function applied entrywise to columns of one shape (and scalars).

    Arguments `(col_1, ..., *scalars)`; the helper's name is the class attribute `_jax_name`,
    set per subclass by `entrywise_node`, and the node prints as the call
    `_jax_name(col_1, ...)`."""

    _jax_name = "_entrywise"
    _label = "f"

    @property
    def shape(self) -> tuple:
        """The shape of the first column."""
        return self.args[0].shape

    @property
    def free_symbols(self) -> set:
        """The free symbols of the arguments."""
        return set().union(*(a.free_symbols for a in self.args))

    def _latex(self, printer):
        return self._label.replace("{0}", printer._print(self.args[0]))

    def _sympystr(self, printer):
        return f"{type(self)._jax_name}(" + ", ".join(printer._print(a) for a in self.args) + ")"


@functools.cache
def entrywise_node(fname: str, label: str) -> type:
    """A subclass of `Entrywise` printed as a call of `fname`, with LaTeX `label` (`{0}` stands
    for the first argument)."""
    return type(f"Entrywise_{fname}", (Entrywise,), {"_jax_name": fname, "_label": label})


class GaussHermite1D(sp.Function):
    r"""$E[f(\mu + s\xi)]$, $\xi \sim \mathcal N(0, 1)$, by $n$-point Gauss–Hermite: arguments
    `(f, mu, s, n)` with `f` a `Symbol` naming a generated entrywise function; printed
    `_gh_expect(f, mu, s, n)` (bound by the field's runtime)."""

    nargs = 4
    _jax_name = "_gh_expect"

    @property
    def free_symbols(self) -> set:  # the integrand is a function name, not a parameter
        """The free symbols of `(mu, s, n)`."""
        return set().union(*(a.free_symbols for a in self.args[1:]))

    def _latex(self, printer, exp=None):
        f, m, s, n = self.args
        return (r"\mathbb{E}_{%s}\left[%s\left(%s + %s\,\xi\right)\right]"
                % (printer._print(n), printer._print(f), printer._print(m), printer._print(s)))


def one_dim_expectations(act: sp.Expr, fname: str) -> tuple[sp.Expr, sp.Expr, bool]:
    r"""$E[s(\mu + \sqrt v\,\xi)]$ and $E[s'(\mu + \sqrt v\,\xi)]$ as expressions in `mu`, `v`
    (and `n_GH` when quadrature is needed), and whether both are closed forms.

    `fname` is the name of the generated activation function (`fname + "_prime"` its
    derivative), called by the Gauss–Hermite fallback."""
    sigma = sp.sqrt(var)
    d_act = sp.diff(act.rewrite(sp.Heaviside), z)
    try:
        return (gauss_expect_1d(act, z, mu, sigma), gauss_expect_1d(d_act, z, mu, sigma), True)
    except NoClosedForm:
        return (GaussHermite1D(sp.Symbol(fname), mu, sigma, N_GH),
                GaussHermite1D(sp.Symbol(fname + "_prime"), mu, sigma, N_GH), False)


class HeavisideStep(sp.Function):
    r"""The Heaviside step $H(z)$ (with $H(0) = 1/2$), printed `_step(z)`."""

    nargs = 1
    _jax_name = "_step"


def _printable(expr: sp.Expr) -> sp.Expr:
    """The activation in printable functions (`Max(0, z)` as `(z + |z|)/2`, `Heaviside` as
    `HeavisideStep`)."""
    expr = expr.rewrite(sp.Abs) if expr.has(sp.Max, sp.Min) else expr
    return expr.replace(sp.Heaviside, lambda *a: HeavisideStep(a[0]))


@functools.cache
def helper_programs(activation: str) -> tuple[Program, ...]:
    """The generated entrywise functions of the activation: `mlp_<a>(z)`, `mlp_<a>_prime(z)`
    (for quadrature), `mlp_<a>_mean(mu, v[, n_GH])`, `mlp_<a>_slope(mu, v[, n_GH])`."""
    act = activation_of(activation)
    name = f"mlp_{activation.lower()}"
    E0, E1, closed = one_dim_expectations(act, name)
    args = (mu, var) if closed else (mu, var, N_GH)
    d_act = sp.diff(act, z)
    return (
        Program(name, (z,), (_printable(act),), "The activation s(z), entrywise."),
        Program(name + "_prime", (z,), (_printable(d_act),), "s'(z), entrywise."),
        Program(name + "_mean", args, (E0,), "E[s(mu + sqrt(v) xi)], xi ~ N(0, 1), entrywise."),
        Program(name + "_slope", args, (E1,), "E[s'(mu + sqrt(v) xi)], entrywise."),
    )


@functools.cache
def derive_mlp(name: str, activation: str = "gelu", notes: Sequence[str] = ()) -> Derivation:
    r"""Moment closure of $\Gamma(x) = W_2\, s(W_1 x + b_1) + b_2$ (see the module docstring).

    Parameters
    ----------
    name : str
        The variant's name (the derivation's title).
    activation : str
        One of `ACTIVATIONS`.
    notes : sequence of str
        Remarks appended to the derivation's notes.

    Returns
    -------
    Derivation
        The approximate (Gaussian moment projection) derivation; its programs include the
        entrywise helpers of `helper_programs`.
    """
    act = activation_of(activation)
    fn = f"mlp_{activation.lower()}"
    helpers = helper_programs(activation)
    E0, E1 = helpers[2].outputs[0], helpers[3].outputs[0]
    closed = N_GH not in helpers[2].args
    extra = () if closed else (N_GH,)
    Act = entrywise_node(fn, r"s\left({0}\right)")
    Mean = entrywise_node(fn + "_mean", r"\mathbb{E}\left[s(h)\right]")
    Slope = entrywise_node(fn + "_slope", r"\mathbb{E}\left[s'(h)\right]")
    h = W1 * S.x + b1
    velocity = W2 * Act(h) + b2
    m = W1 * S.alpha + b1
    v = HadamardProduct(W1 * S.Sigma, W1) * OneMatrix(S.d, 1)
    mean_rhs = W2 * Mean(m, v, *extra) + b2
    J = W2 * HadamardProduct(Slope(m, v, *extra) * OneMatrix(1, S.d), W1)
    cov_rhs = J * S.Sigma + S.Sigma * J.T
    rule = ("closed forms by the rules of `gaussflow.symbolic.gauss1d` (moments, half-line "
            "moments, exp-quadratic and erf-offset integrals)" if closed else
            "no closed form from the rules of `gaussflow.symbolic.gauss1d`: Gauss–Hermite "
            "quadrature with $n_{GH}$ points")
    steps = [
        Step("Velocity", "A feed-forward layer, independent of the token distribution, with "
             "the activation $s$ applied entrywise:", ((r"s(z)", act), (r"\Gamma(x)", velocity))),
        Step("Stein's lemma",
             "For $X \\sim \\mathcal N(\\alpha, \\Sigma)$, Gaussian integration by parts gives "
             "$\\operatorname{Cov}(X, \\Gamma(X)) = \\Sigma\\, E[\\nabla\\Gamma(X)]^\\top$, and "
             "$\\nabla\\Gamma(x) = W_2 \\operatorname{diag}(s'(h))\\, W_1$. The pre-activations "
             "$h = W_1 X + b_1$ have Gaussian entries $h_i \\sim \\mathcal N(m_i, v_i)$ with "
             "(the variances as the row sums of $(W_1 \\Sigma) \\circ W_1$):",
             (("m", m), ("v", v))),
        Step("One-dimensional expectations",
             f"With $\\xi \\sim \\mathcal N(0, 1)$, entrywise; {rule}:",
             ((r"\mathbb{E}[s(\mu + \sqrt{v}\,\xi)]", E0),
              (r"\mathbb{E}[s'(\mu + \sqrt{v}\,\xi)]", E1))),
        Step("Moment projection",
             "Project on Gaussians by matching moments: $\\dot\\alpha = E[\\Gamma(X)]$, "
             "$\\dot\\Sigma = J\\Sigma + \\Sigma J^\\top$ with $J = E[\\nabla\\Gamma(X)]$ (the "
             "exact rates of the first two moments at a Gaussian state):",
             ((r"\dot\alpha", mean_rhs), ("J", J))),
    ]
    notes = (f"Approximation: {MOMENT_PROJECTION}; the expectations reduce to one-dimensional "
             "ones over the pre-activations (Stein's lemma), "
             + ("in closed form." if closed else "by Gauss-Hermite quadrature."),
             "The field does not depend on the token distribution: each particle moves by the "
             "MLP velocity.", *notes)
    D = build(name, False, velocity, mean_rhs, J, cov_rhs, steps, (), notes,
              projection=MOMENT_PROJECTION + " (one-dimensional expectations)")
    return dataclasses.replace(D, programs=(*helpers, *D.programs))
