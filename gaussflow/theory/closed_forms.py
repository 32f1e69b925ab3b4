r"""Closed forms and exact limits for softmax attention with $W_O V = v I$.

Conventions: score $s(x, y) = \beta\, y^T A x$ with $A = K^T Q$; value map
$y \mapsto W_O V y$. Everything here is NumPy (float64) on concrete arrays.

**Closed forms for softmax with** $W_O V = v I$ (a single `gaussflow.Softmax`, or a sum /
multi-head of such fields). Then $d\Sigma/dt = \Sigma S \Sigma$ with the symmetric matrix
$S = \sum_h \beta_h v_h (A_h + A_h^T)$, so $d(\Sigma^{-1})/dt = -S$ and

$$\Sigma(t)^{-1} = \Sigma_0^{-1} - t S \qquad (\text{for one head: } S = \beta v (A + A^T)).$$

The factor $v$ multiplies $\beta (A + A^T)$: a negative $v$ swaps the roles of blow-up and
convergence. Written $\Sigma(t) = \Sigma_0^{1/2} (I - t \tilde S)^{-1} \Sigma_0^{1/2}$ with the
whitened $\tilde S = \Sigma_0^{1/2} S \Sigma_0^{1/2}$:

- `blowup_time`: $T^* = 1 / \lambda_{\max}(\tilde S)$ if $\lambda_{\max}(\tilde S) > 0$ else
  `inf`;
- `blowup_direction`: $\Sigma / \operatorname{tr}\Sigma \to w w^T$ with
  $w \propto \Sigma_0^{1/2} e$ ($e$ the top eigenvector of $\tilde S$; needs a simple top
  eigenvalue);
- `limit_covariance`: for $S \preceq 0$,
  $\Sigma(t) \to \Sigma_0 - \Sigma_0 R (R^T \Sigma_0 R)^{-1} R^T \Sigma_0$ ($R$ an orthonormal
  basis of the range of $S$) at rate $O(1/t)$; `limit_rank` $= \dim\ker S$
  ($= \dim\ker(A + A^T)$ for one head with $v \neq 0$);
- `mean` ($A_h$ symmetric):
  $\alpha(t) = e^{v t} \Sigma_0^{1/2} (I - t \tilde S)^{-1/2} \Sigma_0^{-1/2} \alpha_0$ with
  $v = \sum_h v_h$ (from $d\alpha/dt = v \alpha + \Sigma S \alpha / 2$).

`stationary_lines` ($d = 2$, softmax or L2, any $V$): rank-one covariances $u u^T$ are
stationary iff $u^T A u = 0$ (for L2 because
$(I + 2c\, u u^T K^T K)^{-1} u = u / (1 + 2c |K u|^2)$).

The hypotheses are checked by `softmax_S` (shared with `gaussflow.theory.affine`),
which raises `ValueError` naming the one that fails.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .._checks import as_array
from ..gaussian import Gaussian
from ..linalg import sqrtm_psd

if TYPE_CHECKING:
    from jax.typing import ArrayLike

    from ..field import Field

#: Relative tolerance for eigenvalues of symmetric weight matrices counted as zero
#: ($|\lambda| \le$ `RANK_TOL` $\max|\lambda|$) and for the hypothesis $W_O V = v I$.
RANK_TOL = 1e-10


def _heads(field):
    """Flatten sums / multi-head fields into their parts."""
    for attr in ("parts", "heads"):
        parts = getattr(field, attr, None)
        if isinstance(parts, (tuple, list)):
            return [h for p in parts for h in _heads(p)]
    return [field]


def _is_affine(f):
    return type(f).__name__ == "Affine" and hasattr(f, "W")


def _value_scalar(h, name):
    """$v$ with $W_O V = v I$, or `ValueError` naming the failed hypothesis."""
    WV = np.asarray(h.W_O) @ np.asarray(h.V)
    d = WV.shape[0]
    v = float(np.trace(WV)) / d
    dev = float(np.max(np.abs(WV - v * np.eye(d))))
    if dev > RANK_TOL * max(1.0, abs(v), float(np.max(np.abs(WV)))):
        raise ValueError(
            f"{name}: hypothesis W_O V = v I fails (W_O V deviates from {v:.4g} I by {dev:.3g}); "
            "the closed forms need a value map that is a multiple of the identity — use gf.solve")
    return v


def softmax_S(field: Field, allow_affine: bool = False,
              need_symmetric_A: bool = False) -> tuple[np.ndarray, float, np.ndarray]:
    r"""`(S, v_total, W)` for softmax parts with $W_O V = v I$ (+ optional affine parts).

    $S = -\sum_h v_h\, (d\Sigma^{-1}/dt)_h$ read from each part's derivation (its closed form
    `inverse_increment` at $t = 1$, derived with $W_O V = I$; for softmax
    $-\beta_h (A_h + A_h^T)$, so that $S = \sum_h \beta_h v_h (A_h + A_h^T)$); `W` the summed
    affine matrix (zeros if none); `v_total` $= \sum_h v_h$.

    Parameters
    ----------
    field : Field
        A softmax field, or a sum / multi-head of them.
    allow_affine : bool
        Accept affine parts (`gaussflow.theory.affine`) and sum their matrices into `W`.
    need_symmetric_A : bool
        Require every $A_h = K_h^T Q_h$ to be symmetric (the closed-form mean).

    Returns
    -------
    tuple of (np.ndarray, float, np.ndarray)
        `(S, v_total, W)`, $S$ symmetrised.

    Raises
    ------
    TypeError
        If `field` is not a gaussflow field.
    ValueError
        Naming the hypothesis that fails (softmax attention, $W_O V = v I$, symmetric $A$),
        or when there is no softmax part.
    """
    from ..variants.softmax import Softmax
    from ..field import Field

    if not isinstance(field, Field):
        raise TypeError(f"field must be a gaussflow field, got {type(field).__name__}")
    d = field.dim
    S = np.zeros((d, d))
    W = np.zeros((d, d))
    vtot = 0.0
    n_att = 0
    for i, h in enumerate(_heads(field)):
        name = "field" if i == 0 and len(_heads(field)) == 1 else f"field part {i} ({h.name})"
        if allow_affine and _is_affine(h):
            W += np.asarray(h.W)
            continue
        if type(h) is not Softmax:
            kinds = "softmax fields (and affine layers)" if allow_affine else "softmax fields"
            raise ValueError(f"{name}: hypothesis 'softmax attention' fails ({h.name!r}); the "
                             f"closed forms hold for {kinds} with W_O V = v I — use gf.solve")
        v = _value_scalar(h, name)
        A = np.asarray(h.A)
        if need_symmetric_A and np.max(np.abs(A - A.T)) > RANK_TOL * max(1.0, np.max(np.abs(A))):
            raise ValueError(f"{name}: hypothesis 'A = K^T Q symmetric' fails; the closed-form mean "
                             "needs a symmetric A — use gf.solve")
        inc = h.derivation().functions["inverse_increment"](1.0, *h._args())
        S -= v * np.asarray(inc)
        vtot += v
        n_att += 1
    if n_att == 0:
        raise ValueError("field has no softmax attention part; nothing to predict")
    return (S + S.T) / 2, vtot, W


def field_state(field: Field, g0: Gaussian) -> tuple[np.ndarray, np.ndarray]:
    """Validated `(mean, cov)` of `g0` (checked before any work on the field)."""
    from ..field import Field

    if not isinstance(field, Field):
        raise TypeError(f"field must be a gaussflow field, got {type(field).__name__}")
    if not isinstance(g0, Gaussian):
        raise TypeError(f"g0 must be a gf.Gaussian, got {type(g0).__name__}")
    if g0.dim != field.dim:
        raise ValueError(f"g0 has dimension {g0.dim} but the field acts on dimension {field.dim}")
    return np.asarray(g0.mean), np.asarray(g0.cov)


def _whitened(field, g0):
    _, S0 = field_state(field, g0)
    S, v, _ = softmax_S(field)
    R = np.asarray(sqrtm_psd(S0))  # the package's one PSD square root
    St = R @ S @ R
    return S, v, S0, R, (St + St.T) / 2


def blowup_time(field: Field, g0: Gaussian) -> float:
    r"""Finite blow-up time $T^* = 1/\lambda_{\max}(\Sigma_0^{1/2} S \Sigma_0^{1/2})$, `inf` if
    none.

    $S = \beta v (A + A^T)$ (summed over heads); softmax with $W_O V = v I$ only.
    """
    _, _, _, _, St = _whitened(field, g0)
    lam = float(np.linalg.eigvalsh(St)[-1])
    scale = max(float(np.max(np.abs(St))), 1e-300)
    return 1.0 / lam if lam > RANK_TOL * scale else math.inf


def blowup_direction(field: Field, g0: Gaussian) -> np.ndarray:
    r"""Unit vector $w$ with $\Sigma(t)/\operatorname{tr}\Sigma(t) \to w w^T$ as $t \to T^*$
    (sign: largest entry $> 0$).

    `ValueError` if there is no blow-up or the top eigenvalue of
    $\Sigma_0^{1/2} S \Sigma_0^{1/2}$ is repeated (then the limit is a projector of higher rank,
    not a line).
    """
    _, _, _, R, St = _whitened(field, g0)
    lam, U = np.linalg.eigh(St)
    scale = max(float(np.max(np.abs(St))), 1e-300)
    if lam[-1] <= RANK_TOL * scale:
        raise ValueError("hypothesis 'finite-time blow-up' fails: lambda_max(Sigma0^{1/2} S "
                         "Sigma0^{1/2}) <= 0, so Sigma(t) stays bounded")
    if len(lam) > 1 and lam[-2] >= lam[-1] * (1 - 1e-9):
        raise ValueError("the top eigenvalue of Sigma0^{1/2} S Sigma0^{1/2} is repeated: the "
                         "blow-up limit of Sigma/tr Sigma is not rank one")
    w = R @ U[:, -1]
    w = w / np.linalg.norm(w)
    return w if w[np.argmax(np.abs(w))] > 0 else -w


def covariance(field: Field, g0: Gaussian, t: ArrayLike) -> np.ndarray:
    r"""$\Sigma(t) = \Sigma_0^{1/2} (I - t \tilde S)^{-1} \Sigma_0^{1/2}$ for `t` scalar or array
    (before $T^*$): `(d, d)`, or `(n, d, d)` for `n` times.

    Softmax with $W_O V = v I$; valid for singular $\Sigma_0$ too. `ValueError` for
    $t \ge T^*$.
    """
    _, _, _, R, St = _whitened(field, g0)
    ts = np.atleast_1d(np.asarray(as_array("t", t), dtype=float))
    T = blowup_time(field, g0)
    if np.any(ts >= T):
        raise ValueError(f"t must be below the blow-up time T* = {T:.8g}")
    # S~ is symmetric: (I - t S~)^{-1} = U diag(1 / (1 - t w)) U^T, accurate to round-off at any
    # t (a linear solve with I - t S~, whose condition number grows like t, is not); eigenvalues
    # at round-off level are zeros of S~ (else t * eps would be read as a rate).
    w, U = np.linalg.eigh(St)
    w = np.where(np.abs(w) <= 8 * w.size * np.finfo(float).eps * np.abs(w).max(initial=0.0), 0.0, w)
    out = np.stack([(R @ U / (1 - tt * w)) @ (U.T @ R) for tt in ts])
    out = (out + np.swapaxes(out, -1, -2)) / 2
    return out[0] if np.ndim(t) == 0 else out


def mean(field: Field, g0: Gaussian, t: ArrayLike) -> np.ndarray:
    r"""$\alpha(t) = e^{v t} \Sigma_0^{1/2} (I - t \tilde S)^{-1/2} \Sigma_0^{-1/2} \alpha_0$
    ($A$ symmetric) for `t` scalar or array (before $T^*$): `(d,)`, or `(n, d)` for `n` times.

    Softmax with $W_O V = v I$ and symmetric $A = K^T Q$; needs $\Sigma_0$ positive definite.
    `ValueError` otherwise, and for $t \ge T^*$.
    """
    a0, S0 = field_state(field, g0)
    S, v, _ = softmax_S(field, need_symmetric_A=True)
    w0, U0 = np.linalg.eigh(S0)
    if w0[0] <= RANK_TOL * max(1.0, w0[-1]):
        raise ValueError("g0.cov must be positive definite for the closed-form mean")
    R = (U0 * np.sqrt(w0)) @ U0.T
    Rinv = (U0 / np.sqrt(w0)) @ U0.T
    St = R @ S @ R
    lam, U = np.linalg.eigh((St + St.T) / 2)
    ts = np.atleast_1d(np.asarray(as_array("t", t), dtype=float))
    T = blowup_time(field, g0)
    if np.any(ts >= T):
        raise ValueError(f"t must be below the blow-up time T* = {T:.8g}")
    out = np.stack([math.exp(v * tt) * (R @ ((U / np.sqrt(1 - tt * lam)) @ (U.T @ (Rinv @ a0))))
                    for tt in ts])
    return out[0] if np.ndim(t) == 0 else out


def _range_basis(S):
    w, U = np.linalg.eigh(S)
    scale = max(float(np.max(np.abs(w))), 1e-300)
    return U[:, np.abs(w) > RANK_TOL * scale], w, scale


def limit_rank(field: Field) -> int:
    r"""$\dim\ker S$ with $S = \sum_h \beta_h v_h (A_h + A_h^T)$: the rank of the limit covariance
    (for a positive definite $\Sigma_0$). Needs $S \preceq 0$ (`ValueError` otherwise)."""
    S, _, _ = softmax_S(field)
    Rb, w, scale = _range_basis(S)
    if w[-1] > RANK_TOL * scale:
        raise ValueError(f"hypothesis 'beta v (A + A^T) <= 0' fails (largest eigenvalue {w[-1]:.4g} "
                         "> 0): the covariance blows up in finite time; see blowup_time")
    return S.shape[0] - Rb.shape[1]


def limit_covariance(field: Field, g0: Gaussian) -> np.ndarray:
    r"""$\lim \Sigma(t) = \Sigma_0 - \Sigma_0 R (R^T \Sigma_0 R)^{-1} R^T \Sigma_0$ ($R$: basis of
    the range of $S$).

    Softmax with $W_O V = v I$ and $S = \beta v (A + A^T) \preceq 0$; $\Sigma_0$ positive
    definite. Approached at rate $O(1/t)$.
    """
    limit_rank(field)  # checks S <= 0
    _, S0 = field_state(field, g0)
    S, _, _ = softmax_S(field)
    w0 = np.linalg.eigvalsh(S0)
    if w0[0] <= RANK_TOL * max(1.0, w0[-1]):
        raise ValueError("g0.cov must be positive definite for limit_covariance")
    Rb, _, _ = _range_basis(S)
    if Rb.shape[1] == 0:
        return S0.copy()
    M = S0 @ Rb
    L = S0 - M @ np.linalg.solve(Rb.T @ S0 @ Rb, M.T)
    return (L + L.T) / 2


def stationary_lines(field: Field) -> np.ndarray:
    r"""Unit directions $u$ ($d = 2$) with $u^T A u = 0$: the stationary rank-one covariances
    $u u^T$.

    For softmax and L2 with any value map. Returns an array `(m, 2)` with $m = 0$ ($A + A^T$
    definite), 1 (semi-definite, singular) or 2 (indefinite); `ValueError` if $A + A^T = 0$
    (every line is stationary).
    """
    from ..variants.softmax import Softmax

    allowed = (Softmax,)
    try:
        from ..variants import L2
        allowed = allowed + (L2,)
    except ImportError:  # pragma: no cover - L2 not available
        pass
    if not isinstance(field, allowed) or type(field) not in allowed:
        raise ValueError(f"field: hypothesis 'softmax or L2 attention' fails ({type(field).__name__})")
    if field.dim != 2:
        raise ValueError(f"stationary_lines needs d = 2, got d = {field.dim}")
    A = np.asarray(field.K).T @ np.asarray(field.Q)
    Sym = (A + A.T) / 2
    w, U = np.linalg.eigh(Sym)
    scale = float(np.max(np.abs(w)))
    if scale == 0:
        raise ValueError("A + A^T = 0: every rank-one covariance is stationary")
    tol = RANK_TOL * scale
    if w[0] > tol or w[1] < -tol:
        return np.zeros((0, 2))
    if abs(w[0]) <= tol:
        return U[:, [0]].T.copy()
    if abs(w[1]) <= tol:
        return U[:, [1]].T.copy()
    # lambda_1 cos^2 + lambda_2 sin^2 = 0 in the eigenbasis (lambda_1 < 0 < lambda_2)
    a, b = math.sqrt(w[1]), math.sqrt(-w[0])
    lines = np.stack([a * U[:, 0] + b * U[:, 1], a * U[:, 0] - b * U[:, 1]])
    return lines / np.linalg.norm(lines, axis=1, keepdims=True)
