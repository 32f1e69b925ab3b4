r"""Input validation shared by every public entry point.

Every check raises `ValueError` (or `TypeError` for a wrong kind of object) whose message names
the argument and says how to fix it. Checks on values (finiteness, symmetry, definiteness) run
only on concrete arrays; under `jax.jit`/`vmap`/`grad` only shapes are checked.

Accepted numbers: real (float, int or bool) arrays and scalars, converted to float64. Rejected
with `TypeError`: `None`, strings (also arrays of numeric strings), complex values (even with a
zero imaginary part: NumPy would silently drop it), object arrays holding `None` or non-numbers,
ragged nested lists. Rejected with `ValueError`: NaN/inf, wrong shapes (the message names the
axis that disagrees).

Scale parameters: `beta` may be any finite real ($\beta < 0$ scores
$-|\beta| \langle Q x, K y\rangle$, i.e. $A \to -A$; $\beta = 0$ is uniform attention);
temperatures `c` (L2) and `eps` (Sinkhorn) must be $> 0$ ($c \le 0$ makes the L2 kernel
non-integrable or constant, $\epsilon \to 0$ is unregularised OT).
"""

from __future__ import annotations

import math

from typing import Any

import jax
import numpy as np
from numpy.typing import ArrayLike

#: Tolerances for symmetry and positive semi-definiteness of covariances:
#: $\max |S - S^\top| \le \mathtt{SYM\_TOL} \max(1, \max |S|)$ and
#: $\lambda_{\min}(S) \ge -\max(\mathtt{PSD\_TOL} \max_i |\lambda_i|,\ d\, \epsilon \max_{ij} |S_{ij}|)$
#: (`psd_tolerance`; relative to the matrix's own scale).
SYM_TOL = 1e-10
PSD_TOL = 1e-10


def psd_tolerance(eigenvalues: ArrayLike, cov: ArrayLike) -> np.ndarray:
    r"""How negative the smallest eigenvalue of the symmetric `cov` (`(..., d, d)`) may be:
    $\max(\mathtt{PSD\_TOL} \max_i |\lambda_i|,\ d\, \epsilon \max_{ij} |S_{ij}|)$ ($\epsilon$ the
    float64 machine epsilon), per matrix of a batch.

    Relative to the largest eigenvalue magnitude, so the verdict does not depend on the units:
    $\operatorname{diag}(10^{-20}, -10^{-21})$ is rejected like $\operatorname{diag}(1, -0.1)$.
    The absolute part is the round-off of the data's own scale, so an all-zero covariance (every
    $\lambda = 0$) is valid.

    Parameters
    ----------
    eigenvalues : array_like, shape `(..., d)`
        The eigenvalues $\lambda_i$ of each matrix.
    cov : array_like, shape `(..., d, d)`
        The matrices $S$ themselves.

    Returns
    -------
    numpy.ndarray, shape `(...)`
        The tolerance of each matrix.
    """
    w = np.asarray(eigenvalues)
    cov = np.asarray(cov)
    d = cov.shape[-1]
    big = np.max(np.abs(w), axis=-1) if w.size else np.zeros(w.shape[:-1])
    entries = np.max(np.abs(cov), axis=(-2, -1)) if cov.size else np.zeros(cov.shape[:-2])
    return np.maximum(PSD_TOL * big, d * np.finfo(np.float64).eps * entries)


def is_concrete(x: Any) -> bool:
    """Whether `x` is not a JAX tracer (so its values can be checked)."""
    return not isinstance(x, jax.core.Tracer)


def _real_array(name: str, value, what: str = "an array of real numbers") -> np.ndarray:
    """`value` as a float64 NumPy array; `TypeError` for anything that is not real numbers."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as e:  # ragged nesting
        raise TypeError(f"{name} must be {what} ({e})") from None
    kind = raw.dtype.kind
    if kind == "c" or (kind == "O" and any(isinstance(v, complex) for v in raw.flat)):
        raise TypeError(f"{name} is complex (dtype {raw.dtype}); pass real numbers "
                        f"(e.g. np.real({name}) if the imaginary part is zero)")
    if kind not in "biufO":
        raise TypeError(f"{name} must be {what}, got dtype {raw.dtype}")
    if kind == "O" and any(v is None for v in raw.flat):
        raise TypeError(f"{name} contains None; pass numbers")
    try:
        return raw.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be {what} ({e})") from None


def as_array(name: str, value: ArrayLike, ndim: int | None = None,
             shape: tuple[int | None, ...] | None = None) -> np.ndarray | jax.Array:
    """Convert `value` to a float64 array (a tracer is returned as is) and check it.

    Parameters
    ----------
    name : str
        The argument's name, for the error messages.
    value : array_like
        Real numbers (see the module docstring).
    ndim : int, optional
        The required number of dimensions.
    shape : tuple, optional
        The required shape, `None` for an axis of any length (compared on the leading axes).

    Returns
    -------
    numpy.ndarray or jax.Array
        The float64 array (or the tracer), finite when concrete.

    Raises
    ------
    TypeError
        For values that are not real numbers.
    ValueError
        For a wrong number of dimensions or shape, or NaN/inf entries.
    """
    if isinstance(value, jax.core.Tracer):
        arr = value
    else:
        arr = _real_array(name, value)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(arr.shape)}")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, arr.shape)):
            if want is not None and want != got:
                raise ValueError(
                    f"{name} has shape {tuple(arr.shape)} but axis {axis} must be {want} "
                    f"(expected shape {tuple('*' if s is None else s for s in shape)})"
                )
    if is_concrete(arr):
        if arr.size and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or inf; pass finite values")
    return arr


def positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    """`value` as an `int >= 1` (`None` passes when `allow_none`); `ValueError` otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive integer{extra}, got {value!r}")
    return int(value)


