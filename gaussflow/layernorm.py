r"""Layer norm between layers: the moment-matched Gaussian of $\mathrm{LN}(X)$,
$X \sim \mathcal N(\alpha, \Sigma)$.

$$\mathrm{LN}(x) = \gamma \odot \frac{x - \bar x \mathbf 1}{\sqrt{\operatorname{var}(x) +
\epsilon}} + \beta, \qquad \bar x = \tfrac1d \textstyle\sum_i x_i,\quad
\operatorname{var}(x) = \tfrac1d |P x|^2,\quad P = I - \tfrac1d \mathbf 1 \mathbf 1^\top.$$

With $y = P x \sim \mathcal N(a, S)$ ($a = P\alpha$, $S = P \Sigma P$) and $V = |y|^2 / d$,
$\mathrm{LN}(x) = \gamma \odot y\, f(V) + \beta$, $f(v) = (v + \epsilon)^{-1/2}$.

- **Delta method** (`order = 0 .. 4`, the default 2): derived by the symbolic engine
  (`gaussflow.symbolic.layernorm.derive_layer_norm`: $V$ concentrates at
  $v_0 = (\operatorname{tr} S + |a|^2)/d$ with $\operatorname{sd} V / v_0 = O(d^{-1/2})$; $f$ and
  $f^2$ expanded in $\delta = V - v_0$; the Gaussian moments $E[\delta^k]$, $E[z\delta^k]$,
  $E[z z^\top \delta^k]$ by Wick's theorem, `gaussflow.symbolic.wick`), printed as JAX by the code
  generator and compiled (`derivation`). The document: `derivations/layernorm.md`
  (`gaussflow derive layernorm --markdown`). Order 0 is the affine map $y f(v_0)$.
- **Exact moments** (`order="exact"`, `ln_moments_exact`): the Laplace representations
  $f(v) = \pi^{-1/2} \int_0^\infty s^{-1/2} e^{-s(v + \epsilon)} ds$ and
  $f(v)^2 = \int_0^\infty e^{-s(v+\epsilon)} ds$ turn $E[y f(V)]$ and $E[y y^\top f(V)^2]$ into
  one-dimensional integrals of Gaussian integrals with the weight $e^{-s|y|^2/d}$, which tilt
  $\mathcal N(a, S)$ (complete the square): in the eigenbasis $S = U \Lambda U^\top$,
  $b = U^\top a$, $r_i(s) = (1 + 2 s \lambda_i / d)^{-1}$,
  $$E[e^{-sV}] = Z(s) = \textstyle\prod_i r_i^{1/2} \exp\big(-\tfrac sd \sum_i r_i b_i^2\big),$$
  $$E[y e^{-sV}] = Z(s)\, U (r \circ b), \qquad E[y y^\top e^{-sV}] = Z(s)\, U \big(\operatorname{diag}(\lambda \circ r)
  + (r \circ b)(r \circ b)^\top\big) U^\top.$$
  The $s$-integrals are done by `scipy.integrate.quad_vec` (relative tolerance `1e-11`); cost
  one eigendecomposition and $O(d^2)$ per node. It is the reference the delta method is measured
  against (`tests/test_layernorm.py`, README), itself checked by Monte Carlo.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from jax.typing import ArrayLike
from scipy.integrate import quad_vec

from ._checks import as_array
from .field import realise
from .gaussian import Gaussian
from .symbolic.derivation import MapDerivation
from .symbolic.layernorm import MAX_ORDER, derive_layer_norm

__all__ = ["layer_norm_gaussian", "layer_norm", "taylor_coefficients", "ln_moments",
           "ln_moments_exact", "derivation"]


def derivation(order: int = 2) -> MapDerivation:
    """The layer-norm derivation at delta-method `order`, with its generated JAX source and
    compiled functions (once per order and process)."""
    return _realised(order)


@functools.cache
def _realised(order):
    return realise(derive_layer_norm(order))


@functools.cache
def _moments_fn(order):
    return jax.jit(_realised(order).functions["layer_norm_moments"])


@functools.cache
def _taylor_lambdas():
    v, e = sp.symbols("v epsilon", positive=True)
    f = 1 / sp.sqrt(v + e)
    g = f ** 2
    coeffs = [sp.diff(h, v, k) for h in (f, g) for k in range(3)]
    return sp.lambdify((v, e), coeffs, "numpy"), coeffs


def taylor_coefficients(v0: float, eps: float) -> tuple[list[float], list[float]]:
    r"""$[f_0, f_1, f_2]$ and $[g_0, g_1, g_2]$: the derivatives at $v_0$ of
    $f(v) = (v + \epsilon)^{-1/2}$ and $g = f^2$, differentiated by SymPy."""
    fn, _ = _taylor_lambdas()
    c = [float(x) for x in fn(float(v0), float(eps))]
    return c[:3], c[3:]


def ln_moments(a: np.ndarray, S: np.ndarray, order: int = 2, eps: float = 1e-12
               ) -> tuple[np.ndarray, np.ndarray]:
    r"""Mean and covariance of $y f(V)$ for $y \sim \mathcal N(a, S)$ (already centred:
    $a = P\alpha$, $S = P \Sigma P$), $V = |y|^2/d$, by the derived delta method of order
    `order` (the generated `layer_norm_moments` with $\gamma = 1$, $\beta = 0$)."""
    d = a.shape[0]
    mean, cov = _moments_fn(order)(jnp.asarray(a, dtype=jnp.float64)[:, None],
                                   jnp.asarray(S, dtype=jnp.float64), jnp.ones((d, 1)),
                                   jnp.zeros((d, 1)), float(eps))
    cov = np.asarray(cov)
    return np.asarray(mean)[:, 0], (cov + cov.T) / 2


def ln_moments_exact(a: np.ndarray, S: np.ndarray, eps: float = 1e-12, rtol: float = 1e-11
                     ) -> tuple[np.ndarray, np.ndarray]:
    r"""The exact mean and covariance of $y f(V)$, $y \sim \mathcal N(a, S)$, $V = |y|^2/d$,
    by the one-dimensional Laplace integrals of the module docstring (`quad_vec`, relative
    tolerance `rtol`).

    The variable is $s = u^2 / v_0$ ($v_0 = E V$), so that both integrands are smooth in
    $u \in [0, \infty)$ and of order one where they matter."""
    a, S = np.asarray(a, dtype=np.float64), np.asarray(S, dtype=np.float64)
    d = a.shape[0]
    lam, U = np.linalg.eigh((S + S.T) / 2)
    lam = np.clip(lam, 0.0, None)
    b = U.T @ a
    v0 = (lam.sum() + b @ b) / d
    if not v0 > 0:
        raise ValueError("ln_moments_exact: the centred Gaussian is a point at 0 (V = 0)")

    def integrand(u):
        s = u * u / v0
        r = 1.0 / (1.0 + 2.0 * s * lam / d)
        rb = r * b
        w = np.exp(0.5 * np.sum(np.log(r)) - s / d * np.sum(rb * b) - s * eps)
        w_mean = 2.0 / np.sqrt(np.pi * v0) * w  # s^{-1/2} ds / sqrt(pi) = 2 du / sqrt(pi v0)
        w_second = 2.0 * u / v0 * w  # ds = 2 u du / v0
        return np.concatenate([w_mean * rb, w_second * lam * r, w_second * np.outer(rb, rb).ravel()])

    val, _ = quad_vec(integrand, 0.0, np.inf, epsrel=rtol, epsabs=0.0, norm="max")
    m_e, diag_e, outer_e = val[:d], val[d:2 * d], val[2 * d:].reshape(d, d)
    mean = U @ m_e
    second = U @ (np.diag(diag_e) + outer_e) @ U.T
    cov = second - np.outer(mean, mean)
    return mean, (cov + cov.T) / 2


def layer_norm(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike, eps: float = 1e-12) -> np.ndarray:
    r"""$\mathrm{LN}(x)$ token by token (rows of `x`), for Monte Carlo references."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=-1, keepdims=True)
    return gamma * xc / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps) + beta


