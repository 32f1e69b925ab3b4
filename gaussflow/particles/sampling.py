"""Token clouds: draws from a Gaussian (`sample`: independent, antithetic or scrambled Sobol),
seeds and PRNG keys, and the empirical moments of a cloud (`empirical_moments`)."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from ..gaussian import Gaussian

#: Sampling methods of `sample`.
SAMPLERS = ("random", "antithetic", "sobol")


def sample(g: Gaussian, n: int, seed: int | jax.Array = 0, method: str = "random") -> np.ndarray:
    r"""`n` draws from $\mathcal{N}(\mathtt{g.mean}, \mathtt{g.cov})$, shape `(n, d)`, float64.

    Uses a symmetric eigendecomposition $\mathrm{cov} = U \operatorname{diag}(w) U^\top$
    ($x = \mathrm{mean} + U \sqrt{w}\, z$), so singular (PSD) covariances are fine: the samples lie
    in $\mathrm{mean} + \operatorname{range}(\mathrm{cov})$ (eigenvalues at round-off level count
    as zero). The same seed gives the same samples.

    Parameters
    ----------
    g : Gaussian
        The law to draw from.
    n : int
        The number of draws, `>= 1`.
    seed : int or jax.Array
        An int in `[0, 2**32)` (`jax.random.PRNGKey(seed)`) or a JAX PRNG key (raw `uint32` of
        shape `(2,)` or typed); anything else is refused before sampling.
    method : str
        `"random"` (independent draws, $z \sim \mathcal{N}(0, I)$), `"antithetic"` (mirrored
        pairs, below) or `"sobol"` (randomised quasi-Monte Carlo: $z = \Phi^{-1}(u)$ for the
        first `n` points $u$ of a scrambled Sobol sequence (`scipy.stats.qmc`), scrambling
        seeded from `seed`; best balanced for `n` a power of two). Each Sobol cloud is
        marginally uniform over the scrambling, and its empirical measure tends to the same
        Gaussian, with integration error of smooth functions falling about like $1/n$ instead
        of $n^{-1/2}$; no random extreme outliers (the largest $|z|$ is about
        $\Phi^{-1}(1 - 1/(2n))$). A variance reduction for validating closures (same limit).

        `"antithetic"`: `n // 2` independent draws $x$, each followed by its mirror image
        $2\alpha - x$ through the mean $\alpha$ = `g.mean` (rows $x_1, 2\alpha - x_1, x_2, \dots$);
        for odd `n` the first row is $\alpha$ itself, then the pairs. The empirical mean is
        $\alpha$ to round-off (so is the mean of every prefix ending with a complete pair), the
        empirical measure is symmetric about $\alpha$, and its covariance is that of `n // 2`
        independent draws (odd `n`: scaled by $(n - 1) / n$). Each row of a pair has the law
        $\mathcal{N}(\alpha, \Sigma)$, so the empirical measure has the same mean-field limit.
        The point: flows that expand the mean ($V$ close to $I$) amplify the $O(n^{-1/2})$ error
        of an independent cloud's mean like $e^t$; mirrored clouds have none to amplify.

    Returns
    -------
    numpy.ndarray
        The cloud, shape `(n, d)`.

    Raises
    ------
    TypeError
        When `g` is not a `gf.Gaussian`, or `seed` neither an int nor a PRNG key.
    ValueError
        For `n < 1`, an int seed outside `[0, 2**32)` or an unknown `method`.
    """
    if not isinstance(g, Gaussian):
        raise TypeError(f"g must be a gf.Gaussian, got {type(g).__name__}; wrap it as "
                        "gf.Gaussian(mean, cov)")
    n = check_count("n", n, minimum=1)
    key = _key(seed)
    if method not in SAMPLERS:
        raise ValueError(f"method must be one of {SAMPLERS}, got {method!r}")
    cov = np.asarray(g.cov)
    w, U = np.linalg.eigh((cov + cov.T) / 2)
    # Eigenvalues at round-off level (|w| <= d eps max|w|) are zero: exact null directions stay null.
    w = np.where(np.abs(w) <= g.dim * np.finfo(float).eps * np.max(np.abs(w)), 0.0, w)
    root = U * np.sqrt(np.clip(w, 0.0, None))
    if method == "sobol":
        from scipy.stats import norm, qmc

        rng_seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
        with warnings.catch_warnings():  # "balance properties" warning for n not a power of two
            warnings.simplefilter("ignore", UserWarning)
            u = qmc.Sobol(g.dim, scramble=True, seed=rng_seed).random(n)
        z = norm.ppf(u)
    elif method == "antithetic":
        half = np.asarray(jax.random.normal(key, (n // 2, g.dim), dtype=jnp.float64))
        z = np.stack([half, -half], axis=1).reshape(2 * (n // 2), g.dim)
        if n % 2:
            z = np.concatenate([np.zeros((1, g.dim)), z])
        # x and 2 alpha - x as alpha + r and alpha - r: the pair sums to 2 alpha to round-off
    else:
        z = np.asarray(jax.random.normal(key, (n, g.dim), dtype=jnp.float64))
    return np.asarray(g.mean)[None, :] + z @ root.T


#: Integer seeds are `0 <= seed < SEED_LIMIT` (one 32-bit word of a JAX PRNG key).
SEED_LIMIT = 2**32


def _key(seed, name="seed"):
    """`seed` as a JAX PRNG key: an int in `[0, 2**32)` (`jax.random.PRNGKey(seed)`) or a
    key already (a raw `uint32` key of shape `(2,)`, or a typed `jax.random.key`)."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        if not 0 <= int(seed) < SEED_LIMIT:
            raise ValueError(f"{name} must be an int in [0, 2**32) or a JAX PRNG key, got the int "
                             f"{int(seed)}; reduce it, e.g. {name} % 2**32")
        return jax.random.PRNGKey(int(seed))
    if isinstance(seed, jax.Array):
        if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key) and seed.shape == ():
            return jax.random.key_data(seed)
        if seed.dtype == jnp.uint32 and seed.shape == (2,):
            return seed
    raise TypeError(f"{name} must be an int in [0, 2**32) or a JAX PRNG key "
                    f"(jax.random.PRNGKey(s)), got {seed!r}")


def check_count(name: str, n: Any, minimum: int = 1) -> int:
    """`n` as a Python int `>= minimum` (bool, float and other types refused).

    Raises `ValueError` naming the argument `name` otherwise.
    """
    if (isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer))
            or n < minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def empirical_moments(X: ArrayLike) -> tuple[jax.Array, jax.Array]:
    r"""Mean and covariance $\frac{1}{N} \sum (x - m)(x - m)^\top$ of the empirical measure of `X`
    `(..., N, d)`.

    Returns `(m, S)` of shapes `(..., d)` and `(..., d, d)` (symmetrised); NaN entries give NaN
    moments (those of a failed run stay NaN). Raises `ValueError` unless `X` has shape
    `(..., N, d)` with $N, d \ge 1$.
    """
    shape = np.shape(X)
    if len(shape) < 2 or shape[-2] < 1 or shape[-1] < 1:
        raise ValueError(f"X must have shape (..., N, d) with N, d >= 1, got {tuple(shape)}")
    X = jnp.asarray(X)  # NaN allowed: moments of a failed run stay NaN
    m = X.mean(axis=-2)
    Y = X - m[..., None, :]
    S = jnp.einsum("...ni,...nj->...ij", Y, Y) / X.shape[-2]
    return m, (S + jnp.swapaxes(S, -1, -2)) / 2
