r"""Layer norm as a map between layers: the moments of $\mathrm{LN}(X)$ for
$X \sim \mathcal N(\alpha, \Sigma)$, derived by the concentration of the feature variance and a
delta-method expansion.

$$\mathrm{LN}(x) = \gamma \circ P x\, f(V) + \beta_{ln}, \qquad V = \tfrac1d |P x|^2, \qquad
f(v) = (v + \epsilon)^{-1/2}, \qquad P = I - \tfrac1d \mathbf 1 \mathbf 1^\top.$$

The derivation (`derive_layer_norm`, written out in `derivations/layernorm.md`):

1. centre: $y = P X \sim \mathcal N(a, S)$, $a = P\alpha$, $S = P \Sigma P$; write $y = a + z$,
   $z \sim \mathcal N(0, S)$, so $V = (|a|^2 + 2 a^\top z + z^\top z)/d$, a polynomial in $z$;
2. concentration: $v_0 = E V$ and $\operatorname{Var} V = E[\delta^2]$, $\delta = V - v_0$, by
   Wick's theorem (`gaussflow.symbolic.wick`); for $a$, $S$ of order one per coordinate
   $\operatorname{sd} V / v_0 = O(d^{-1/2})$, so $f(V)$ is nearly the constant $f(v_0)$ and LN
   nearly affine;
3. delta method: $f(V) \approx \sum_{k \le n} f^{(k)}(v_0) \delta^k / k!$ and the same for
   $g = f^2$ (SymPy differentiates);
4. Gaussian moments: $E[\delta^k]$, $E[z \delta^k]$, $E[z z^\top \delta^k]$ by Wick's theorem;
5. moment matching: $m = E[y f(V)]$, $M_2 = E[y y^\top g(V)]$ term by term, the output mean
   $\gamma \circ m + \beta_{ln}$ and covariance $(\gamma \gamma^\top) \circ (M_2 - m m^\top)$.

Order $n = 0$ is the affine map $y \mapsto y f(v_0)$; the terms of order $k$ are
$O(d^{-\lceil k/2 \rceil})$ relative to the leading one, the remainder after order $n$ is
$O(E|\delta|^{n+1})$. An approximation (`exact = False`): its error against the exact moments and
Monte Carlo is measured in `tests/test_layernorm.py` and the README. Symbolic only.
"""

from __future__ import annotations

import functools

import sympy as sp
from sympy import HadamardProduct, Identity, MatrixSymbol, OneMatrix

from . import symbols as S
from .derivation import MapDerivation, Program, Step
from .special import Scalar
from .wick import COL, ROW, Lin, Quad, Term, expectation, poly_mul, poly_pow

__all__ = ["MAX_ORDER", "a", "S_c", "gamma", "beta_ln", "derive_layer_norm"]

#: The highest delta-method order offered.
MAX_ORDER = 4

#: The centred input moments, the gain and bias of the layer norm.
a = MatrixSymbol("a", S.d, 1)
S_c = MatrixSymbol("S", S.d, S.d)
gamma = MatrixSymbol("gamma", S.d, 1)
beta_ln = MatrixSymbol("beta_ln", S.d, 1)

_v = sp.Symbol("v", positive=True)
_v0 = sp.Symbol("v_0", positive=True)
#: Names of the step results in the displayed result (the programs use the full expressions).
_m = MatrixSymbol("m", S.d, 1)
_C = MatrixSymbol("C", S.d, S.d)