def layer_norm_gaussian(g: Gaussian, gamma: ArrayLike | None = None,
                        beta_ln: ArrayLike | None = None, eps: float = 1e-12,
                        order: int = 2) -> Gaussian:
    r"""The moment-matched Gaussian of $\mathrm{LN}(X)$, $X \sim$ `g` (an approximation; see
    the module docstring).

    Parameters
    ----------
    g : Gaussian
        The token distribution $\mathcal N(\alpha, \Sigma)$.
    gamma : ArrayLike, optional
        Gain $\gamma$, shape `(d,)`; default ones.
    beta_ln : ArrayLike, optional
        Bias $\beta$, shape `(d,)`; default zeros.
    eps : float
        $\epsilon > 0$ (BERT: `1e-12`).
    order : int or "exact"
        The delta-method order `0 .. 4` (`0`: the leading, affine order; `2`, the default: the
        first correction in the fluctuation of $V$), or `"exact"` for the exact moments
        (`ln_moments_exact`; one eigendecomposition and a one-dimensional quadrature).

    Returns
    -------
    Gaussian
        $\mathcal N(\gamma \odot m + \beta, D_\gamma C D_\gamma)$ with $(m, C)$ the moments of
        $y f(V)$ (`ln_moments`, `ln_moments_exact`).         The covariance is singular along $D_\gamma \mathbf 1$ (LN removes the
        feature mean).

    Raises
    ------
    TypeError
        If `g` is not a `gaussflow.Gaussian`.
    ValueError
        For shapes that do not match `g`, a non-positive or non-finite `eps`, an `order` other
        than `0 .. 4` or `"exact"`, or $d < 2$.
    """
    if not isinstance(g, Gaussian):
        raise TypeError(f"g must be a gf.Gaussian, got {type(g).__name__}")
    d = g.dim
    if d < 2:
        raise ValueError(f"layer norm needs d >= 2 features, got g of dimension {d}")
    gamma = np.ones(d) if gamma is None else np.asarray(as_array("gamma", gamma, ndim=1,
                                                                  shape=(d,)), dtype=np.float64)
    beta_ln = np.zeros(d) if beta_ln is None else np.asarray(
        as_array("beta_ln", beta_ln, ndim=1, shape=(d,)), dtype=np.float64)
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) \
            or not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    if order != "exact" and (isinstance(order, bool) or not isinstance(order, int)
                             or not 0 <= order <= MAX_ORDER):
        raise ValueError(f"order must be an integer from 0 to {MAX_ORDER} or 'exact', got {order!r}")
    centre = _realised(0).functions["layer_norm_centre"]
    a, S = centre(jnp.asarray(g.mean, dtype=jnp.float64)[:, None],
                  jnp.asarray(g.cov, dtype=jnp.float64))
    if order == "exact":
        m, C = ln_moments_exact(np.asarray(a)[:, 0], np.asarray(S), float(eps))
        mean, cov = gamma * m + beta_ln, gamma[:, None] * C * gamma[None, :]
    else:
        mean, cov = _moments_fn(order)(a, S, jnp.asarray(gamma)[:, None],
                                       jnp.asarray(beta_ln)[:, None], float(eps))
        mean, cov = np.asarray(mean)[:, 0], np.asarray(cov)
        cov = (cov + cov.T) / 2
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise FloatingPointError("layer_norm_gaussian: non-finite moments (is the feature "
                                 "variance of g zero with eps tiny?)")
    return Gaussian(jnp.asarray(mean), jnp.asarray(cov))
