r"""Layer norm between layers: the moment-matched Gaussian of $\mathrm{LN}(X)$,
$X \sim \mathcal N(\alpha, \Sigma)$.

$$\mathrm{LN}(x) = \gamma \odot \frac{x - \bar x \mathbf 1}{\sqrt{\operatorname{var}(x) +
\epsilon}} + \beta, \qquad \bar x = \tfrac1d \textstyle\sum_i x_i,\quad
\operatorname{var}(x) = \tfrac1d |P x|^2,\quad P = I - \tfrac1d \mathbf 1 \mathbf 1^\top.$$

**Derivation.** Let $y = P x \sim \mathcal N(a, S)$ with $a = P\alpha$, $S = P \Sigma P$, and
$V = |y|^2 / d$, so $\mathrm{LN}(x) = \gamma \odot y\, f(V) + \beta$ with
$f(V) = (V + \epsilon)^{-1/2}$. $V$ concentrates: $v_0 = E[V] = (\operatorname{tr} S + |a|^2)/d$
and $\operatorname{Var} V = (2 \operatorname{tr} S^2 + 4 a^\top S a)/d^2 = O(1/d)$.

- *Leading order* (`order=0`): $V \approx v_0$ makes LN affine,
  $\mathrm{LN}(x) \approx \gamma \odot P x / \sqrt{v_0 + \epsilon} + \beta$: mean
  $\gamma \odot a f_0 + \beta$, covariance $D_\gamma S D_\gamma\, f_0^2$ ($f_0 = f(v_0)$,
  $D_\gamma = \operatorname{diag}\gamma$). Relative error of the mean $O(1/d)$; of the
  covariance in the Frobenius norm $O(d^{-1/2})$, from the missing rank-one terms along $a$
  (measured: README).
- *Second-order delta method* (`order=2`): expand $f$ and $g = f^2$ to second order about
  $v_0$, with $\delta = V - v_0$:

  $$E[y f(V)] \approx f_0 a + f_1 E[y \delta] + \tfrac12 f_2 E[y \delta^2], \qquad
  E[y y^\top g(V)] \approx g_0 (a a^\top + S) + g_1 E[y y^\top \delta] +
  \tfrac12 g_2 E[y y^\top \delta^2],$$

  and the Gaussian moments (Isserlis' theorem; $c = a^\top S a$, $s_2 = \operatorname{tr} S^2$):

  $$E[y\delta] = \tfrac2d S a, \qquad E[y\delta^2] = a \operatorname{Var} V + \tfrac{8}{d^2} S^2 a,$$
  $$E[y y^\top \delta] = \tfrac2d (a a^\top S + S a a^\top + S^2),$$
  $$E[y y^\top \delta^2] = \tfrac{1}{d^2}\big[a a^\top (4c + 2 s_2) + 8(a a^\top S^2 +
  S^2 a a^\top) + 8 S a a^\top S + (4c + 2 s_2) S + 8 S^3\big].$$

  The Taylor coefficients $f_k = f^{(k)}(v_0)$, $g_k = g^{(k)}(v_0)$ are derived by SymPy
  (`taylor_coefficients`). The remainder of the expansion is $O(E|\delta|^3) = O(d^{-3/2})$;
  the error is measured against Monte Carlo in the README and `tests/test_layernorm.py` (the
  correction helps from $d \approx 32$ on; at $d = 16$ it makes the covariance worse).

The moment identities are checked by Monte Carlo in `tests/test_layernorm.py`.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import sympy as sp
from jax.typing import ArrayLike

from ._checks import as_array
from .gaussian import Gaussian

__all__ = ["layer_norm_gaussian", "layer_norm", "taylor_coefficients", "ln_moments"]


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
    $a = P\alpha$, $S = P \Sigma P$), $V = |y|^2/d$, at order 0 or 2 (module docstring)."""
    d = a.shape[0]
    trS, s2 = float(np.trace(S)), float(np.sum(S * S))
    v0 = (trS + float(a @ a)) / d
    (f0, f1, f2), (g0, g1, g2) = taylor_coefficients(v0, eps)
    aaT = np.outer(a, a)
    if order == 0:
        return f0 * a, g0 * S
    Sa = S @ a
    S2 = S @ S
    c = float(a @ Sa)
    var_v = (2 * s2 + 4 * c) / d ** 2
    E_yd = 2 / d * Sa
    E_yd2 = a * var_v + 8 / d ** 2 * (S @ Sa)
    mean = f0 * a + f1 * E_yd + 0.5 * f2 * E_yd2
    E_yyd = 2 / d * (aaT @ S + S @ aaT + S2)
    E_yyd2 = (aaT * (4 * c + 2 * s2) + 8 * (aaT @ S2 + S2 @ aaT) + 8 * np.outer(Sa, Sa)
              + (4 * c + 2 * s2) * S + 8 * S2 @ S) / d ** 2
    second = g0 * (aaT + S) + g1 * E_yyd + 0.5 * g2 * E_yyd2
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
    order : int
        `0`: leading (affine) order; `2`: with the second-order delta-method correction.

    Returns
    -------
    Gaussian
        $\mathcal N(\gamma \odot m + \beta, D_\gamma C D_\gamma)$ with $(m, C)$ from
        `ln_moments`. The covariance is singular along $D_\gamma \mathbf 1$ (LN removes the
        feature mean).

    Raises
    ------
    TypeError
        If `g` is not a `gaussflow.Gaussian`.
    ValueError
        For shapes that do not match `g`, a non-positive or non-finite `eps`, an `order` other
        than 0 or 2, or $d < 2$.
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
    if order not in (0, 2) or isinstance(order, bool):
        raise ValueError(f"order must be 0 or 2, got {order!r}")
    P = np.eye(d) - np.full((d, d), 1.0 / d)
    alpha, Sigma = np.asarray(g.mean, dtype=np.float64), np.asarray(g.cov, dtype=np.float64)
    m, C = ln_moments(P @ alpha, P @ Sigma @ P, order, float(eps))
    mean = gamma * m + beta_ln
    cov = gamma[:, None] * C * gamma[None, :]
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise FloatingPointError("layer_norm_gaussian: non-finite moments (is the feature "
                                 "variance of g zero with eps tiny?)")
    return Gaussian(jnp.asarray(mean), jnp.asarray(cov))
