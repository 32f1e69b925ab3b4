r"""Numerical linear algebra shared by the generated code and the quadrature rules.

`sqrtm_psd` is the principal square root $S = X^{1/2}$ of a symmetric positive semi-definite
matrix $X$ ($S$ symmetric PSD, $S S = X$). It is what the generated code runs for the symbolic
node `gaussflow.symbolic.special.SqrtPSD`, and what the cubature rules use to map standard-normal
nodes $u$ to $\alpha + \Sigma^{1/2} u$.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


@jax.custom_jvp
def sqrtm_psd(X: ArrayLike) -> jax.Array:
    r"""Symmetric PSD square root via `eigh` (runs on GPU, unlike Schur-based `sqrtm`).

    $X$ is symmetrised first ($(X + X^\top) / 2$) and negative eigenvalues (round-off) are
    clipped to zero: with $X = U \operatorname{diag}(w) U^\top$,
    $S = U \operatorname{diag}(\sqrt{\max(w, 0)}) U^\top$.

    Differentiated by its own rule (the Sylvester equation $S\,dS + dS\,S = dX$, solved in the
    eigenbasis: $dS_{ij} = dX_{ij} / (s_i + s_j)$, and $0$ where $s_i + s_j = 0$), which stays
    finite for repeated eigenvalues where differentiating `eigh` itself gives NaN.

    Parameters
    ----------
    X : array_like, shape `(d, d)`
        A symmetric positive semi-definite matrix.

    Returns
    -------
    jax.Array, shape `(d, d)`
        Its principal square root $S$.
    """
    w, U = jnp.linalg.eigh((X + X.T) / 2)
    return (U * jnp.sqrt(jnp.clip(w, 0.0, None))) @ U.T


@sqrtm_psd.defjvp
def _sqrtm_psd_jvp(primals, tangents):
    (X,), (dX,) = primals, tangents
    w, U = jnp.linalg.eigh((X + X.T) / 2)
    s = jnp.sqrt(jnp.clip(w, 0.0, None))
    den = s[:, None] + s[None, :]
    dXu = U.T @ ((dX + dX.T) / 2) @ U
    dS = jnp.where(den > 0, dXu / jnp.where(den > 0, den, 1.0), 0.0)
    return (U * s) @ U.T, U @ dS @ U.T


__all__ = ["sqrtm_psd"]
