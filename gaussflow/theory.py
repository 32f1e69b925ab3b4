"""Theory toolkit: anisotropy measures, closed forms, exact limits and regime classification.

Conventions (DESIGN.md §1): score ``s(x, y) = beta y^T A x`` with ``A = K^T Q``; value map
``y -> W_O V y``. Everything here is NumPy (float64) on concrete arrays.

**Anisotropy** (of a covariance or a stack ``(..., d, d)``):

- :func:`normalised_spectrum`: eigenvalues of ``Sigma / tr Sigma``, in decreasing order (they sum
  to one; a rank-r covariance has r non-zero entries);
- :func:`effective_rank`: ``exp(H(p))`` with ``H(p) = -sum p_i log p_i`` the Shannon entropy of the
  normalised spectrum (Roy & Vetterli's effective rank: ``d`` for ``Sigma ∝ I``, 1 for rank one,
  continuous in between); ``method="threshold"`` counts the ``p_i > tol`` instead;
- :func:`condition_number`: ``lambda_max / lambda_min`` (``inf`` for a singular covariance);
- :func:`alignment`: ``|<e_1, u>| / |u|``, the cosine of the angle between the top eigenvector
  ``e_1`` and a direction ``u`` (1 = aligned, 0 = orthogonal).

**Closed forms for softmax with** ``W_O V = v I`` (a single :class:`~gaussflow.Softmax`, or a sum /
multi-head of such fields). Then ``dSigma/dt = Sigma S Sigma`` with the symmetric matrix
``S = sum_h beta_h v_h (A_h + A_h^T)``, so ``d(Sigma^{-1})/dt = -S`` and

    Sigma(t)^{-1} = Sigma0^{-1} - t S        (for one head: S = beta v (A + A^T)).

The factor ``v`` multiplies ``beta (A + A^T)``: a negative ``v`` swaps the roles of blow-up and
convergence. Written ``Sigma(t) = Sigma0^{1/2} (I - t S~)^{-1} Sigma0^{1/2}`` with the whitened
``S~ = Sigma0^{1/2} S Sigma0^{1/2}``:

- :func:`blowup_time`: ``T* = 1 / lambda_max(S~)`` if ``lambda_max(S~) > 0`` else ``inf``;
- :func:`blowup_direction`: ``Sigma / tr Sigma -> w w^T`` with ``w ∝ Sigma0^{1/2} e`` (``e`` the top
  eigenvector of ``S~``; needs a simple top eigenvalue);
- :func:`limit_covariance`: for ``S <= 0``, ``Sigma(t) -> Sigma0 - Sigma0 R (R^T Sigma0 R)^{-1} R^T Sigma0``
  (R an orthonormal basis of the range of S) at rate O(1/t); :func:`limit_rank` ``= dim ker S``
  (``= dim ker(A + A^T)`` for one head with ``v != 0``);
- :func:`mean` (``A_h`` symmetric): ``alpha(t) = e^{v t} Sigma0^{1/2} (I - t S~)^{-1/2} Sigma0^{-1/2} alpha0``
  with ``v = sum_h v_h`` (from ``d alpha/dt = v alpha + Sigma S alpha / 2``).

:func:`stationary_lines` (d = 2, softmax or L2, any V): rank-one covariances ``u u^T`` are stationary
iff ``u^T A u = 0`` (for L2 because ``(I + 2c u u^T K^T K)^{-1} u = u / (1 + 2c |K u|^2)``).

**Affine + attention** (Alcalde–Ji–Zuazua; :func:`affine_attention`): for ``Affine(W, b)`` plus
softmax parts with ``W_O V = v I``, ``dSigma/dt = W Sigma + Sigma W^T + Sigma S Sigma`` and
``P = Sigma^{-1}`` solves the *linear* equation ``dP/dt = -(W^T P + P W) - S``:
``P(t) = P* + e^{-W^T t} (P0 - P*) e^{-W t}`` with ``W^T P* + P* W = -S``. In d = 1 with
``Affine(w) + Softmax(a)`` (``V = 1``) this is the Riccati equation
``dSigma/dt = 2 w Sigma + 2 beta a Sigma^2``.

**Regimes** (:func:`classify`): see its docstring for the decision rules and thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field

import numpy as np
import scipy.linalg
import scipy.optimize

from ._checks import as_array, as_scalar
from .gaussian import Gaussian

__all__ = [
    "normalised_spectrum", "effective_rank", "condition_number", "alignment", "anisotropy",
    "covariance", "mean", "blowup_time", "blowup_direction", "limit_covariance", "limit_rank",
    "stationary_lines", "affine_attention", "AffineAttentionRegime", "classify", "Regime",
    "angle_to_disk", "REGIMES",
]

#: Relative tolerance for eigenvalues of symmetric weight matrices counted as zero
#: (``|lambda| <= RANK_TOL * max|lambda|``) and for the hypothesis ``W_O V = v I``.
RANK_TOL = 1e-10


# =========================================================================== anisotropy
def _covs(covs, name="covs"):
    covs = np.asarray(as_array(name, covs))
    if covs.ndim < 2 or covs.shape[-1] != covs.shape[-2]:
        raise ValueError(f"{name} must have shape (..., d, d), got {covs.shape}")
    return (covs + np.swapaxes(covs, -1, -2)) / 2


def normalised_spectrum(covs):
    """Eigenvalues of ``Sigma / tr Sigma`` in decreasing order, shape ``(..., d)``.

    Round-off negatives are clipped to zero; a zero covariance gives NaN (no direction).
    """
    covs = _covs(covs)
    w = np.clip(np.linalg.eigvalsh(covs)[..., ::-1], 0.0, None)
    tr = w.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tr > 0, w / np.where(tr > 0, tr, 1.0), np.nan)


def effective_rank(covs, method="entropy", tol=1e-3):
    """Effective rank of covariances ``(..., d, d)``.

    ``method="entropy"`` (default): ``exp(-sum p_i log p_i)``, ``p`` the normalised spectrum (between
    1 and d). ``method="threshold"``: the number of ``p_i > tol`` (an integer).
    """
    p = normalised_spectrum(covs)
    if method == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
        return np.where(np.all(np.isfinite(p), axis=-1), np.exp(h), np.nan)
    if method == "threshold":
        tol = float(as_scalar("tol", tol, positive=True))
        return np.sum(p > tol, axis=-1)
    raise ValueError(f"method must be 'entropy' or 'threshold', got {method!r}")


def condition_number(covs):
    """``lambda_max / lambda_min`` of covariances ``(..., d, d)`` (``inf`` when singular)."""
    w = np.linalg.eigvalsh(_covs(covs))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w[..., 0] > 0, w[..., -1] / np.where(w[..., 0] > 0, w[..., 0], 1.0), np.inf)


def alignment(covs, direction):
    """Cosine ``|<e_1, u>| / |u|`` between the top eigenvector ``e_1`` of each covariance and ``u``."""
    covs = _covs(covs)
    u = np.asarray(as_array("direction", direction, ndim=1))
    if u.shape[0] != covs.shape[-1]:
        raise ValueError(f"direction must have length {covs.shape[-1]}, got {u.shape[0]}")
    nu = np.linalg.norm(u)
    if nu == 0:
        raise ValueError("direction must be non-zero")
    e1 = np.linalg.eigh(covs)[1][..., :, -1]
    return np.abs(e1 @ (u / nu))


def anisotropy(traj, direction=None):
    """Anisotropy measures along a trajectory: dict of arrays over ``traj.ts``.

    Keys: ``ts``, ``trace``, ``spectrum`` (normalised, decreasing), ``effective_rank`` (entropy),
    ``condition``, and ``alignment`` when ``direction`` is given.
    """
    covs = np.asarray(traj.covs)
    out = {"ts": np.asarray(traj.ts), "trace": np.trace(covs, axis1=-2, axis2=-1),
           "spectrum": normalised_spectrum(covs), "effective_rank": effective_rank(covs),
           "condition": condition_number(covs)}
    if direction is not None:
        out["alignment"] = alignment(covs, direction)
    return out


def angle_to_disk(u):
    """The point of the unit circle ``(a - b, 2c)/tr`` of the rank-one covariance ``u u^T`` (d = 2)."""
    u = np.asarray(u, dtype=float)
    th = math.atan2(u[1], u[0])
    return np.array([math.cos(2 * th), math.sin(2 * th)])


# ====================================================================== closed forms
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
    """``v`` with ``W_O V = v I``, or ValueError naming the failed hypothesis."""
    WV = np.asarray(h.W_O) @ np.asarray(h.V)
    d = WV.shape[0]
    v = float(np.trace(WV)) / d
    dev = float(np.max(np.abs(WV - v * np.eye(d))))
    if dev > RANK_TOL * max(1.0, abs(v), float(np.max(np.abs(WV)))):
        raise ValueError(
            f"{name}: hypothesis W_O V = v I fails (W_O V deviates from {v:.4g} I by {dev:.3g}); "
            "the closed forms need a value map that is a multiple of the identity — use gf.solve")
    return v


def _softmax_S(field, allow_affine=False, need_symmetric_A=False):
    """``(S, v_total, W)`` for softmax parts with ``W_O V = v I`` (+ optional affine parts).

    ``S = -sum_h v_h (d Sigma^{-1}/dt)_h`` read from each part's derivation (its closed form
    ``inverse_increment`` at ``t = 1``, derived with ``W_O V = I``; for softmax
    ``beta_h (A_h + A_h^T)``); ``W`` the summed affine matrix (zeros if none).
    """
    from .variants.softmax import Softmax
    from .field import Field

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


def _state(field, g0):
    """Validated ``(mean, cov)`` of ``g0`` (checked before any work on the field)."""
    from .field import Field

    if not isinstance(field, Field):
        raise TypeError(f"field must be a gaussflow field, got {type(field).__name__}")
    if not isinstance(g0, Gaussian):
        raise TypeError(f"g0 must be a gf.Gaussian, got {type(g0).__name__}")
    if g0.dim != field.dim:
        raise ValueError(f"g0 has dimension {g0.dim} but the field acts on dimension {field.dim}")
    return np.asarray(g0.mean), np.asarray(g0.cov)


def _sqrt_psd(S):
    w, U = np.linalg.eigh(S)
    return (U * np.sqrt(np.clip(w, 0, None))) @ U.T


def _whitened(field, g0):
    _, S0 = _state(field, g0)
    S, v, _ = _softmax_S(field)
    R = _sqrt_psd(S0)
    St = R @ S @ R
    return S, v, S0, R, (St + St.T) / 2


def blowup_time(field, g0):
    """Finite blow-up time ``T* = 1/lambda_max(Sigma0^{1/2} S Sigma0^{1/2})``, ``inf`` if none.

    ``S = beta v (A + A^T)`` (summed over heads); softmax with ``W_O V = v I`` only.
    """
    _, _, _, _, St = _whitened(field, g0)
    lam = float(np.linalg.eigvalsh(St)[-1])
    scale = max(float(np.max(np.abs(St))), 1e-300)
    return 1.0 / lam if lam > RANK_TOL * scale else math.inf


def blowup_direction(field, g0):
    """Unit vector ``w`` with ``Sigma(t)/tr Sigma(t) -> w w^T`` as ``t -> T*`` (sign: largest entry > 0).

    ValueError if there is no blow-up or the top eigenvalue of ``Sigma0^{1/2} S Sigma0^{1/2}`` is
    repeated (then the limit is a projector of higher rank, not a line).
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


