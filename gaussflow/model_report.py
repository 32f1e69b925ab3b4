r"""A whole pretrained encoder predicted layer by layer: Gaussian closure against the network.

`compare_model(model, clouds)` runs each initial cloud of $N$ tokens through the real forward pass
(`gaussflow.network.forward`) and carries the cloud's own empirical Gaussian through the same
layers (`gaussflow.propagate.propagate`), so the gap between the two is the closure's error alone
(no initial sampling error). Per layer it records

- `mean_err`: $|\alpha_c - \bar x| / \sqrt{|\bar x|^2 + \operatorname{tr}\widehat\Sigma}$ (relative
  to the tokens' root-mean-square norm; the mean alone may be near zero);
- `cov_err`: $\|\Sigma_c - \widehat\Sigma\|_F / \|\widehat\Sigma\|_F$;
- `mean_floor`, `cov_floor` (with `twins`): the **sampling floor**, the same two errors between
  the tokens and a second cloud with the same empirical input moments
  (`gaussflow.model_noise.matched_twin`) through the same layers, over $\sqrt 2$: the noise of
  one cloud's statistics that the closure cannot follow (NaN without twins);
- `rank`: the effective rank (`gaussflow.theory.effective_rank`) of tokens and closure, and
  `top`: their top normalised eigenvalues (anisotropy);
- `cos`: the mean cosine similarity between tokens (`gaussflow.depth.mean_cosine`), of the tokens
  and of $N$ draws from the closure's Gaussian;
- `w2` and `w2_floor`: the exact $W_2$ (`gaussflow.particles.convergence.wasserstein2`, POT) between
  (a subsample of) the tokens and as many draws from their moment-matched Gaussian, and between two
  independent such draws; `w2 / w2_floor` near 1 means the cloud is as Gaussian as $N$ samples
  can tell, far above 1 that the Gaussian closure stops describing it;
- `spread`: the largest `gaussflow.propagate.variance_spread` of the closure's Gaussians entering
  the layer's two layer norms (0 for the input; layer norm is near affine, and its Gaussian map
  accurate, only while it is small).

`whole_model` is the reproduction (`gaussflow reproduce --only model`,
`examples/whole_model.py`): MiniLM (`gaussflow.minilm.minilm_folder`) from $N(0, s^2 I)$ clouds and
from the Gaussian of its input embeddings, or with `quick=True` a random small checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable

import numpy as np

from . import particles, theory
from .blocks import Model, load_model
from .depth import mean_cosine
from .minilm import embedding_gaussian, minilm_folder
from .gaussian import Gaussian
from .model_noise import (empirical, matched_twin, noise_scan, noise_table, relative_errors,
                          split_table, sub_block_split)
from .network import forward
from .particles.convergence import wasserstein2
from .propagate import propagate
from .weights import write_random_bert

__all__ = ["ModelReport", "compare_model", "initial_clouds", "plot_model", "whole_model",
           "QUICK", "FULL", "N_TOP"]

N_TOP = 3
#: Settings of `whole_model`: tokens, token scales, tokens used for $W_2$; the sampling-floor
#: scan (`gaussflow.model_noise.noise_scan`, from these scales and the embeddings): token counts
#: and layers.
FULL = {"n_tokens": 1024, "scales": (0.05, 0.2, 1.0), "n_w2": 512,
        "scan_ns": (512, 1024, 2048, 4096), "scan_scales": (0.2,), "scan_layers": 2,
        "split_ns": (1024, 4096)}
QUICK = {"n_tokens": 256, "scales": (0.1, 1.0), "n_w2": 256,
         "scan_ns": (64, 256), "scan_scales": (1.0,), "scan_layers": 2, "split_ns": (256,)}
METRICS = ("spread", "mean_err", "cov_err", "mean_floor", "cov_floor", "rank_tokens", "rank_closure", "top_tokens", "top_closure",
           "cos_tokens", "cos_closure", "w2", "w2_floor")


@dataclass
class ModelReport:
    """Per initial cloud (by name) and per layer ($0..L$), the metrics of the module docstring.

    `runs[name][metric]` is an array over layers (`top_*`: shape `(L + 1, N_TOP)`); `info` holds
    the model's description, the settings and wall times.
    """

    runs: dict[str, dict[str, np.ndarray]]
    info: dict[str, Any] = dc_field(default_factory=dict)

    def table(self) -> str:
        """The Markdown table: one row per cloud and layer (layer 0 = the input)."""
        head = ("| initial cloud | layer | mean err / floor | cov err / floor | "
                "eff. rank tokens / closure | top eigenvalue tokens / closure | "
                "mean cos tokens / closure | W2 to Gaussian / floor | sd V / E V |\n"
                "|---|---|---|---|---|---|---|---|---|")
        rows = [head]
        for name, r in self.runs.items():
            for l in range(len(r["cov_err"])):
                rows.append(
                    f"| {name} | {l} | {r['mean_err'][l]:.1e} / {r['mean_floor'][l]:.1e} | "
                    f"{r['cov_err'][l]:.2f} / {r['cov_floor'][l]:.2f} | "
                    f"{r['rank_tokens'][l]:.1f} / {r['rank_closure'][l]:.1f} | "
                    f"{r['top_tokens'][l][0]:.3f} / {r['top_closure'][l][0]:.3f} | "
                    f"{r['cos_tokens'][l]:.3f} / {r['cos_closure'][l]:.3f} | "
                    f"{r['w2'][l]:.3g} / {r['w2_floor'][l]:.3g} | {r['spread'][l]:.2g} |")
        return "\n".join(rows)

    def to_dict(self) -> dict:
        """JSON-ready: `runs` as lists, and `info`."""
        return {"runs": {k: {m: np.asarray(v).tolist() for m, v in r.items()}
                         for k, r in self.runs.items()}, "info": self.info}


def compare_model(model: Model, clouds: dict[str, np.ndarray], mode: str = "discrete",
                  n_w2: int = 1024, seed: int = 0, twins: dict[str, np.ndarray] | None = None,
                  log: Callable[[str], Any] = lambda s: None) -> ModelReport:
    r"""The closure against the network, layer by layer, for each initial cloud.

    Parameters
    ----------
    model : Model
        The layers (`gf.load_model`).
    clouds : dict of str to np.ndarray
        Initial tokens by name, each `(N, d)` with $N \ge 2$.
    mode : str
        `propagate`'s mode.
    n_w2 : int
        Tokens used for the $W_2$ distances (the first `n_w2`; at least 2).
    seed : int
        Seed of the Gaussian draws.
    twins : dict of str to np.ndarray, optional
        Per cloud name, an independent cloud of the same shape from the same law (Gaussian):
        moved onto the cloud's empirical moments (`gaussflow.model_noise.matched_twin`), it gives
        the sampling floor.
    log : callable
        Called with a progress line per cloud.

    Returns
    -------
    ModelReport
        The metrics (module docstring).

    Raises
    ------
    TypeError
        If `model` is not a `Model`.
    ValueError
        For no clouds, a cloud (or twin) of the wrong shape, or `n_w2 < 2`.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a gaussflow Model (gf.load_model), got "
                        f"{type(model).__name__}")
    if not isinstance(clouds, dict) or not clouds:
        raise ValueError("clouds must be a non-empty dict {name: tokens (N, d)}")
    for name, X in clouds.items():
        if np.ndim(X) != 2 or np.shape(X)[1] != model.d or np.shape(X)[0] < 2:
            raise ValueError(f"clouds[{name!r}] must have shape (N, {model.d}) with N >= 2, "
                             f"got {np.shape(X)}")
    if isinstance(n_w2, bool) or not isinstance(n_w2, (int, np.integer)) or n_w2 < 2:
        raise ValueError(f"n_w2 must be an integer >= 2, got {n_w2!r}")
    twins = {} if twins is None else twins
    for name, Y in twins.items():
        if name not in clouds or np.shape(Y) != np.shape(clouds[name]):
            raise ValueError(f"twins[{name!r}] must match a cloud's name and shape")
    runs, seconds = {}, {}
    for name, X in clouds.items():
        t = time.perf_counter()
        X = np.asarray(X, dtype=np.float64)
        xs = forward(model, X)
        t_net = time.perf_counter() - t
        ys = (forward(model, matched_twin(X, twins[name])) if name in twins
              else [None] * len(xs))
        m0, S0 = empirical(X)
        spreads: list = []
        gs = propagate(model, Gaussian(m0, S0), mode=mode, trace=spreads)
        spreads = [0.0] + [max(p) for p in spreads] if spreads else [np.nan] * len(gs)
        t_closure = time.perf_counter() - t - t_net
        r = {k: [] for k in METRICS}
        for l, (Y, g, T) in enumerate(zip(xs, gs, ys)):
            m, S = empirical(Y)
            mc, Sc = np.asarray(g.mean), np.asarray(g.cov)
            r["spread"].append(spreads[l])
            errs = relative_errors(mc, Sc, m, S)
            floors = (np.array(relative_errors(*empirical(T), m, S)) / np.sqrt(2) if T is not None
                      else (np.nan, np.nan))
            for k, key in enumerate(("mean", "cov")):
                r[key + "_err"].append(errs[k])
                r[key + "_floor"].append(floors[k])
            r["rank_tokens"].append(float(theory.effective_rank(S)))
            r["rank_closure"].append(float(theory.effective_rank(Sc)))
            r["top_tokens"].append(theory.normalised_spectrum(S)[:N_TOP])
            r["top_closure"].append(theory.normalised_spectrum(Sc)[:N_TOP])
            r["cos_tokens"].append(mean_cosine(Y))
            r["cos_closure"].append(mean_cosine(particles.sample(g, len(Y), seed=seed + l)))
            n = min(n_w2, len(Y))
            gm = Gaussian(m, S)
            G1 = particles.sample(gm, n, seed=seed + 1000 + l)
            G2 = particles.sample(gm, n, seed=seed + 2000 + l)
            r["w2"].append(wasserstein2(Y[:n], G1, method="exact"))
            r["w2_floor"].append(wasserstein2(G1, G2, method="exact"))
        runs[name] = {k: np.asarray(v, dtype=float) for k, v in r.items()}
        seconds[name] = {"network": t_net, "closure": t_closure,
                         "total": time.perf_counter() - t}
        log(f"  {name}: max cov err {np.max(runs[name]['cov_err']):.2e} "
            f"[network {t_net:.1f} s, closure {t_closure:.1f} s, "
            f"total {seconds[name]['total']:.1f} s]")
    info = {"model": dict(model.info), "placement": model.placement, "mode": mode,
            "n_tokens": {k: len(v) for k, v in clouds.items()}, "n_w2": int(n_w2),
            "seconds": seconds}
    return ModelReport(runs, info)


