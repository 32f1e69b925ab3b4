r"""Softmax attention on a cloud through its factors: $O(N^2 (k + k_v))$ instead of $O(N^2 d)$.

The generic block pass (`gaussflow.particles.kernels.Scores`) evaluates a declared score from its
canonical form: for `gf.Softmax` ($s(x, y) = \beta \langle Q x, K y\rangle$, value
$y \mapsto W_O V y$; $Q, K$ of shape `(k, d)`, $V$ `(k_v, d)`, $W_O$ `(d, k_v)`) that is
$q_i = H x_i$ with the $d \times d$ matrix $H = \beta Q^\top K$ (transposed), scores
$s_{ij} = q_i^\top x_j$ and values $v_j = (W_O V) x_j$, so each of the $N^2$ scores and
weighted value sums costs $O(d)$. Written in the head's own dimensions,
$$\Gamma[\mu^N](x_i) = W_O\, \frac{\sum_j a_j e^{s_{ij}}\, u_j}{\sum_j a_j e^{s_{ij}}},
\qquad s_{ij} = (\beta Q x_i)^\top (K x_j), \quad u_j = V x_j,$$
the scores cost $O(k)$ and the sums $O(k_v)$ each, and $W_O$ is applied once per query: the same
sums in another order (equal up to rounding), through the same block-wise log-sum-exp passes
(`row_pass`: key blocks, causal positions, particle weights $a_j$). For MiniLM's heads
($d = 384$, $k = k_v = 32$) that is about 12 times fewer operations.

`factored_scores(field, X)` returns the score blocks (a `Scores` look-alike whose values are the
$u_j$) when `field` is a `gf.Softmax` whose factors are narrower than $d$ ($k < d$ or
$k_v < d$), else `None`; `particle_velocity` then maps the normalised sums by $W_O$.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


class FactoredScores:
    r"""Score blocks $s_{ij} = q_i^\top \kappa_j$ of a softmax head from its factors:
    queries $q = \beta X Q^\top$, keys $\kappa = X K^\top$ (`(N, k)`), values $u = X V^\top$
    (`(N, k_v)`); $W_O$ (`out`) is applied by the caller after normalisation. The interface
    of `gaussflow.particles.kernels.Scores` that `row_pass` uses (`q`, `values`, `key_const`,
    `row_const`, `query_data`, `key_data`, `logits`)."""

    def __init__(self, Q: jax.Array, K: jax.Array, V: jax.Array, W_O: jax.Array, beta: Any,
                 X: jax.Array) -> None:
        self.q = beta * (X @ Q.T)
        self.keys = X @ K.T
        self.values = X @ V.T
        self.out = W_O
        self.key_const = None
        self.row_const = None

    def query_data(self) -> tuple[jax.Array, ...]:
        """Per-query arrays of the block logits: `(q,)`."""
        return (self.q,)

    def key_data(self) -> tuple[jax.Array, ...]:
        """Per-key arrays of the block logits: `(kappa,)`."""
        return (self.keys,)

    def logits(self, qd: tuple[jax.Array, ...], kd: tuple[jax.Array, ...]) -> jax.Array:
        r"""Log-weights $q_i^\top \kappa_j$ of the query block against the key block."""
        return qd[0] @ kd[0].T


def factored_scores(field: Any, X: jax.Array) -> FactoredScores | None:
    """`FactoredScores` of `field` on the cloud `X` `(N, d)` when `field` is a `gf.Softmax`
    (exactly that class) with $k < d$ or $k_v < d$; otherwise `None` (the generic path)."""
    from ..variants.softmax import Softmax  # the variants import the particle kernels

    if type(field) is not Softmax:
        return None
    p = field.params
    Q, K, V, W_O = (jnp.asarray(p[n]) for n in ("Q", "K", "V", "W_O"))
    d = X.shape[1]
    if Q.shape[0] >= d and V.shape[0] >= d:
        return None
    return FactoredScores(Q, K, V, W_O, p["beta"], X)


__all__ = ["FactoredScores", "factored_scores"]