def covariance(field, g0, t):
    """``Sigma(t) = Sigma0^{1/2} (I - t S~)^{-1} Sigma0^{1/2}`` for ``t`` scalar or array (before T*).

    Softmax with ``W_O V = v I``; valid for singular ``Sigma0`` too. ValueError for ``t >= T*``.
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


def mean(field, g0, t):
    """``alpha(t) = e^{v t} Sigma0^{1/2} (I - t S~)^{-1/2} Sigma0^{-1/2} alpha0`` (A symmetric).

    Softmax with ``W_O V = v I`` and symmetric ``A = K^T Q``; needs ``Sigma0`` positive definite.
    """
    a0, S0 = _state(field, g0)
    S, v, _ = _softmax_S(field, need_symmetric_A=True)
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


def limit_rank(field):
    """``dim ker S`` with ``S = sum_h beta_h v_h (A_h + A_h^T)``: the rank of the limit covariance
    (for a positive definite ``Sigma0``). Needs ``S <= 0`` (ValueError otherwise)."""
    S, _, _ = _softmax_S(field)
    Rb, w, scale = _range_basis(S)
    if w[-1] > RANK_TOL * scale:
        raise ValueError(f"hypothesis 'beta v (A + A^T) <= 0' fails (largest eigenvalue {w[-1]:.4g} "
                         "> 0): the covariance blows up in finite time; see blowup_time")
    return S.shape[0] - Rb.shape[1]


def limit_covariance(field, g0):
    """``lim Sigma(t) = Sigma0 - Sigma0 R (R^T Sigma0 R)^{-1} R^T Sigma0`` (R: basis of range S).

    Softmax with ``W_O V = v I`` and ``S = beta v (A + A^T) <= 0``; ``Sigma0`` positive definite.
    Approached at rate O(1/t).
    """
    limit_rank(field)  # checks S <= 0
    _, S0 = _state(field, g0)
    S, _, _ = _softmax_S(field)
    w0 = np.linalg.eigvalsh(S0)
    if w0[0] <= RANK_TOL * max(1.0, w0[-1]):
        raise ValueError("g0.cov must be positive definite for limit_covariance")
    Rb, _, _ = _range_basis(S)
    if Rb.shape[1] == 0:
        return S0.copy()
    M = S0 @ Rb
    L = S0 - M @ np.linalg.solve(Rb.T @ S0 @ Rb, M.T)
    return (L + L.T) / 2


def stationary_lines(field):
    """Unit directions ``u`` (d = 2) with ``u^T A u = 0``: the stationary rank-one covariances ``u u^T``.

    For softmax and L2 with any value map. Returns an array ``(m, 2)`` with m = 0 (``A + A^T``
    definite), 1 (semi-definite, singular) or 2 (indefinite); ValueError if ``A + A^T = 0`` (every
    line is stationary).
    """
    from .variants.softmax import Softmax

    allowed = (Softmax,)
    try:
        from .variants import L2
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


# ================================================================ affine + attention
@dataclass(frozen=True)
class AffineAttentionRegime:
    """Outcome of :func:`affine_attention`.

    ``kind``: ``"equilibrium"`` (Sigma -> ``equilibrium``), ``"blowup"`` (at ``blowup_time``),
    ``"collapse"`` (Sigma -> 0 exponentially), ``"growth"`` (unbounded, no finite-time blow-up),
    or ``"depends"`` (no g0 given and the answer depends on it). ``P_star`` solves
    ``W^T P + P W = -S``.
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


