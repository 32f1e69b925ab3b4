r"""Anisotropy measures of covariances and trajectories.

**Anisotropy** (of a covariance or a stack of shape `(..., d, d)`):

- `normalised_spectrum`: eigenvalues of $\Sigma / \operatorname{tr}\Sigma$, in decreasing order
  (they sum to one; a rank-$r$ covariance has $r$ non-zero entries);
- `effective_rank`: $\exp(H(p))$ with $H(p) = -\sum_i p_i \log p_i$ the Shannon entropy of the
  normalised spectrum (Roy & Vetterli's effective rank: $d$ for $\Sigma \propto I$, 1 for rank
  one, continuous in between); `method="threshold"` counts the $p_i > \mathrm{tol}$ instead;
- `condition_number`: $\lambda_{\max} / \lambda_{\min}$ (`inf` for a singular covariance);
- `alignment`: $|\langle e_1, u\rangle| / |u|$, the cosine of the angle between the top
  eigenvector $e_1$ and a direction $u$ (1 = aligned, 0 = orthogonal).
- `spectrum_summary`: a few numbers that describe one covariance of any size (trace, effective
  rank, extreme and top eigenvalues), for printing where $d$ numbers would be a dump;
- `anisotropy`: the measures above along a trajectory; `angle_to_disk`: the point of the unit
  circle of a rank-one covariance ($d = 2$).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from .._checks import as_array, as_scalar



def _covs(covs, name="covs"):
    covs = np.asarray(as_array(name, covs))
    if covs.ndim < 2 or covs.shape[-1] != covs.shape[-2]:
        raise ValueError(f"{name} must have shape (..., d, d), got {covs.shape}")
    return (covs + np.swapaxes(covs, -1, -2)) / 2


def normalised_spectrum(covs: ArrayLike) -> np.ndarray:
    r"""Eigenvalues of $\Sigma / \operatorname{tr}\Sigma$ in decreasing order.

    Round-off negatives are clipped to zero; a zero covariance gives NaN (no direction).

    Parameters
    ----------
    covs : ArrayLike
        Covariances, shape `(..., d, d)` (symmetrised before use).

    Returns
    -------
    np.ndarray
        The normalised spectra, shape `(..., d)`; each sums to one.
    """
    covs = _covs(covs)
    w = np.clip(np.linalg.eigvalsh(covs)[..., ::-1], 0.0, None)
    tr = w.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tr > 0, w / np.where(tr > 0, tr, 1.0), np.nan)


def effective_rank(covs: ArrayLike, method: Literal["entropy", "threshold"] = "entropy",
                   tol: float = 1e-3) -> np.ndarray:
    r"""Effective rank of covariances of shape `(..., d, d)`.

    Parameters
    ----------
    covs : ArrayLike
        Covariances, shape `(..., d, d)`.
    method : {"entropy", "threshold"}
        `"entropy"` (default): $\exp(-\sum_i p_i \log p_i)$, $p$ the normalised spectrum (between
        1 and $d$). `"threshold"`: the number of $p_i > \mathrm{tol}$ (an integer).
    tol : float
        The threshold of `method="threshold"` (positive).

    Returns
    -------
    np.ndarray
        The effective ranks, shape `(...)` (NaN for a zero covariance with `"entropy"`).

    Raises
    ------
    ValueError
        For another `method`.
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


def condition_number(covs: ArrayLike) -> np.ndarray:
    r"""Condition number $\lambda_{\max} / \lambda_{\min}$ of covariances `(..., d, d)`.

    `inf` for a singular covariance.
    """
    w = np.linalg.eigvalsh(_covs(covs))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w[..., 0] > 0, w[..., -1] / np.where(w[..., 0] > 0, w[..., 0], 1.0), np.inf)


def alignment(covs: ArrayLike, direction: ArrayLike) -> np.ndarray:
    r"""Cosine $|\langle e_1, u\rangle| / |u|$ between the top eigenvector $e_1$ and $u$.

    $e_1$ is the top eigenvector of each covariance.

    Parameters
    ----------
    covs : ArrayLike
        Covariances, shape `(..., d, d)`.
    direction : ArrayLike
        The direction $u$, shape `(d,)`, non-zero.

    Returns
    -------
    np.ndarray
        The cosines, shape `(...)`, in $[0, 1]$ (1 = aligned, 0 = orthogonal).
    """
    covs = _covs(covs)
    u = np.asarray(as_array("direction", direction, ndim=1))
    if u.shape[0] != covs.shape[-1]:
        raise ValueError(f"direction must have length {covs.shape[-1]}, got {u.shape[0]}")
    nu = np.linalg.norm(u)
    if nu == 0:
        raise ValueError("direction must be non-zero")
    e1 = np.linalg.eigh(covs)[1][..., :, -1]
    return np.abs(e1 @ (u / nu))


def spectrum_summary(cov: ArrayLike, top: int = 5) -> dict[str, float | int | list[float]]:
    r"""A short description of one covariance $\Sigma$ `(d, d)`: what to print for large $d$.

    Parameters
    ----------
    cov : ArrayLike
        The covariance, shape `(d, d)` (symmetrised before use).
    top : int
        How many of the largest eigenvalues to keep (at most $d$).

    Returns
    -------
    dict
        `d`; `trace` $\operatorname{tr}\Sigma$; `effective_rank` (entropy, see
        `effective_rank`); `min`, `max` the extreme eigenvalues; `top` the `top` largest
        eigenvalues in decreasing order.

    Raises
    ------
    ValueError
        For a `cov` that is not one square matrix, or `top` < 1.
    """
    c = _covs(cov, "cov")
    if c.ndim != 2:
        raise ValueError(f"cov must have shape (d, d), got {c.shape}")
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    w = np.linalg.eigvalsh(c)
    return {"d": int(c.shape[0]), "trace": float(np.sum(w)),
            "effective_rank": float(effective_rank(c)), "min": float(w[0]), "max": float(w[-1]), "top": w[::-1][:int(top)].tolist()}


def anisotropy(traj: Any, direction: ArrayLike | None = None) -> dict[str, np.ndarray]:
    """Anisotropy measures along a trajectory: dict of arrays over `traj.ts`.

    Parameters
    ----------
    traj : Trajectory
        A solved `gf.Trajectory` (anything with `ts` and `covs`: this module imports nothing
        above it).
    direction : ArrayLike, optional
        A direction $u$ of shape `(d,)` for the `alignment` entry.

    Returns
    -------
    dict of str to np.ndarray
        Keys: `ts`, `trace`, `spectrum` (normalised, decreasing), `effective_rank` (entropy),
        `condition`, and `alignment` when `direction` is given.
    """
    covs = np.asarray(traj.covs)
    out = {"ts": np.asarray(traj.ts), "trace": np.trace(covs, axis1=-2, axis2=-1),
           "spectrum": normalised_spectrum(covs), "effective_rank": effective_rank(covs),
           "condition": condition_number(covs)}
    if direction is not None:
        out["alignment"] = alignment(covs, direction)
    return out


def angle_to_disk(u: ArrayLike) -> np.ndarray:
    r"""The point of the unit circle of the rank-one covariance $u u^\top$ ($d = 2$).

    For $\Sigma = \begin{pmatrix} a & c \\ c & b \end{pmatrix}$ the point is
    $(a - b, 2c) / \operatorname{tr}\Sigma$; for $\Sigma = u u^\top$ it is
    $(\cos 2\theta, \sin 2\theta)$, $\theta$ the angle of $u$.
    """
    u = np.asarray(u, dtype=float)
    th = math.atan2(u[1], u[0])
    return np.array([math.cos(2 * th), math.sin(2 * th)])
