"""Validated Gaussian states."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import as_array, check_covariance


class Gaussian(eqx.Module):
    """The token distribution ``N(mean, cov)`` on ``R^d``.

    ``mean`` has shape ``(d,)``; ``cov`` is ``(d, d)``, finite, symmetric to relative tolerance
    ``1e-10`` and positive semi-definite (smallest eigenvalue ``>= -1e-10 * max(1, largest)``); it
    is stored symmetrised. Invalid input raises ``ValueError`` naming the argument. A ``Gaussian``
    is a JAX pytree, so it can be passed through ``jit``/``vmap``/``grad``.
    """

    mean: jax.Array
    cov: jax.Array

    def __init__(self, mean, cov):
        mean = as_array("mean", mean, ndim=1)
        if mean.shape[0] == 0:
            raise ValueError("mean must have at least one entry (d >= 1)")
        cov = check_covariance("cov", cov, d=mean.shape[0])
        self.mean = jnp.asarray(mean, dtype=jnp.float64)
        self.cov = jnp.asarray(cov, dtype=jnp.float64)

    @property
    def dim(self) -> int:
        return self.mean.shape[-1]

    @classmethod
    def standard(cls, d: int) -> "Gaussian":
        """``N(0, I_d)``."""
        return cls(np.zeros(d), np.eye(d))

    def __repr__(self) -> str:
        m = np.array2string(np.asarray(self.mean), precision=4, separator=", ")
        c = np.array2string(np.asarray(self.cov), precision=4, separator=", ", prefix="    cov=")
        return f"Gaussian(d={self.dim},\n    mean={m},\n    cov={c})"

    def _repr_latex_(self) -> str:
        def mat(a):
            a = np.atleast_2d(np.asarray(a))
            rows = [" & ".join(f"{v:.4g}" for v in r) for r in a]
            return r"\begin{pmatrix}" + r" \\ ".join(rows) + r"\end{pmatrix}"

        return rf"$\mathcal N\left({mat(np.asarray(self.mean)[:, None])}, {mat(self.cov)}\right)$"
