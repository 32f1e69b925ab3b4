r"""How much of the closure's error against $N$ tokens is finite-$N$ sampling noise.

The closure (`gaussflow.propagate`) starts from the cloud's own empirical mean and covariance and
is deterministic; the tokens' statistics after a layer are not: two clouds with the *same*
empirical moments at the input still differ after a nonlinear layer (the softmax averages over
$N$ keys, the MLP and the layer norms see $N$ points). That spread is the **sampling floor**.

`matched_twin(X, Y)` moves an independent cloud `Y` (same size, same Gaussian) onto `X`'s exact
empirical mean and covariance,

$$Y' = \bar x + (Y - \bar y)\, \widehat\Sigma_Y^{-1/2} \widehat\Sigma_X^{1/2}.$$

For Gaussian clouds this is *exactly* a draw of the cloud conditioned on
its empirical moments (the moments are sufficient, so given them the cloud is uniform on the set
of clouds having them, which is what the whitened $Y$ is, independently of $\widehat\Sigma_Y$).
So, after layer $l$, `X` and `Y'` are two independent draws of the tokens given the closure's
starting point, and
$\|\widehat\Sigma_X - \widehat\Sigma_{Y'}\|_F / (\sqrt 2\, \|\widehat\Sigma_X\|_F)$
is the relative covariance noise of one cloud (`cov_floor`; the same for
the mean, `mean_floor`). With closure error $e$ and floor $f$, $\sqrt{e^2 - f^2}$ estimates the
closure's own error (the bias against the average cloud), and an $e$ falling like $N^{-1/2}$ with
$N$ is sampling, a flat one the closure's own (`noise_scan`). An unmatched `Y` (`free`) also
carries the input's sampling error ($\approx\sqrt{(d + 1)/N}$ for the covariance): it is not the
noise of the comparison made, and is reported for contrast only.
"""

from __future__ import annotations

import numpy as np

from . import particles
from .blocks import Model
from .gaussian import Gaussian
from .layernorm import layer_norm
from .network import attention_forward, forward_halves, layer_forward, mlp_forward
from .propagate import attention_step, layer_norm_step, mlp_step, step_halves

__all__ = ["empirical", "relative_errors", "matched_twin", "noise_scan", "noise_table",
           "sub_block_split", "split_table", "SCAN_METRICS", "SPLIT_STAGES"]

#: Per stage of `noise_scan`: closure errors, matched floors, unmatched floors, own error.
SCAN_METRICS = ("cov_err", "cov_floor", "cov_own", "cov_free", "mean_err", "mean_floor")