def initial_clouds(d: int, n: int, scales: tuple, seed: int = 0,
                   embeddings: Gaussian | None = None) -> dict[str, np.ndarray]:
    r"""$n$ tokens from $N(0, s^2 I_d)$ for each scale $s$, and from `embeddings` if given."""
    rng = np.random.default_rng(seed)
    out = {f"N(0, {s:g}² I)": s * rng.standard_normal((n, d)) for s in scales}
    if embeddings is not None:
        out["embeddings"] = particles.sample(embeddings, n, seed=seed)
    return out


def plot_model(report: ModelReport, title: str | None = None) -> Any:
    """Six panels against the layer: covariance and mean errors (dotted: sampling floor,
    `cov_floor`, `mean_floor`), effective rank, top normalised
    eigenvalue, mean cosine (tokens solid, closure dashed) and $W_2$ to the Gaussian over its
    floor."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(14, 7.5))
    ax = ax.ravel()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, r) in enumerate(report.runs.items()):
        c = colors[i % len(colors)]
        L = np.arange(len(r["cov_err"]))
        ax[0].semilogy(L[1:], r["cov_err"][1:], "o-", color=c, label=name)
        ax[1].semilogy(L[1:], r["mean_err"][1:], "o-", color=c)
        ax[0].semilogy(L[1:], r["cov_floor"][1:], ":", color=c)
        ax[1].semilogy(L[1:], r["mean_floor"][1:], ":", color=c)
        for k, key in ((2, "rank"), (3, "top"), (4, "cos")):
            tok, clo = r[key + "_tokens"], r[key + "_closure"]
            if key == "top":
                tok, clo = tok[:, 0], clo[:, 0]
            ax[k].plot(L, tok, "o-", color=c)
            ax[k].plot(L, clo, "x--", color=c)
        ax[5].plot(L, r["w2"] / r["w2_floor"], "o-", color=c)
    ax[5].axhline(1.0, color="k", lw=0.8)
    labels = ("relative covariance error", "relative mean error", "effective rank",
              "top normalised eigenvalue", "mean cosine similarity",
              "W2(tokens, Gaussian) / W2 floor")
    for a, lab in zip(ax, labels):
        a.set_title(lab, fontsize=10)
        a.set_xlabel("layer")
        a.grid(alpha=0.3)
    ax[0].plot([], [], "k:", label="sampling floor")
    ax[0].legend(fontsize=8)
    ax[2].plot([], [], "k-", label="tokens (network)")
    ax[2].plot([], [], "k--", label="Gaussian closure")
    ax[2].legend(fontsize=8)
    fig.suptitle(title or "Gaussian closure vs the network's forward pass, layer by layer")
    fig.tight_layout()
    return fig


def whole_model(out_dir: str | os.PathLike, quick: bool = False, seed: int = 0,
                checkpoint: str | os.PathLike | None = None, placement: str = "post",
                log: Callable[[str], Any] = print) -> tuple[dict[str, Any], list[str]]:
    """The whole-model reproduction: figure `model_minilm.png` / `.pdf`, table `model_minilm.md`,
    sampling-floor scan `model_minilm_noise.md`, the first layer split into its sub-blocks
    `model_minilm_split.md` (`gaussflow.model_noise.sub_block_split`), summary
    `model_minilm.json` in `out_dir`.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The output folder (created if missing).
    quick : bool
        A random checkpoint ($d = 16$, 2 heads, 2 layers, written into `out_dir`) and `QUICK`
        settings instead of MiniLM and `FULL`.
    seed : int
        Seed of the tokens (and of the random checkpoint).
    checkpoint : str or os.PathLike, optional
        Another BERT-style checkpoint instead of MiniLM.
    placement : str
        `"post"` (BERT) or `"pre"`.
    log : callable
        Called with each progress line.

    Returns
    -------
    tuple of (dict, list of str)
        The summary (`ModelReport.to_dict`) and the written PNG path.

    Raises
    ------
    ModuleNotFoundError
        Without `quick` or `checkpoint`, if the MiniLM package is not installed.
    """
    from . import plots  # lazy: matplotlib

    os.makedirs(out_dir, exist_ok=True)
    if checkpoint is None:
        checkpoint = (os.path.dirname(write_random_bert(os.path.join(out_dir, "random-bert-full"),
                                                        d=16, heads=2, layers=2, seed=seed,
                                                        full=True))
                      if quick else minilm_folder())
    settings = QUICK if quick else FULL
    model = load_model(checkpoint, placement=placement)
    log(f"whole model: {checkpoint} (d = {model.d}, {len(model)} layers, {placement}-norm, "
        f"{settings['n_tokens']} tokens)")
    emb = embedding_gaussian(checkpoint)
    clouds = initial_clouds(model.d, settings["n_tokens"], settings["scales"], seed, emb)
    twins = initial_clouds(model.d, settings["n_tokens"], settings["scales"], seed + 1, emb)
    rep = compare_model(model, clouds, n_w2=settings["n_w2"], seed=seed, twins=twins, log=log)
    stem = os.path.join(out_dir, "model_minilm")
    png = plots.save(plot_model(rep), stem)
    with open(stem + ".md", "w") as fh:
        fh.write(rep.table() + "\n")
    laws = {f"N(0, {s:g}² I)": Gaussian(np.zeros(model.d), s * s * np.eye(model.d))
            for s in settings["scan_scales"]}
    if emb is not None:
        laws["embeddings"] = emb
    scans = {}
    for name, law in laws.items():
        t = time.perf_counter()
        scans[name] = noise_scan(model, law, settings["scan_ns"], settings["scan_layers"], seed)
        log(f"  sampling-floor scan {name}: N = {settings['scan_ns']} "
            f"[{time.perf_counter() - t:.1f} s]")
    with open(stem + "_noise.md", "w") as fh:
        fh.write(noise_table(scans) + "\n")
    splits = {}
    for name, law in laws.items():
        t = time.perf_counter()
        splits[name] = sub_block_split(model, law, settings["split_ns"], 0, seed)
        log(f"  sub-block split {name}: N = {settings['split_ns']} "
            f"[{time.perf_counter() - t:.1f} s]")
    with open(stem + "_split.md", "w") as fh:
        fh.write(split_table(splits) + "\n")
    summary = rep.to_dict()
    summary["noise"] = {k: {m: np.asarray(v).tolist() for m, v in s.items()}
                        for k, s in scans.items()}
    summary["split"] = {k: {m: np.asarray(v).tolist() for m, v in s.items()}
                        for k, s in splits.items()}
    with open(stem + ".json", "w") as fh:
        json.dump(summary, fh, indent=1, default=float)
    return summary, [png]
