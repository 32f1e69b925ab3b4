r"""Affine layers plus softmax attention: the regime of the covariance (`affine_attention`).

**Affine + attention** (Alcalde–Ji–Zuazua; `affine_attention`): for `Affine(W, b)` plus
softmax parts with $W_O V = v I$,
$$\frac{\mathrm{d}\Sigma}{\mathrm{d}t} = W\Sigma + \Sigma W^\top + \Sigma S \Sigma$$
and $P = \Sigma^{-1}$ solves the *linear* equation
$\mathrm{d}P/\mathrm{d}t = -(W^\top P + P W) - S$:
$$P(t) = P^* + e^{-W^\top t} (P_0 - P^*) e^{-W t}, \qquad W^\top P^* + P^* W = -S.$$
In $d = 1$ with `Affine(w) + Softmax(a)` ($V = 1$) this is the Riccati equation
$\mathrm{d}\Sigma/\mathrm{d}t = 2 w \Sigma + 2 \beta a \Sigma^2$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg
import scipy.optimize

from .closed_forms import RANK_TOL, field_state, softmax_S

if TYPE_CHECKING:
    from ..field import Field
    from ..gaussian import Gaussian


@dataclass(frozen=True)
class AffineAttentionRegime:
    r"""Outcome of `affine_attention`.

    `kind`: `"equilibrium"` ($\Sigma \to$ `equilibrium`), `"blowup"` (at `blowup_time`),
    `"collapse"` ($\Sigma \to 0$ exponentially), `"growth"` (unbounded, no finite-time blow-up),
    or `"depends"` (no `g0` given and the answer depends on it, or no blow-up decided before
    `t_max` for a mixed spectrum). `P_star` solves $W^\top P + P W = -S$; `reason` gives the
    decision in words.
    """

    kind: str
    P_star: np.ndarray
    equilibrium: np.ndarray | None = None
    blowup_time: float | None = None
    reason: str = ""


def _lyapunov_P(W, S):
    lam = np.linalg.eigvals(W)
    sums = lam[:, None] + lam[None, :]
    if np.min(np.abs(sums)) < 1e-10 * max(1.0, np.max(np.abs(lam))):
        raise ValueError("hypothesis 'lambda_i(W) + lambda_j(W) != 0' fails: the Lyapunov equation "
                         "W^T P + P W = -S has no unique solution — use gf.solve")
    P = scipy.linalg.solve_continuous_lyapunov(W.T, -S)
    return (P + P.T) / 2


def affine_attention(field: Field, g0: Gaussian | None = None,
                     t_max: float = 1e4) -> AffineAttentionRegime:
    r"""Regime of `Affine(W, b) + softmax` (constant weights, $W_O V = v I$), Alcalde–Ji–Zuazua.

    $P = \Sigma^{-1}$ follows $P(t) = P^* + e^{-W^\top t} (P_0 - P^*) e^{-W t}$ with
    $W^\top P^* + P^* W = -S$, $S = \sum_h \beta_h v_h (A_h + A_h^\top)$:

    - every eigenvalue of $W$ with positive real part: $P \to P^*$; the stable equilibrium
      $\Sigma^* = (P^*)^{-1}$ if $P^* \succ 0$, otherwise finite-time blow-up ($P$ leaves the
      PD cone);
    - every eigenvalue with negative real part: $\Sigma \to 0$ when
      $\Sigma_0^{-1} - P^* \succ 0$, otherwise blow-up (`"depends"` without `g0`);
    - mixed spectra: decided from `g0` by following $\lambda_{\min}(P(t))$ up to `t_max`.

    With `g0` the blow-up time is the first root of $\lambda_{\min}(P(t)) = 0$ (brentq).

    Parameters
    ----------
    field : Field
        `Affine(W, b)` plus softmax parts with $W_O V = v I$ (constant weights).
    g0 : Gaussian, optional
        The initial state; without it the regime may be `"depends"`.
    t_max : float
        The horizon up to which $\lambda_{\min}(P(t))$ is followed (with `g0`).

    Returns
    -------
    AffineAttentionRegime
        The regime, $P^*$, and the equilibrium or blow-up time where they apply.

    Raises
    ------
    ValueError
        If `field` has no affine part, if $\lambda_i(W) + \lambda_j(W) = 0$ for some $i, j$
        (no unique $P^*$: use `gf.solve`), or if `g0.cov` is not positive definite.
    """
    S, _, W = softmax_S(field, allow_affine=True)
    if not np.any(W):
        raise ValueError("field has no affine part; use blowup_time / limit_covariance")
    P_star = _lyapunov_P(W, S)
    re = np.linalg.eigvals(W).real
    pmin = float(np.linalg.eigvalsh(P_star)[0])
    pscale = max(float(np.max(np.abs(P_star))), 1e-300)
    P0 = None
    if g0 is not None:
        _, S0 = field_state(field, g0)
        if np.linalg.eigvalsh(S0)[0] <= 0:
            raise ValueError("g0.cov must be positive definite")
        P0 = np.linalg.inv(S0)
        P0 = (P0 + P0.T) / 2

    def lam_min(t):
        r"""$\lambda_{\min}(P(t))$, computed as $s\,\lambda_{\min}(P / s)$ with $s = \max|P_{ij}|$.

        The entries of $P$ grow like $e^{2 |\operatorname{Re}\lambda(W)| t}$ for a contracting
        $W$: unscaled, $P + P^\top$ overflows and LAPACK's eigensolver fails. NaN once $P$ is not
        finite."""
        with np.errstate(over="ignore", invalid="ignore"):
            E = scipy.linalg.expm(-W * t)
            P = P_star + E.T @ (P0 - P_star) @ E
        if not np.all(np.isfinite(P)):
            return math.nan  # overflow: P left the representable range (no root decided here)
        s = float(np.max(np.abs(P)))
        if s == 0.0:
            return 0.0
        Ps = P / s
        with np.errstate(over="ignore"):
            return float(np.linalg.eigvalsh((Ps + Ps.T) / 2)[0]) * s

    def first_root():
        ts = np.concatenate([[0.0], np.geomspace(1e-6, t_max, 2000)])
        vals = np.array([lam_min(t) for t in ts])
        bad = np.nonzero(vals <= 0)[0]  # NaN (overflow) never counts as a root
        if len(bad) == 0:
            return None
        i = bad[0]
        return float(scipy.optimize.brentq(lam_min, ts[i - 1], ts[i], xtol=1e-14, rtol=1e-13))

    if P0 is not None:
        tb = first_root()
        if tb is not None:
            return AffineAttentionRegime("blowup", P_star, blowup_time=tb,
                                         reason="lambda_min(Sigma(t)^{-1}) reaches 0")
    if np.all(re > 0):
        if pmin > RANK_TOL * pscale:
            return AffineAttentionRegime("equilibrium", P_star, equilibrium=np.linalg.inv(P_star),
                                         reason="W expanding, P* > 0: Sigma -> P*^{-1}")
        if pmin < -RANK_TOL * pscale:
            return AffineAttentionRegime("blowup", P_star, reason="W expanding, P* has a "
                                         "negative eigenvalue: P(t) leaves the PD cone")
        return AffineAttentionRegime("growth", P_star, reason="P* singular: Sigma grows unboundedly")
    if np.all(re < 0):
        if P0 is None:
            return AffineAttentionRegime("depends", P_star, reason="W contracting: collapse iff "
                                         "Sigma0^{-1} - P* > 0, blow-up otherwise")
        return AffineAttentionRegime("collapse", P_star, reason="W contracting and Sigma0^{-1} > P*")
    if P0 is None:
        return AffineAttentionRegime("depends", P_star, reason="W has eigenvalues on both sides")
    return AffineAttentionRegime("depends", P_star, reason=f"no blow-up before t_max = {t_max}")
