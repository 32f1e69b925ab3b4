r"""Numerical linear algebra shared by the generated code and the quadrature rules.

`sqrtm_psd` is the principal square root $S = X^{1/2}$ of a symmetric positive semi-definite
matrix $X$ ($S$ symmetric PSD, $S S = X$). It is what the generated code runs for the symbolic
node `gaussflow.symbolic.special.SqrtPSD`, and what the cubature rules use to map standard-normal
nodes $u$ to $\alpha + \Sigma^{1/2} u$.

`sinkhorn_factor` is $(I + (I + 4 H^\top H)^{1/2})^{-1}$, the factor of the Gaussian Schrödinger
system's solution (node `gaussflow.symbolic.special.SinkhornFactor`), computed from the
singular values of $H$ without forming $H^\top H$.
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


def _g(lam):
    r"""$g(\lambda) = 1 / (1 + \sqrt{1 + 4\lambda^2})$ (even, in $(0, 1/2]$)."""
    return 1.0 / (1.0 + jnp.sqrt(1.0 + 4.0 * lam * lam))


def _g_divided(a, b):
    r"""The divided difference $(g(a) - g(b)) / (a - b)$ ($g'(a)$ at $a = b$), without
    cancellation: with $r = \sqrt{1 + 4\lambda^2}$, $r_b - r_a = 4 (b^2 - a^2) / (r_a + r_b)$, so
    it is $-4 (a + b) / \big((r_a + r_b)(1 + r_a)(1 + r_b)\big)$."""
    ra, rb = jnp.sqrt(1.0 + 4.0 * a * a), jnp.sqrt(1.0 + 4.0 * b * b)
    return -4.0 * (a + b) / ((ra + rb) * (1.0 + ra) * (1.0 + rb))


def _jordan_wielandt(H):
    r"""The symmetric $\left(\begin{smallmatrix} 0 & H \\ H^\top & 0 \end{smallmatrix}\right)$,
    eigenvalues $\pm s_i$ (the singular values of $H$) and zeros."""
    m, n = H.shape
    return jnp.block([[jnp.zeros((m, m), H.dtype), H], [H.T, jnp.zeros((n, n), H.dtype)]])


@jax.custom_jvp
def sinkhorn_factor(H: ArrayLike) -> jax.Array:
    r"""$F = \big(I + (I + 4 H^\top H)^{1/2}\big)^{-1}$, from the singular values of $H$.

    With $H = \sum_i s_i u_i v_i^\top$ (SVD, $v_i$ completed to a basis with $s_i = 0$),
    $F = \sum_i g(s_i) v_i v_i^\top$ with $g(s) = 1 / (1 + \sqrt{1 + 4s^2})$. As $g$ is even,
    $g(J)$ for the symmetric
    $J = \left(\begin{smallmatrix} 0 & H \\ H^\top & 0 \end{smallmatrix}\right)$
    (eigenvalues $\pm s_i$, eigenvectors $(u_i, \pm v_i)/\sqrt 2$) is
    block diagonal with lower right block $F$; that is what is computed, by one `eigh`. Its
    eigenvalues carry an absolute error $O(\epsilon \|H\|)$; forming $I + 4 H^\top H$ (the
    literal formula) gives $O(\epsilon \|H\|^2)$ instead, which swamps the $1$ in the directions
    of the small $s_i$ once $\|H\| \gtrsim 10^6$ (in the Sinkhorn closure
    $H = \Sigma^{1/2} G \Sigma^{1/2}$: a large, ill-conditioned $\Sigma$).

    Differentiated by the Daleckii–Krein rule: with $J = W \Lambda W^\top$,
    $dg(J) = W (g^{[1]} \circ W^\top dJ\, W) W^\top$, $g^{[1]}_{ij}$ the divided difference of
    $g$ at $\lambda_i, \lambda_j$ ($g'$ on ties: finite for repeated singular values, zeros
    included, where differentiating `eigh` gives NaN).

    Parameters
    ----------
    H : array_like, shape `(m, n)`
        A real matrix.

    Returns
    -------
    jax.Array, shape `(n, n)`
        $F$ (symmetric, eigenvalues in $(0, 1/2]$).
    """
    H = jnp.asarray(H)
    m = H.shape[0]
    lam, W = jnp.linalg.eigh(_jordan_wielandt(H))
    return ((W * _g(lam)) @ W.T)[m:, m:]


@sinkhorn_factor.defjvp
def _sinkhorn_factor_jvp(primals, tangents):
    (H,), (dH,) = primals, tangents
    m = H.shape[0]
    lam, W = jnp.linalg.eigh(_jordan_wielandt(H))
    F = (W * _g(lam)) @ W.T
    dF = W @ (_g_divided(lam[:, None], lam[None, :]) * (W.T @ _jordan_wielandt(dH) @ W)) @ W.T
    return F[m:, m:], dF[m:, m:]


__all__ = ["sqrtm_psd", "sinkhorn_factor"]
