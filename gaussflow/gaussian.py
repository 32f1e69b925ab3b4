"""Validated Gaussian states."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from ._checks import as_array, check_covariance


class Gaussian(eqx.Module):
    r"""The token distribution $\mathcal N(\mathtt{mean}, \mathtt{cov})$ on $\mathbb R^d$.

    `mean` has shape `(d,)`; `cov` is `(d, d)`, finite, symmetric to relative tolerance `1e-10`
    and positive semi-definite: smallest eigenvalue $\ge -10^{-10} \max_i |\lambda_i|$ (relative
    to the matrix's own scale, so $\operatorname{diag}(10^{-20}, -10^{-21})$ is rejected like
    $\operatorname{diag}(1, -0.1)$), with a floor at the round-off
    $d\, \epsilon \max_{ij} |\mathtt{cov}_{ij}|$ of its entries ($\epsilon$ the float64 machine
    epsilon; an all-zero covariance is valid). It is stored symmetrised. Invalid input raises `ValueError` naming the
    argument. A `Gaussian` is a JAX pytree, so it can be passed through `jit`/`vmap`/`grad`.

    Parameters
    ----------
    mean : array_like, shape `(d,)`
        The mean, $d \ge 1$.
    cov : array_like, shape `(d, d)`
        The covariance.
    """

    mean: jax.Array
    cov: jax.Array

    def __init__(self, mean: ArrayLike, cov: ArrayLike):
        mean = as_array("mean", mean, ndim=1)
        if mean.shape[0] == 0:
            raise ValueError("mean must have at least one entry (d >= 1)")
        cov = check_covariance("cov", cov, d=mean.shape[0])
        self.mean = jnp.asarray(mean, dtype=jnp.float64)
        self.cov = jnp.asarray(cov, dtype=jnp.float64)

    @property
    def dim(self) -> int:
        """The dimension $d$."""
        return self.mean.shape[-1]

    @classmethod
    def standard(cls, d: int) -> Gaussian:
        r"""$\mathcal N(0, I_d)$."""
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


class PositionalGaussians(eqx.Module):
    r"""One Gaussian per position block: the state of a causal (masked) closure.

    Tokens carry a position $s \in [0, 1]$ split into $B$ equal blocks $[b/B, (b+1)/B)$; block
    $b$ holds $\mathcal N$(`means[b]`, `covs[b]`) and every block carries the same mass $1/B$.
    `means` has shape `(B, d)`, `covs` `(B, d, d)`; each covariance is validated like
    `Gaussian`'s (finite, symmetric, positive semi-definite; stored symmetrised). Invalid input
    raises `ValueError` naming the argument (e.g. `covs[2]`).

    Parameters
    ----------
    means : array_like, shape `(B, d)`
        The block means, $B, d \ge 1$.
    covs : array_like, shape `(B, d, d)`
        The block covariances.
    """

    means: jax.Array
    covs: jax.Array
    positional = True

    def __init__(self, means: ArrayLike, covs: ArrayLike):
        means = as_array("means", means, ndim=2)
        B, d = means.shape
        if B == 0 or d == 0:
            raise ValueError(f"means must have shape (n_blocks, d) with n_blocks, d >= 1, "
                             f"got {tuple(means.shape)}")
        covs = as_array("covs", covs, ndim=3)
        if covs.shape != (B, d, d):
            raise ValueError(f"covs must have shape (n_blocks, d, d) = ({B}, {d}, {d}) to match "
                             f"means, got {tuple(covs.shape)}")
        covs = np.stack([check_covariance(f"covs[{b}]", covs[b], d=d) for b in range(B)]) \
            if not isinstance(covs, jax.core.Tracer) else (covs + jnp.swapaxes(covs, -1, -2)) / 2
        self.means = jnp.asarray(means, dtype=jnp.float64)
        self.covs = jnp.asarray(covs, dtype=jnp.float64)

    @classmethod
    def repeat(cls, g: Gaussian, n_blocks: int) -> PositionalGaussians:
        """Every block carries `g` (the state where the masked closure is exact)."""
        if not isinstance(g, Gaussian):
            raise TypeError(f"g must be a gf.Gaussian, got {type(g).__name__}")
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or n_blocks < 1:
            raise ValueError(f"n_blocks must be a positive integer, got {n_blocks!r}")
        B = int(n_blocks)
        return cls(np.repeat(np.asarray(g.mean)[None], B, 0), np.repeat(np.asarray(g.cov)[None], B, 0))

    @property
    def n_blocks(self) -> int:
        """The number of blocks $B$."""
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        """The token dimension $d$."""
        return self.means.shape[-1]

    def block(self, b: int) -> Gaussian:
        """The Gaussian of block `b`, `0 <= b < n_blocks`; a negative `b` counts from the end as
        in Python (`-1` is the last block). `IndexError` outside `[-n_blocks, n_blocks)` (JAX
        indexing would clamp it to the last block silently); `TypeError` unless `b` is an
        integer."""
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise TypeError(f"b must be an int block index, got {type(b).__name__}")
        B = self.n_blocks
        if not -B <= b < B:
            raise IndexError(f"block index {b} is out of range for {B} blocks; pass "
                             f"0 <= b < {B} (or -{B} <= b < 0 to count from the end)")
        b = int(b) % B
        return Gaussian(self.means[b], self.covs[b])

    def mixture(self) -> Gaussian:
        r"""The moment-matched Gaussian of the whole sequence (equal block masses):
        mean $\bar m = \frac1B \sum_b m_b$, covariance
        $\frac1B \sum_b \left(\Sigma_b + (m_b - \bar m)(m_b - \bar m)^\top\right)$."""
        m = jnp.mean(self.means, axis=0)
        dev = self.means - m
        return Gaussian(m, jnp.mean(self.covs, axis=0) + dev.T @ dev / self.n_blocks)

    def __repr__(self) -> str:
        tr = np.trace(np.asarray(self.covs), axis1=-2, axis2=-1)
        m = np.array2string(np.asarray(self.means[0]), precision=4, separator=", ")
        return (f"PositionalGaussians(n_blocks={self.n_blocks}, d={self.dim}, block 0 mean={m}, "
                f"tr cov in [{tr.min():.4g}, {tr.max():.4g}])")

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{b}</td><td>{np.array2string(np.asarray(self.means[b]), precision=3)}</td>"
            f"<td>{np.trace(np.asarray(self.covs[b])):.4g}</td></tr>"
            for b in range(min(self.n_blocks, 20)))
        more = "" if self.n_blocks <= 20 else f"<tr><td colspan=3>... {self.n_blocks - 20} more</td></tr>"
        return (f"<table><caption>PositionalGaussians: {self.n_blocks} blocks, d = {self.dim}"
                f"</caption><tr><th>block</th><th>mean</th><th>tr cov</th></tr>{rows}{more}</table>")


def example_state(rng: np.random.Generator, d: int) -> Gaussian:
    r"""The initial state of the validation examples: $\mathcal N(m, M M^\top / d + 0.3 I)$ with
    $m \sim 0.7\, \mathcal N(0, I)$ and $M$ standard normal (drawn from the NumPy generator
    `rng`)."""
    mean = 0.7 * rng.normal(size=d)
    M = rng.normal(size=(d, d))
    return Gaussian(mean, M @ M.T / d + 0.3 * np.eye(d))