def empirical(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(mean, cov)` of the rows of `X` (the covariance normalised by $N$)."""
    X = np.asarray(X, dtype=np.float64)
    m = X.mean(0)
    D = X - m
    return m, D.T @ D / len(X)


def relative_errors(m: np.ndarray, S: np.ndarray, m_ref: np.ndarray, S_ref: np.ndarray
                    ) -> tuple[float, float]:
    r"""`(mean error, covariance error)` of `(m, S)` against the reference moments.

    $|m - \bar x| / \sqrt{|\bar x|^2 + \operatorname{tr}\widehat\Sigma}$ (relative to the
    reference's root-mean-square norm) and $\|S - \widehat\Sigma\|_F / \|\widehat\Sigma\|_F$.
    """
    m_ref, S_ref = np.asarray(m_ref), np.asarray(S_ref)
    return (float(np.linalg.norm(np.asarray(m) - m_ref) / np.sqrt(m_ref @ m_ref + np.trace(S_ref))),
            float(np.linalg.norm(np.asarray(S) - S_ref) / np.linalg.norm(S_ref)))


def _sqrt_pair(S, rtol=1e-10):
    w, U = np.linalg.eigh(S)
    keep = w > rtol * max(w.max(), 0.0)
    r = np.where(keep, np.sqrt(np.where(keep, w, 1.0)), 0.0)
    return (U * r) @ U.T, (U * np.where(keep, 1.0 / np.where(keep, r, 1.0), 0.0)) @ U.T


def matched_twin(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    r"""`Y` moved onto `X`'s empirical mean and covariance (module docstring).

    Parameters
    ----------
    X : np.ndarray
        The cloud, `(N, d)`.
    Y : np.ndarray
        An independent cloud of the same shape from the same law; $N > d$ unless the law is
        degenerate (its covariance is inverted on its range).

    Returns
    -------
    np.ndarray
        $\bar x + (Y - \bar y)\,\widehat\Sigma_Y^{-1/2} \widehat\Sigma_X^{1/2}$, `(N, d)`:
        its empirical mean and covariance are `X`'s.

    Raises
    ------
    ValueError
        For clouds of different shapes, or when `Y`'s covariance has a smaller rank than `X`'s.
    """
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or X.shape != Y.shape:
        raise ValueError(f"X and Y must be (N, d) clouds of one shape, got {X.shape}, {Y.shape}")
    mx, Sx = empirical(X)
    my, Sy = empirical(Y)
    if np.linalg.matrix_rank(Sy) < np.linalg.matrix_rank(Sx):
        raise ValueError("Y's covariance has a smaller rank than X's (N <= d?): it cannot be "
                         "matched")
    root_x, _ = _sqrt_pair(Sx)
    _, inv_root_y = _sqrt_pair(Sy)
    return mx + (Y - my) @ inv_root_y @ root_x


def noise_scan(model: Model, g0: Gaussian, ns: tuple, layers: int = 2, seed: int = 0,
               terms: int = 40) -> dict[str, np.ndarray]:
    r"""The closure's error and the sampling floor against the number of tokens, per half-layer.

    For each $N$ in `ns`: a cloud `X` of $N$ draws from `g0`, its `matched_twin` and an unmatched
    twin go through the first `layers` layers (`gaussflow.network.forward_halves`); the closure
    starts from `X`'s moments (`gaussflow.propagate.step_halves`). Stages: after each layer's
    attention sub-block (post-norm: after $\mathrm{LN}_1$) and after its MLP sub-block.

    Parameters
    ----------
    model : Model
        The layers (`gf.load_model`).
    g0 : Gaussian
        The law of the input tokens.
    ns : tuple of int
        Token counts (each larger than $d$).
    layers : int
        Layers scanned (from the first).
    seed : int
        Seed of the clouds.
    terms : int
        Hermite terms of the MLP covariance.

    Returns
    -------
    dict of str to np.ndarray
        `"n"`, `"stages"` (labels) and each of `SCAN_METRICS`, shape `(len(ns), 2 * layers)`:
        `cov_err` / `mean_err` the closure's errors against `X`, `cov_floor` / `mean_floor` the
        matched twins' difference over $\sqrt 2$, `cov_own` $= \sqrt{\max(e^2 - f^2, 0)}$,
        `cov_free` the unmatched twin's covariance difference over $\sqrt 2$.

    Raises
    ------
    ValueError
        For `layers` outside `1..len(model)`, or an $N \le d$.
    """
    if not 1 <= layers <= len(model):
        raise ValueError(f"layers must be in 1..{len(model)}, got {layers!r}")
    if any(int(n) <= model.d for n in ns):
        raise ValueError(f"every N must exceed d = {model.d}, got {ns}")
    stages = [f"layer {l + 1}, after {part}" for l in range(layers)
              for part in ("attention", "MLP")]
    out = {k: np.full((len(ns), len(stages)), np.nan) for k in SCAN_METRICS}
    for i, n in enumerate(ns):
        X = particles.sample(g0, int(n), seed=seed + 2 * i)
        free = particles.sample(g0, int(n), seed=seed + 2 * i + 1)
        clouds = [X, matched_twin(X, free), free]
        m0, S0 = empirical(X)
        g = Gaussian(m0, S0)
        for l in range(layers):
            block = model.blocks[l]
            halves = [forward_halves(block, Z, model.placement) for Z in clouds]
            closure = step_halves(block, g, model.placement, terms)
            for j in range(2):
                k = 2 * l + j
                x, twin, fr = (empirical(h[j]) for h in halves)
                me, ce = relative_errors(closure[j].mean, closure[j].cov, *x)
                mf, cf = relative_errors(*twin, *x)
                mf, cf = mf / np.sqrt(2), cf / np.sqrt(2)  # the noise of one cloud
                out["mean_err"][i, k], out["cov_err"][i, k] = me, ce
                out["mean_floor"][i, k], out["cov_floor"][i, k] = mf, cf
                out["cov_own"][i, k] = np.sqrt(max(ce ** 2 - cf ** 2, 0.0))
                out["cov_free"][i, k] = relative_errors(*fr, *x)[1] / np.sqrt(2)
            clouds = [h[1] for h in halves]
            g = closure[1]
    return {"n": np.asarray(ns, dtype=int), "stages": stages, **out}


def noise_table(scans: dict[str, dict[str, np.ndarray]]) -> str:
    """Markdown table of `noise_scan` results by initial cloud name: one row per $N$ and stage."""
    rows = ["| initial cloud | N | stage | cov err | cov floor | own sqrt(err² - floor²) | "
            "unmatched floor | mean err | mean floor |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s in scans.items():
        for k, stage in enumerate(s["stages"]):
            for i, n in enumerate(s["n"]):
                rows.append(f"| {name} | {n} | {stage} | {s['cov_err'][i, k]:.3f} | "
                            f"{s['cov_floor'][i, k]:.3f} | {s['cov_own'][i, k]:.3f} | "
                            f"{s['cov_free'][i, k]:.3f} | {s['mean_err'][i, k]:.1e} | "
                            f"{s['mean_floor'][i, k]:.1e} |")
    return "\n".join(rows)


#: The sub-blocks of a post-norm layer, in order, as `sub_block_split` measures them.
SPLIT_STAGES = ("attention sum x + Attn x", "LN1", "MLP sum h + MLP h", "LN2")


def _stage_maps(block):
    """Per stage of `SPLIT_STAGES`: (tokens -> tokens, Gaussian -> closure Gaussian(s))."""
    ln = [lambda X, w=w: layer_norm(X, getattr(block, f"ln{w}_gamma"), getattr(block, f"ln{w}_beta"),
                                    block.eps) for w in (1, 2)]
    return [
        (lambda X: X + attention_forward(block, X), lambda g, o: attention_step(block, g)),
        (ln[0], lambda g, o: layer_norm_step(g, block, 1, o)[0]),
        (lambda X: X + mlp_forward(block, X), lambda g, o: mlp_step(block, g)),
        (ln[1], lambda g, o: layer_norm_step(g, block, 2, o)[0]),
    ]


def sub_block_split(model: Model, g0: Gaussian, ns: tuple, layer: int = 0, seed: int = 0,
                    layer_norm: int | str = 2) -> dict[str, np.ndarray]:
    r"""Each sub-block's own error: the closure of one sub-block started from the tokens' own
    moments at its input, against the tokens after it (post-norm layer `layer`).

    For each $N$: a cloud `X` of $N$ draws from `g0` goes through the layers before `layer`
    and then through the stages `SPLIT_STAGES` of `layer` (`gaussflow.network`); at each stage
    the closure map (`gaussflow.propagate`: `attention_step`, `layer_norm_step`, `mlp_step`)
    is applied to the Gaussian with the cloud's empirical mean and covariance at the stage's
    input, and compared with the cloud's moments at its output. The floor: a `matched_twin` of
    the stage's input cloud (an independent cloud from `g0` pushed to the same stage, then moved
    onto the input's moments) through the same stage. At the layer norms the exact map
    (`order="exact"`) is measured too: an error of the exact map above the floor comes from the
    cloud not being Gaussian at the layer norm's input, not from the map's approximation.

    Parameters
    ----------
    model : Model
        A post-norm model (`gf.load_model`).
    g0 : Gaussian
        The law of the input tokens.
    ns : tuple of int
        Token counts (each larger than $d$).
    layer : int
        The layer split (0-based).
    seed : int
        Seed of the clouds.
    layer_norm : int or str
        The closure's layer-norm map (as in `gf.propagate`).

    Returns
    -------
    dict of str to np.ndarray
        `"n"`, `"stages"` and, shape `(len(ns), 4)`: `cov_err`, `cov_floor`, `cov_own`,
        `mean_err`, `mean_floor`, `cov_err_exact` and `mean_err_exact` (NaN but at the layer
        norms).

    Raises
    ------
    ValueError
        For a pre-norm model, `layer` outside the model, or an $N \le d$.
    """
    if model.placement != "post":
        raise ValueError("sub_block_split measures post-norm layers; got a pre-norm model")
    if not 0 <= layer < len(model):
        raise ValueError(f"layer must be in 0..{len(model) - 1}, got {layer!r}")
    if any(int(n) <= model.d for n in ns):
        raise ValueError(f"every N must exceed d = {model.d}, got {ns}")
    keys = ("cov_err", "cov_floor", "cov_own", "mean_err", "mean_floor", "cov_err_exact",
            "mean_err_exact")
    out = {k: np.full((len(ns), len(SPLIT_STAGES)), np.nan) for k in keys}
    stages = _stage_maps(model.blocks[layer])
    for i, n in enumerate(ns):
        X = particles.sample(g0, int(n), seed=seed + 2 * i)
        Y = particles.sample(g0, int(n), seed=seed + 2 * i + 1)
        for b in model.blocks[:layer]:
            X, Y = layer_forward(b, X, "post"), layer_forward(b, Y, "post")
        for k, (net, closure) in enumerate(stages):
            m_in, S_in = empirical(X)
            twin = matched_twin(X, Y)
            X_out, twin_out = net(X), net(twin)
            x = empirical(X_out)
            g_in = Gaussian(m_in, S_in)
            g = closure(g_in, layer_norm)
            out["mean_err"][i, k], out["cov_err"][i, k] = relative_errors(g.mean, g.cov, *x)
            mf, cf = relative_errors(*empirical(twin_out), *x)
            out["mean_floor"][i, k], out["cov_floor"][i, k] = mf / np.sqrt(2), cf / np.sqrt(2)
            out["cov_own"][i, k] = np.sqrt(max(out["cov_err"][i, k] ** 2
                                               - out["cov_floor"][i, k] ** 2, 0.0))
            if k in (1, 3):
                ge = closure(g_in, "exact")
                out["mean_err_exact"][i, k], out["cov_err_exact"][i, k] = relative_errors(
                    ge.mean, ge.cov, *x)
            X, Y = X_out, net(Y)
    return {"n": np.asarray(ns, dtype=int), "stages": list(SPLIT_STAGES), "layer_norm": layer_norm,
            **out}


def split_table(splits: dict[str, dict[str, np.ndarray]]) -> str:
    """Markdown table of `sub_block_split` results by initial cloud name."""
    orders = {str(s.get("layer_norm", 2)) for s in splits.values()}
    rows = [f"| initial cloud | N | stage | cov err (LN order {', '.join(sorted(orders))}) | "
            "cov err, exact LN | cov floor | own sqrt(err² - floor²) | mean err | mean floor |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, s in splits.items():
        for k, stage in enumerate(s["stages"]):
            for i, n in enumerate(s["n"]):
                ex = s["cov_err_exact"][i, k]
                rows.append(f"| {name} | {n} | {stage} | {s['cov_err'][i, k]:.3f} | "
                            + ("–" if np.isnan(ex) else f"{ex:.3f}")
                            + f" | {s['cov_floor'][i, k]:.3f} | {s['cov_own'][i, k]:.3f} | "
                            f"{s['mean_err'][i, k]:.1e} | {s['mean_floor'][i, k]:.1e} |")
    return "\n".join(rows)