def as_scalar(name: str, value: ArrayLike, positive: bool = False,
              nonnegative: bool = False) -> np.ndarray | jax.Array:
    """A real, finite scalar, as a 0-d float64 NumPy array (a tracer is returned as is);
    `positive=True` requires `> 0`, `nonnegative=True` requires `>= 0`.

    Raises `TypeError` for `None`, a bool, a string or a non-real value, and `ValueError` for a
    non-scalar, a non-finite value or one out of range, naming `name`.
    """
    if isinstance(value, jax.core.Tracer):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    arr = _real_array(name, value, what="a real number")
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    v = float(arr)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return arr


def check_covariance(name: str, cov: ArrayLike, d: int | None = None) -> np.ndarray | jax.Array:
    r"""Square, finite, symmetric and positive semi-definite; returns $(S + S^\top) / 2$.

    Symmetric: $\max |S - S^\top| \le \mathtt{SYM\_TOL} \max(1, \max |S|)$. Positive
    semi-definite: the smallest eigenvalue of $(S + S^\top) / 2$ is
    $\ge -\max(\mathtt{PSD\_TOL} \max_i |\lambda_i|,\ d\, \epsilon \max_{ij} |S_{ij}|)$
    (`psd_tolerance`; `PSD_TOL = 1e-10`): relative to the matrix's own largest eigenvalue, with
    a floor at the round-off of its entries (an all-zero matrix is valid). `d`, when given, is
    the required size (that of the mean). Under a JAX transformation only the shape is checked.
    """
    cov = as_array(name, cov, ndim=2)
    if cov.shape[0] != cov.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(cov.shape)}")
    if d is not None and cov.shape[0] != d:
        raise ValueError(f"{name} must be {d} x {d} to match the mean, got {tuple(cov.shape)}")
    if not is_concrete(cov):
        return (cov + cov.T) / 2
    scale = max(1.0, float(np.max(np.abs(cov)))) if cov.size else 1.0
    asym = float(np.max(np.abs(cov - cov.T))) if cov.size else 0.0
    if asym > SYM_TOL * scale:
        raise ValueError(
            f"{name} is not symmetric (max |S - S^T| = {asym:.3g}); pass (S + S.T) / 2"
        )
    sym = (cov + cov.T) / 2
    if cov.size:
        w = np.linalg.eigvalsh(sym)
        if w[0] < -psd_tolerance(w, sym):
            raise ValueError(
                f"{name} is not positive semi-definite (smallest eigenvalue {w[0]:.3g}); "
                "pass a covariance matrix, e.g. M @ M.T"
            )
    return sym


def check_times(t0: float, t1: float,
                ts: ArrayLike | None = None) -> tuple[float, float, np.ndarray | None]:
    """`t1 > t0` finite; `ts` (optional) one-dimensional, strictly increasing, inside `[t0, t1]`.

    Returns `(t0, t1, ts)` as floats and a NumPy array (or `None`).
    """
    t0 = float(as_scalar("t0", t0))
    t1 = float(as_scalar("t1", t1))
    if not t1 > t0:
        raise ValueError(f"t1 must be greater than t0 (got t0={t0}, t1={t1})")
    if ts is not None:
        ts = np.asarray(as_array("ts", ts, ndim=1))
        if ts.size == 0:
            raise ValueError("ts must hold at least one time; pass e.g. np.linspace(t0, t1, 50)")
        if np.any(np.diff(ts) <= 0):
            raise ValueError("ts must be strictly increasing")
        if ts[0] < t0 or ts[-1] > t1:
            raise ValueError(f"ts must lie in [t0, t1] = [{t0}, {t1}], got [{ts[0]}, {ts[-1]}]")
    return t0, t1, ts


def check_batched_covs(covs: np.ndarray) -> None:
    """Check that each of `covs` `(B, d, d)` is symmetric (to `SYM_TOL`) and positive
    semi-definite; raise `ValueError` naming `g0s.cov` otherwise."""
    as_array("g0s.cov", covs, ndim=3)
    scale = np.maximum(1.0, np.abs(covs).max(axis=(1, 2)))
    asym = np.abs(covs - np.swapaxes(covs, 1, 2)).max(axis=(1, 2))
    bad = np.nonzero(asym > SYM_TOL * scale)[0]
    if bad.size:
        raise ValueError(f"g0s.cov[{bad[0]}] is not symmetric; pass (S + S^T) / 2")
    sym = (covs + np.swapaxes(covs, 1, 2)) / 2
    w = np.linalg.eigvalsh(sym)
    bad = np.nonzero(w[:, 0] < -psd_tolerance(w, sym))[0]
    if bad.size:
        raise ValueError(f"g0s.cov[{bad[0]}] is not positive semi-definite (smallest eigenvalue "
                         f"{w[bad[0], 0]:.3g}); pass covariance matrices")