def affine_attention(field, g0=None, t_max=1e4):
    """Regime of ``Affine(W, b) + softmax`` (constant weights, ``W_O V = v I``), Alcalde–Ji–Zuazua.

    ``P = Sigma^{-1}`` follows ``P(t) = P* + e^{-W^T t} (P0 - P*) e^{-W t}`` with
    ``W^T P* + P* W = -S``, ``S = sum_h beta_h v_h (A_h + A_h^T)``:

    - every eigenvalue of ``W`` with positive real part: ``P -> P*``; the stable equilibrium
      ``Sigma* = P*^{-1}`` if ``P* > 0``, otherwise finite-time blow-up (P leaves the PD cone);
    - every eigenvalue with negative real part: ``Sigma -> 0`` when ``Sigma0^{-1} - P* > 0``,
      otherwise blow-up (``"depends"`` without ``g0``);
    - mixed spectra: decided from ``g0`` by following ``lambda_min(P(t))`` up to ``t_max``.

    With ``g0`` the blow-up time is the first root of ``lambda_min(P(t)) = 0`` (brentq).
    """
    S, _, W = _softmax_S(field, allow_affine=True)
    if not np.any(W):
        raise ValueError("field has no affine part; use blowup_time / limit_covariance")
    P_star = _lyapunov_P(W, S)
    re = np.linalg.eigvals(W).real
    pmin = float(np.linalg.eigvalsh(P_star)[0])
    pscale = max(float(np.max(np.abs(P_star))), 1e-300)
    P0 = None
    if g0 is not None:
        _, S0 = _state(field, g0)
        if np.linalg.eigvalsh(S0)[0] <= 0:
            raise ValueError("g0.cov must be positive definite")
        P0 = np.linalg.inv(S0)
        P0 = (P0 + P0.T) / 2

    def lam_min(t):
        """``lambda_min(P(t))``, computed as ``s lambda_min(P / s)`` with ``s = max|P_ij|`` (the
        entries of ``P`` grow like ``e^{2 |Re lambda(W)| t}`` for a contracting ``W``: unscaled,
        ``P + P^T`` overflows and LAPACK's eigensolver fails). NaN once ``P`` is not finite."""
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


