r"""A Gaussian carried through every layer of a BERT-style encoder (depth as time).

`propagate(model, g0)` returns the Gaussians after each layer of a `gaussflow.blocks.Model`.
Each sub-block is a residual step $z = x + F(u)$ with $u = x$ (post-norm) or
$u = \mathrm{LN}(x)$ (pre-norm); the Gaussian of $z$ is moment-matched from

$$E z = \alpha + E F, \qquad \operatorname{Cov} z = \Sigma + C G^\top + G C^\top +
\operatorname{Cov} F(u),$$

with $C = \operatorname{Cov}(x, u)$ and $G = E[\nabla F(u)]$ (Stein's lemma:
$\operatorname{Cov}(x, F(u)) = C\, G^\top$ for jointly Gaussian $x, u$).

- **Attention** (`BertAttention`, every bias): in the mean-field limit over $\mathcal N(a, S)$
  head $h$ with query bias $b_q$ sees the keys tilted by $e^{\beta b_q^\top K_h y}$, i.e. the
  Gaussian $\mathcal N(a + \beta S K_h^\top b_q, S)$ (the key bias cancels in the softmax), and
  on it it is the plain softmax head `gf.Softmax` (its derived, exact, affine closure). So
  $\mathrm{Attn}(u) = c + J u$ is **affine**: $E F = c + J a$, $G = J$,
  $\operatorname{Cov} F = J S J^\top$; post-norm gives $(I + J)\Sigma(I + J)^\top$ exactly
  (mean-field), query bias included.
- **MLP** $F(u) = W_2 s(W_1 u + b_1) + b_2$, $h = W_1 u + b_1 \sim \mathcal N(\mu, C_h)$:
  $E F = W_2 E s(h) + b_2$, $G = W_2 \operatorname{diag}(E s'(h)) W_1$, and
  $\operatorname{Cov} s(h)$ from Mehler's formula (`activation_moments`). Exact moments of the
  step at a Gaussian input; the output is not Gaussian (moment projection).
- **Layer norm**: `gf.layer_norm_gaussian`, chosen by `layer_norm`: `"exact"` (the default: the
  exact moments of $\mathrm{LN}(x)$ at a Gaussian input, one-dimensional integrals) or a
  delta-method order `0 .. 4` (accurate for large $d$ while the feature variance concentrates,
  `variance_spread` small; where the covariance of order $\ge 2$ is not positive semi-definite,
  which happens only when it does not, the leading order is used). For pre-norm, $C = \operatorname{Cov}(x, \mathrm{LN}\,x)$
  is taken at leading order, $\Sigma P D_\gamma f_0$ ($P$ the centring projection,
  $f_0 = (v_0 + \epsilon)^{-1/2}$): an $O(1/d)$ approximation.

`mode="continuous"` instead runs each sub-block as the flow over one unit of depth of its
velocity (`gf.solve` of `BertAttention`, then of `gf.MLP`), with the layer norms as maps
(post-norm only); the discrete default is what the network computes.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy.special import eval_hermitenorm, gammaln

from ._checks import positive_int
from .blocks import Block, Model
from .field import Field
from .gaussian import Gaussian
from .layernorm import layer_norm_gaussian, taylor_coefficients
from .symbolic.layernorm import MAX_ORDER as LN_MAX_ORDER
from .network import activation
from .quadrature import gauss_hermite
from .variants import Softmax

__all__ = ["BertAttention", "attention_affine", "activation_moments", "residual_moments",
           "attention_step", "mlp_step", "layer_norm_step", "variance_spread", "step_halves", "layer_step", "propagate",
           "MODES"]

#: `propagate` modes: `"discrete"` (one residual step per sub-block, as the network computes)
#: or `"continuous"` (the flow over one unit of depth of each sub-block's velocity).
MODES = ("discrete", "continuous")


class BertAttention(Field):
    r"""A BERT self-attention layer with every bias as a mean-field velocity field.

    $\Gamma[\mu](x) = \sum_h W_O^h\, E_{y \sim \mu_h(x)}[V_h y + b_{v,h}] + b_O$, softmax
    weights $\propto e^{\beta \langle Q_h x + b_{q,h}, K_h y + b_{k,h}\rangle}$. Exact on
    Gaussians (module docstring): head $h$ is the `gf.Softmax` of $(Q_h, K_h, V_h, W_O^h, \beta)$
    under the tilted Gaussian $\mathcal N(\alpha + \beta \Sigma K_h^\top b_{q,h}, \Sigma)$.

    Parameters
    ----------
    block : Block
        The layer's weights (`gf.load_block`); the MLP and layer norms are not used.
    """

    heads: tuple
    tilts: tuple
    const: jnp.ndarray

    name = "bert_attention"
    exact = True

    def __init__(self, block: Block) -> None:
        if not isinstance(block, Block):
            raise TypeError(f"block must be a gaussflow Block (gf.load_block), got "
                            f"{type(block).__name__}")
        heads, tilts = [], []
        for h in range(block.heads):
            Qh, Kh, Vh, bq, _, _, Wo = block.head(h)
            heads.append(Softmax(Qh, Kh, Vh, Wo, beta=block.beta))
            tilts.append(jnp.asarray(block.beta * Kh.T @ bq))  # Sigma @ tilt shifts the mean
        self.heads, self.tilts = tuple(heads), tuple(tilts)
        self.const = jnp.asarray(block.W_O @ block.bv + block.bo)

    @property
    def dim(self) -> int:
        return self.heads[0].dim

    def _velocity(self, t, mean, cov, x):
        v = self.const
        for f, w in zip(self.heads, self.tilts):
            v = v + f._velocity(t, mean + cov @ w, cov, x)
        return v

    def _closure(self, t, mean, cov):
        dm, J = self.const, jnp.zeros((self.dim, self.dim))
        for f, w in zip(self.heads, self.tilts):
            a = mean + cov @ w
            dm_h, J_h = f._closure(t, a, cov)  # Gamma_h(x) = dm_h + J_h (x - a)
            dm, J = dm + dm_h + J_h @ (mean - a), J + J_h
        return dm, J


def attention_affine(field: BertAttention, g: Gaussian) -> tuple[np.ndarray, np.ndarray]:
    r"""`(J, c)` with $\Gamma[g](x) = c + J x$: the affine mean-field attention under `g`.

    Raises
    ------
    TypeError
        If `field` is not a `BertAttention` or `g` not a `gf.Gaussian`.
    """
    if not isinstance(field, BertAttention):
        raise TypeError(f"field must be a BertAttention, got {type(field).__name__}")
    field._check_state(g)
    dm, J = field._closure(0.0, g.mean, g.cov)
    J = np.asarray(J)
    return J, np.asarray(dm) - J @ np.asarray(g.mean)


def activation_moments(mu: np.ndarray, C: np.ndarray, name: str = "gelu", terms: int = 40,
                       nodes: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""$E s(h)$, $E s'(h)$ and $\operatorname{Cov} s(h)$ for $h \sim \mathcal N(\mu, C)$, entrywise $s$.

    With $h_i = \mu_i + \sigma_i \xi_i$ and the normalised Hermite coefficients
    $c_{i,n} = E[s(\mu_i + \sigma_i \xi)\, \mathrm{He}_n(\xi)] / \sqrt{n!}$ (Gauss–Hermite,
    `nodes` points), Mehler's formula gives
    $E[s(h_i) s(h_j)] = \sum_n c_{i,n} c_{j,n} \rho_{ij}^n$, $\rho$ the correlation, so
    $\operatorname{Cov} s(h) = \sum_{n=1}^{\mathrm{terms}} (c_n c_n^\top) \circ \rho^{\circ n}$
    off the diagonal; the diagonal is the exact variance $E s^2 - (E s)^2$ (the truncation only
    drops positive terms, so the result stays positive semi-definite). By Stein's lemma
    $E s'(h_i) = c_{i,1} / \sigma_i$ (and $s'(\mu_i)$ where $\sigma_i = 0$).

    Parameters
    ----------
    mu : np.ndarray
        Means, shape `(m,)`.
    C : np.ndarray
        Covariance, shape `(m, m)`.
    name : str
        The activation (`gaussflow.symbolic.stein.ACTIVATIONS`).
    terms : int
        Hermite terms kept (the error is measured in `tests/test_model.py`).
    nodes : int
        Gauss–Hermite nodes of the coefficients (at most 350).

    Returns
    -------
    tuple of np.ndarray
        `(E s(h), E s'(h), Cov s(h))`.
    """
    terms, nodes = positive_int("terms", terms), positive_int("nodes", nodes)
    if nodes > 350:
        raise ValueError(f"nodes must be at most 350 (NumPy's nodes overflow beyond), got {nodes}")
    s, ds = activation(name)
    mu = np.asarray(mu, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    sig = np.sqrt(np.maximum(np.diag(C), 0.0))
    u, w = gauss_hermite(nodes)
    vals = s(mu[:, None] + sig[:, None] * u[None, :])  # (m, nodes)
    n = np.arange(terms + 1)
    He = eval_hermitenorm(n[None, :], u[:, None]) * np.exp(-0.5 * gammaln(n + 1))[None, :]
    c = vals @ (w[:, None] * He)  # (m, terms + 1): c[:, 0] = E s(h)
    mean = c[:, 0]
    var = np.maximum(vals ** 2 @ w - mean ** 2, 0.0)
    pos = sig > 0
    dmean = np.where(pos, c[:, 1] / np.where(pos, sig, 1.0), ds(mu) * np.ones_like(mu))
    inv = np.where(pos, 1.0 / np.where(pos, sig, 1.0), 0.0)
    rho = np.clip(C * inv[:, None] * inv[None, :], -1.0, 1.0)
    cov = np.zeros_like(C)
    power = np.ones_like(C)
    for k in range(1, terms + 1):
        power = power * rho
        cov += np.outer(c[:, k], c[:, k]) * power
    cov[np.diag_indices_from(cov)] = var
    return mean, dmean, (cov + cov.T) / 2


def residual_moments(g: Gaussian, C: np.ndarray, mean_F: np.ndarray, G: np.ndarray,
                     cov_F: np.ndarray) -> Gaussian:
    r"""The moment-matched Gaussian of $z = x + F(u)$, $x \sim$ `g`: mean $\alpha + E F$,
    covariance $\Sigma + C G^\top + G C^\top + \operatorname{Cov} F$ (module docstring)."""
    S = np.asarray(g.cov)
    CG = np.asarray(C) @ np.asarray(G).T
    cov = S + CG + CG.T + np.asarray(cov_F)
    mean = np.asarray(g.mean) + np.asarray(mean_F)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise FloatingPointError("residual step: non-finite moments (the Gaussian escaped)")
    return Gaussian(mean, (cov + cov.T) / 2)


def variance_spread(g: Gaussian) -> float:
    r"""$\operatorname{sd}(V) / E V$ of the feature variance $V = |P x|^2 / d$, $x \sim$ `g`.

    Layer norm is close to affine on `g` (and `gf.layer_norm_gaussian` accurate) only while this
    is small; $\operatorname{Var} V = (2 \operatorname{tr} S^2 + 4 a^\top S a)/d^2$ with
    $a = P\alpha$, $S = P \Sigma P$ (`gaussflow.layernorm`).
    """
    d = g.dim
    P = np.eye(d) - 1.0 / d
    a, S = P @ np.asarray(g.mean), P @ np.asarray(g.cov) @ P
    v0 = (np.trace(S) + a @ a) / d
    return float(np.sqrt(max(2 * np.sum(S * S) + 4 * a @ S @ a, 0.0)) / d / v0) if v0 > 0 else 0.0


def layer_norm_step(g: Gaussian, block: Block, which: int, layer_norm: int | str = "exact"
                    ) -> tuple[Gaussian, np.ndarray]:
    r"""`(Gaussian of LN(x), gamma)` for $x \sim$ `g` and the block's layer norm `which`
    (1 or 2), by `gf.layer_norm_gaussian` with `order=layer_norm`; a delta-method order whose
    covariance is not positive semi-definite ($V$ does not concentrate) falls back to order 0."""
    gamma, beta = (block.ln1_gamma, block.ln1_beta) if which == 1 else (block.ln2_gamma,
                                                                         block.ln2_beta)
    try:
        return layer_norm_gaussian(g, gamma, beta, eps=block.eps, order=layer_norm), gamma
    except ValueError:  # the corrected covariance is not PSD: V does not concentrate
        if layer_norm == "exact":
            raise
        return layer_norm_gaussian(g, gamma, beta, eps=block.eps, order=0), gamma


def _check_layer_norm(layer_norm):
    if layer_norm != "exact" and (isinstance(layer_norm, bool) or not isinstance(layer_norm, int)
                                  or not 0 <= layer_norm <= LN_MAX_ORDER):
        raise ValueError(f"layer_norm must be a delta-method order 0..{LN_MAX_ORDER} or 'exact', "
                         f"got {layer_norm!r}")


def _pre_norm(g, block, which, layer_norm="exact"):
    r"""`(g_u, C)`: the Gaussian of $u = \mathrm{LN}(x)$ and $\operatorname{Cov}(x, u)$ at
    leading order."""
    gu, gamma = layer_norm_step(g, block, which, layer_norm)
    d = g.dim
    P = np.eye(d) - 1.0 / d
    a, S = np.asarray(g.mean), np.asarray(g.cov)
    v0 = (np.trace(P @ S @ P) + float((P @ a) @ (P @ a))) / d
    (f0, _, _), _ = taylor_coefficients(v0, block.eps)
    return gu, S @ P * gamma[None, :] * f0


def attention_step(block: Block, g: Gaussian, C: np.ndarray | None = None,
                   g_u: Gaussian | None = None) -> Gaussian:
    r"""$x + \mathrm{Attn}(u)$ moment-matched (exact in the mean-field limit when $u = x$).

    `g` is the Gaussian of $x$; `g_u` that of $u$ and `C` $= \operatorname{Cov}(x, u)$
    (default $u = x$).
    """
    g_u = g if g_u is None else g_u
    J, c = attention_affine(BertAttention(block), g_u)
    C = np.asarray(g.cov) if C is None else C
    a_u, S_u = np.asarray(g_u.mean), np.asarray(g_u.cov)
    return residual_moments(g, C, c + J @ a_u, J, J @ S_u @ J.T)


def mlp_step(block: Block, g: Gaussian, C: np.ndarray | None = None,
             g_u: Gaussian | None = None, terms: int = 40) -> Gaussian:
    r"""$x + W_2 s(W_1 u + b_1) + b_2$ moment-matched (`activation_moments`); arguments as
    `attention_step`."""
    g_u = g if g_u is None else g_u
    C = np.asarray(g.cov) if C is None else C
    a_u, S_u = np.asarray(g_u.mean), np.asarray(g_u.cov)
    W1, W2 = block.W1, block.W2
    Es, Eds, Cs = activation_moments(W1 @ a_u + block.b1, W1 @ S_u @ W1.T, block.activation,
                                     terms=terms)
    return residual_moments(g, C, W2 @ Es + block.b2, (W2 * Eds[None, :]) @ W1,
                            W2 @ Cs @ W2.T)


def step_halves(block: Block, g: Gaussian, placement: str = "post", terms: int = 40,
                trace: list | None = None, layer_norm: int | str = "exact"
                ) -> tuple[Gaussian, Gaussian]:
    r"""One encoder layer on a Gaussian (discrete mode), with its midpoint: `(h, out)`.

    `h` is the Gaussian after the attention sub-block (post-norm: after $\mathrm{LN}_1$), `out`
    after the whole layer, as `gaussflow.network.forward_halves` on tokens. Appends to `trace`
    the `variance_spread` of the inputs of the two layer norms (post-norm); `layer_norm` as in
    `propagate`.
    """
    if placement == "post":
        u = attention_step(block, g)
        h, _ = layer_norm_step(u, block, 1, layer_norm)
        z = mlp_step(block, h, terms=terms)
        if trace is not None:
            trace.append((variance_spread(u), variance_spread(z)))
        return h, layer_norm_step(z, block, 2, layer_norm)[0]
    gu, C = _pre_norm(g, block, 1, layer_norm)
    h = attention_step(block, g, C, gu)
    gu, C = _pre_norm(h, block, 2, layer_norm)
    return h, mlp_step(block, h, C, gu, terms=terms)


def layer_step(block: Block, g: Gaussian, placement: str = "post", mode: str = "discrete",
               terms: int = 40, trace: list | None = None, layer_norm: int | str = "exact") -> Gaussian:
    r"""One encoder layer on a Gaussian (see `propagate`); appends to `trace` the
    `variance_spread` of the inputs of its two layer norms (discrete post-norm)."""
    if mode == "continuous":
        from .integrate import solve
        from .variants import MLP

        if placement != "post":
            raise ValueError("mode='continuous' supports placement='post' only (a pre-norm "
                             "branch F(LN x) is not a velocity field of x); use mode='discrete'")
        h = solve(BertAttention(block), g, 1.0).final
        h, _ = layer_norm_step(h, block, 1, layer_norm)
        h = solve(MLP(block.W1, block.b1, block.W2, block.b2, block.activation), h, 1.0).final
        return layer_norm_step(h, block, 2, layer_norm)[0]
    return step_halves(block, g, placement, terms, trace, layer_norm)[1]


def propagate(model: Model, g0: Gaussian, mode: str = "discrete", terms: int = 40,
              trace: list | None = None, layer_norm: int | str = "exact") -> list[Gaussian]:
    r"""Carry a Gaussian through every layer of `model`: the Gaussian after each layer.

    Parameters
    ----------
    model : Model
        The layers and the layer-norm placement (`gf.load_model`).
    g0 : Gaussian
        The input tokens' Gaussian $\mathcal N(\alpha_0, \Sigma_0)$ in dimension $d$.
    mode : str
        `"discrete"` (default: each sub-block one residual step, as the network computes it;
        module docstring) or `"continuous"` (each sub-block the flow of its velocity over one
        unit of depth, `gf.solve`; post-norm only).
    terms : int
        Hermite terms of the MLP covariance (`activation_moments`).
    trace : list, optional
        Receives per layer `(spread LN1, spread LN2)`, the `variance_spread` of the Gaussians
        entering its layer norms (discrete post-norm only).
    layer_norm : int or str
        The layer-norm map (`gf.layer_norm_gaussian`'s `order`): `"exact"` (default: exact
        moments at a Gaussian input; one eigendecomposition and a quadrature per layer norm,
        about 2.5 s at d = 384) or a delta-method order `0 .. 4` (faster, accurate while the
        feature variance concentrates).

    Returns
    -------
    list of Gaussian
        $L + 1$ Gaussians: `g0` and the state after each layer.

    Raises
    ------
    TypeError
        If `model` is not a `Model` or `g0` not a `gf.Gaussian`.
    ValueError
        For a `g0` of another dimension, an unknown `mode` or `layer_norm`, or `"continuous"`
        with pre-norm.
    FloatingPointError
        If the moments stop being finite.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a gaussflow Model (gf.load_model), got "
                        f"{type(model).__name__}")
    if not isinstance(g0, Gaussian):
        raise TypeError(f"g0 must be a gf.Gaussian, got {type(g0).__name__}")
    if g0.dim != model.d:
        raise ValueError(f"g0 has dimension {g0.dim} but the model's hidden size is {model.d}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "continuous" and model.placement != "post":
        raise ValueError("mode='continuous' supports placement='post' only; use mode='discrete'")
    positive_int("terms", terms)
    _check_layer_norm(layer_norm)
    out = [g0]
    for b in model.blocks:
        out.append(layer_step(b, out[-1], model.placement, mode, terms, trace, layer_norm))
    return out
