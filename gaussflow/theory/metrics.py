"""Anisotropy measures of covariances and trajectories.

**Anisotropy** (of a covariance or a stack ``(..., d, d)``):

- :func:`normalised_spectrum`: eigenvalues of ``Sigma / tr Sigma``, in decreasing order (they sum
  to one; a rank-r covariance has r non-zero entries);
- :func:`effective_rank`: ``exp(H(p))`` with ``H(p) = -sum p_i log p_i`` the Shannon entropy of the
  normalised spectrum (Roy & Vetterli's effective rank: ``d`` for ``Sigma ∝ I``, 1 for rank one,
  continuous in between); ``method="threshold"`` counts the ``p_i > tol`` instead;
- :func:`condition_number`: ``lambda_max / lambda_min`` (``inf`` for a singular covariance);
- :func:`alignment`: ``|<e_1, u>| / |u|``, the cosine of the angle between the top eigenvector
  ``e_1`` and a direction ``u`` (1 = aligned, 0 = orthogonal).
- :func:`anisotropy`: the measures above along a trajectory; :func:`angle_to_disk`: the point of
  the unit circle of a rank-one covariance (d = 2).
"""

from __future__ import annotations

import math

import numpy as np

from .._checks import as_array, as_scalar


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