# ======================================================================== classify
#: Regimes returned by :func:`classify`.
REGIMES = ("stationary", "collapse", "converge", "blowup", "growth", "undetermined")

#: Decision thresholds of :func:`classify` (see its docstring).
THRESHOLDS = {
    "stationary": 1e-6,     # max_t |Sigma(t) - Sigma0| / |Sigma0| below this: stationary
    "decay_exponent": 0.5,  # p_i ~ t^{-k}: k above this over [t/2, t] counts as vanishing
    "floor": 1e-8,          # p_i below this at t_end counts as zero whatever its exponent
    "growth": 4.0,          # tr Sigma(t_end) / tr Sigma(t_half) above this: unbounded growth
    "moving": 0.05,         # |Sigma(t_end) - Sigma(t_half)| / |Sigma(t_end)| above: not converged
    "settling": 0.75,       # change ratio [t/2, t] vs [t/4, t/2] below this: settling (1/t gives 1/2)
    "settled": 1e-7,        # change over [t/2, t] below this: converged whatever the ratio
    "blowup_share": 1e-4,   # at blow-up, p_i above this counts in the rank of Sigma / tr Sigma
}


@dataclass(frozen=True)
class Regime:
    """What a trajectory does. ``kind`` in :data:`REGIMES`.

    ``rank``: the rank of the limit of ``Sigma`` (converge, stationary) or of ``Sigma / tr Sigma``
    (blowup, growth); ``limit``: the limit covariance (converge: extrapolated, see
    :func:`classify`; stationary: Sigma0) or the limit of ``Sigma / tr Sigma`` (blowup, growth,
    collapse); ``blowup_time``: t* (blowup); ``rate``: ``d log tr Sigma / dt`` over the last half
    (growth, collapse); ``exponents``: the decay exponents ``k_i`` of the normalised spectrum.
    """

    kind: str
    rank: int | None = None
    limit: np.ndarray | None = None
    blowup_time: float | None = None
    rate: float | None = None
    reason: str = ""
    exponents: np.ndarray | None = dc_field(default=None, repr=False)

    def __str__(self) -> str:
        parts = [self.kind]
        if self.rank is not None:
            parts.append(f"rank {self.rank}")
        if self.blowup_time is not None:
            parts.append(f"t* = {self.blowup_time:.6g}")
        if self.rate is not None:
            parts.append(f"rate {self.rate:.3g}")
        return ", ".join(parts)