@functools.cache
def derive_layer_norm(order: int = 2) -> MapDerivation:
    r"""The moment-matched Gaussian of $\mathrm{LN}(X)$ at delta-method order `order` (module
    docstring).

    Parameters
    ----------
    order : int
        $n$ in `0 .. MAX_ORDER`: the highest power of $\delta = V - v_0$ kept.

    Returns
    -------
    MapDerivation
        With the programs `layer_norm_centre(alpha, Sigma)` $\to (a, S)$ and
        `layer_norm_moments(a, S, gamma, beta_ln, epsilon)` $\to$ (mean, covariance).

    Raises
    ------
    ValueError
        For an `order` outside `0 .. MAX_ORDER`.
    """
    if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= MAX_ORDER:
        raise ValueError(f"order must be an integer from 0 to {MAX_ORDER}, got {order!r}")
    d, eps = S.d, S.eps
    P = Identity(d) - OneMatrix(d, d) / d
    f = 1 / sp.sqrt(_v + eps)
    g = f ** 2
    # V = |a + z|^2 / d as a polynomial in z; its mean by Wick's theorem
    V_poly = [Term(Scalar(a.T * a) / d), Term(2 / d, (Lin(a),)),
              Term(1 / d, (Quad(Identity(d)),))]
    v0 = expectation(V_poly, S_c)
    delta = V_poly + [Term(-v0)]
    powers = [poly_pow(delta, k) for k in range(order + 1)]
    E_d = [expectation(p, S_c) for p in powers]
    E_zd = [expectation(poly_mul([Term(1, (COL,))], p), S_c) for p in powers]
    E_zzd = [expectation(poly_mul([Term(1, (COL, ROW))], p), S_c) for p in powers]
    var_V = expectation(poly_pow(delta, 2), S_c)
    fk = [sp.diff(f, _v, k).subs(_v, _v0) / sp.factorial(k) for k in range(order + 1)]
    gk = [sp.diff(g, _v, k).subs(_v, _v0) / sp.factorial(k) for k in range(order + 1)]
    m = sp.MatAdd(*[fk[k] * (E_d[k] * a + E_zd[k]) for k in range(order + 1)]).doit()
    M2 = sp.MatAdd(*[gk[k] * (E_d[k] * a * a.T + E_zd[k] * a.T + a * E_zd[k].T + E_zzd[k])
                     for k in range(order + 1)]).doit()
    sym = {sp.Transpose(S_c): S_c}
    m, M2 = m.xreplace(sym), M2.xreplace(sym)
    C = (M2 - m * m.T).doit().xreplace(sym)
    at_v0 = {_v0: v0}
    mean_out = HadamardProduct(gamma, m.xreplace(at_v0)) + beta_ln
    cov_out = HadamardProduct(gamma * gamma.T, C.xreplace(at_v0))
    shown = max(order, 1)
    steps = [
        Step("Layer norm",
             "Per token, with $P = I - \\frac1d \\mathbf 1 \\mathbf 1^\\top$ and $V = |P x|^2/d$ the "
             "feature variance: $\\mathrm{LN}(x) = \\gamma \\circ P x\\, f(V) + \\beta_{ln}$ with",
             ((r"f(v)", f),)),
        Step("Centring",
             "$y = P X \\sim \\mathcal N(a, S)$; write $y = a + z$ with $z \\sim \\mathcal N(0, S)$, "
             "so that $V = (|a|^2 + 2 a^\\top z + z^\\top z)/d$ is a polynomial in $z$:",
             (("a", P * S.alpha), ("S", P * S.Sigma * P))),
        Step("Concentration of the feature variance",
             "By Wick's theorem (`gaussflow.symbolic.wick`: sums over the pairings of the copies "
             "of $z$, each pair an $S$), the mean and variance of $V$. With $a$, $S$ of order one "
             "per coordinate, $\\operatorname{sd} V / v_0 = O(d^{-1/2})$: $V$ concentrates at "
             "$v_0$, and LN is close to the affine map $y \\mapsto y f(v_0)$ (order 0).",
             ((r"v_0 = \mathbb{E} V", v0), (r"\operatorname{Var} V = \mathbb{E}\,\delta^2", var_V))),
        Step("Delta method",
             f"Expand $f$ and $g = f^2$ about $v_0$ to order $n = {order}$ in $\\delta = V - v_0$: "
             "$f(V) \\approx \\sum_{k \\le n} f_k \\delta^k$, $g(V) \\approx \\sum_{k \\le n} g_k "
             "\\delta^k$; the coefficients $f^{(k)}(v_0)/k!$, differentiated by SymPy:",
             tuple((f"f_{k}", fk[k]) for k in range(order + 1))
             + tuple((f"g_{k}", gk[k]) for k in range(order + 1))),
        Step("Gaussian moments",
             "By Wick's theorem, for $k \\le n$ (shown up to $k = "
             f"{shown}$; $E[\\delta^0] = 1$, $E[z] = 0$, $E[z z^\\top] = S$):",
             tuple(item for k in range(1, shown + 1) for item in (
                 (rf"\mathbb{{E}}[\delta^{k}]", expectation(poly_pow(delta, k), S_c)),
                 (rf"\mathbb{{E}}[z \delta^{k}]", E_zd[k] if k <= order else
                  expectation(poly_mul([Term(1, (COL,))], poly_pow(delta, k)), S_c)),
                 (rf"\mathbb{{E}}[z z^\top \delta^{k}]", E_zzd[k] if k <= order else
                  expectation(poly_mul([Term(1, (COL, ROW))], poly_pow(delta, k)), S_c))))),
        Step("Moment matching",
             "$m = E[y f(V)] \\approx \\sum_k f_k (a\\, E[\\delta^k] + E[z \\delta^k])$, "
             "$M_2 = E[y y^\\top g(V)] \\approx \\sum_k g_k (a a^\\top E[\\delta^k] + E[z\\delta^k] "
             "a^\\top + a E[z \\delta^k]^\\top + E[z z^\\top \\delta^k])$; the output's covariance is "
             "$(\\gamma\\gamma^\\top) \\circ (M_2 - m m^\\top)$ (with $v_0$ as above):",
             (("m", m), ("C = M_2 - m m^T", C))),
    ]
    notes = (
        f"Approximation: delta method of order {order} in the fluctuation of the feature variance "
        "about its mean (the moments of each term are exact Gaussian moments); the remainder is "
        f"O(E|V - v_0|^{order + 1}), measured against the exact moments and Monte Carlo in "
        "`tests/test_layernorm.py` and the README.",
        "The output covariance is singular along gamma^{-1} (LN removes the feature mean); at "
        "order 2 and above it may fail to be positive semi-definite where V does not concentrate "
        "(`gf.layer_norm_gaussian` checks it).",
    )
    programs = (
        Program("layer_norm_centre", (S.alpha, S.Sigma), (P * S.alpha, P * S.Sigma * P),
                "The centred moments (a, S) = (P alpha, P Sigma P)."),
        Program("layer_norm_moments", (a, S_c, gamma, beta_ln, eps), (mean_out, cov_out),
                f"Mean and covariance of LN(X), y = P X ~ N(a, S), delta-method order {order}.",
                symmetric=(S_c,)),
    )
    conventions = ("Conventions: tokens $x \\in \\mathbb R^d$ (columns), $X \\sim \\mathcal "
                   "N(\\alpha, \\Sigma)$; gain $\\gamma$, bias $\\beta_{ln}$, $\\epsilon > 0$; "
                   "$\\circ$ is the entrywise product.")
    return MapDerivation(
        name="layernorm", exact=False,
        outputs=((r"\mathbb{E}\,\mathrm{LN}(X)", HadamardProduct(gamma, _m) + beta_ln),
                 (r"\operatorname{Cov}\mathrm{LN}(X)", HadamardProduct(gamma * gamma.T, _C))),
        steps=tuple(steps), notes=notes,
        projection=f"delta method of order {order} in V - v_0",
        programs=programs, conventions=conventions)