def _at(ts, covs, t):
    """Saved time and covariance nearest to time t."""
    i = int(np.argmin(np.abs(ts - t)))
    return ts[i], covs[i]


def _top(S, r, normalise=False):
    """Projection of symmetric S on its top-r eigenspace (optionally divided by its trace)."""
    w, U = np.linalg.eigh((S + S.T) / 2)
    Ur, wr = U[:, ::-1][:, :r], np.clip(w[::-1][:r], 0, None)
    L = (Ur * wr) @ Ur.T
    L = (L + L.T) / 2
    return L / np.trace(L) if normalise and np.trace(L) > 0 else L


def classify(traj, thresholds=None) -> Regime:
    """Classify a solved trajectory (``gf.Trajectory``) into one of :data:`REGIMES`.

    Rules, in order. Write ``t0 = ts[0]``, ``t_end`` the last saved time, ``t_q, t_h`` the saved
    times nearest to ``t0 + (t_end - t0)/4`` and ``t0 + (t_end - t0)/2`` (save densely enough,
    e.g. 101 equally spaced times), ``p`` the normalised spectrum (:func:`normalised_spectrum`).

    1. ``status == "blowup"``: ``blowup`` with ``traj.blowup_time``; ``limit`` is the last
       ``Sigma/tr Sigma`` projected on the directions with ``p_i > blowup_share`` (the solver
       stops once ``tr Sigma`` grew 1e8-fold, so bounded directions keep a share ~1e-8).
    2. any other status but ``completed``: ``undetermined`` (the reason names the status).
    3. ``max_s |Sigma(s) - Sigma0| / |Sigma0| < stationary`` (Frobenius): ``stationary``.
    4. *Vanishing directions* (rank). The exponent
       ``k_i = -log(p_i(t_end)/p_i(t_h)) / log((t_end - t0)/(t_h - t0))`` is 1 for the O(1/t)
       decay of the softmax limits (``p_i ~ c/t``), near 0 for a direction that keeps a share of
       the trace, and large for exponential decay; ``p_i`` vanishes if ``k_i > decay_exponent``
       (1/2, half-way between 0 and 1) or ``p_i(t_end) < floor``. The rank r counts the others.
       For ``p = a + c/t`` the exponent is about ``c / (a t)``, so ``t_end`` must be long compared
       with the flow's time scale (e.g. 10^3 for the DESIGN.md §6 weights).
    5. ``tr Sigma(t_end) / tr Sigma(t_h) > growth``: ``growth`` (rate = slope of log tr in time).
       Trace exponent ``k_tr > decay_exponent`` or ``tr Sigma(t_end) < floor tr Sigma0``:
       ``collapse`` (Sigma -> 0).
    6. *Convergence* of the kept part: with ``K(t)`` the projection of ``Sigma(t)`` on its top-r
       eigenspace, ``delta_2 = |K(t_end) - K(t_h)| / |Sigma(t_end)|`` and ``delta_1`` the same over
       ``[t_q, t_h]`` (the vanishing directions are left out: their 1/t decay would mask a slow
       drift of the rest). A ``1/t`` approach gives ``delta_2/delta_1 = 1/2``,
       an exponential one much less; a slow drift (e.g. a collapse on a long time scale) gives
       about 1 or more. ``converge`` if ``delta_2 < settled``, or ``delta_2 < moving`` and
       ``delta_2/delta_1 < settling``; otherwise ``undetermined`` ("still evolving").
       The limit is the Richardson extrapolation of a ``1/t`` approach,
       ``((t_end - t0) Sigma(t_end) - (t_h - t0) Sigma(t_h)) / (t_end - t_h)``, projected on its
       top-r eigenspace (exact to O(1/t^2) for the softmax limits).

    Thresholds (:data:`THRESHOLDS`, overridable by ``thresholds={...}``) sit between the values
    the regimes produce, so modest changes of the solver tolerances do not change decisions.
    """
    th = dict(THRESHOLDS)
    if thresholds:
        unknown = set(thresholds) - set(th)
        if unknown:
            raise ValueError(f"unknown thresholds {sorted(unknown)}; known: {sorted(th)}")
        th.update(thresholds)
    ts = np.asarray(getattr(traj, "ts", None), dtype=float)
    covs = np.asarray(getattr(traj, "covs", None), dtype=float)
    if covs.ndim != 3 or ts.ndim != 1 or len(ts) != len(covs) or len(ts) == 0:
        raise ValueError("traj must be a gf.Trajectory of one Gaussian (covs of shape (n, d, d))")
    covs = (covs + np.swapaxes(covs, -1, -2)) / 2
    status = traj.status
    S_end = covs[-1]
    p_end = normalised_spectrum(S_end)
    if status == "blowup":
        rank = int(np.sum(p_end > th["blowup_share"]))
        return Regime("blowup", rank=rank, limit=_top(S_end, max(rank, 1), normalise=True),
                      blowup_time=traj.blowup_time, reason="solver detected finite-time blow-up")
    if status != "completed":
        return Regime("undetermined", reason=f"solve stopped with status {status!r}")
    if len(ts) < 5:
        return Regime("undetermined", reason="fewer than 5 saved times; save more (ts=...)")
    t0, t_end = ts[0], ts[-1]
    span = t_end - t0
    t_h, S_half = _at(ts, covs, t0 + span / 2)
    t_q, S_q = _at(ts, covs, t0 + span / 4)
    S0 = covs[0]
    n0 = max(np.linalg.norm(S0), 1e-300)
    if np.max(np.linalg.norm(covs - S0, axis=(1, 2))) / n0 < th["stationary"]:
        r = int(np.sum(normalised_spectrum(S0) >= th["floor"]))
        return Regime("stationary", rank=r, limit=S0, reason="Sigma(t) = Sigma0 along the path")
    p_half = normalised_spectrum(S_half)
    lt = math.log(span / max(t_h - t0, 1e-300))
    with np.errstate(divide="ignore", invalid="ignore"):
        k = -np.log(p_end / p_half) / lt
    vanish = (p_end < th["floor"]) | (k > th["decay_exponent"])
    rank = int(np.sum(~vanish))
    tr0, trh, tre = np.trace(S0), np.trace(S_half), np.trace(S_end)
    if trh > 0 and tre / trh > th["growth"]:
        rate = math.log(tre / trh) / (t_end - t_h)
        return Regime("growth", rank=rank, limit=_top(S_end, max(rank, 1), normalise=True),
                      rate=rate, exponents=k, reason="tr Sigma grows without finite-time blow-up")
    k_tr = -math.log(max(tre, 1e-300) / trh) / lt if trh > 0 else math.inf
    if tre < th["floor"] * tr0 or k_tr > th["decay_exponent"]:
        rate = math.log(max(tre, 1e-300) / trh) / (t_end - t_h) if trh > 0 else -math.inf
        return Regime("collapse", rank=0, limit=_top(S_end, max(rank, 1), normalise=True),
                      rate=rate, exponents=k, reason="tr Sigma -> 0")
    kept = [_top(S, rank) for S in (S_q, S_half, S_end)]
    ne = max(np.linalg.norm(S_end), 1e-300)
    d2 = np.linalg.norm(kept[2] - kept[1]) / ne
    d1 = np.linalg.norm(kept[1] - kept[0]) / ne
    L = _top(((t_end - t0) * S_end - (t_h - t0) * S_half) / (t_end - t_h), rank)
    settled = d2 < th["settled"] or (d2 < th["moving"] and d2 < th["settling"] * d1)
    if not settled:
        return Regime("undetermined", rank=rank, limit=L, exponents=k,
                      reason=f"still evolving (relative change {d2:.2g} over the last half, "
                             f"{d1:.2g} over the quarter before): integrate longer")
    return Regime("converge", rank=rank, limit=L, exponents=k,
                  reason=f"converges to a rank-{rank} covariance")
