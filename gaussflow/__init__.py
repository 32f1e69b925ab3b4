"""gaussflow: mean-field dynamics of deep Transformers on Gaussian token distributions.

Pipeline: variants (kernel declarations) → derive (SymPy Gaussian calculus) → codegen (JAX
source) → solve (diffrax) → theory / plots / CLI; particles → validate.

float64 is switched on at import (`jax_enable_x64`).
"""

from __future__ import annotations

import types

import jax

jax.config.update("jax_enable_x64", True)

from .gaussian import Gaussian, PositionalGaussians  # noqa: E402
from .symbolic import Derivation, derive  # noqa: E402
from . import attention  # noqa: E402
from .attention import Attention, NoNormalisation, SinkhornNormalisation  # noqa: E402
from .attention import SoftmaxNormalisation  # noqa: E402
from .variants import EXPORTS as _VARIANT_CLASSES, Field  # noqa: E402

globals().update(_VARIANT_CLASSES)  # every built-in variant class: gf.Softmax, gf.L2, ...
from .integrate import Trajectory, solve  # noqa: E402
from .batch import SweepResult, sweep  # noqa: E402
from . import particles, theory  # noqa: E402
from .validation import ValidationReport, validate  # noqa: E402
from .weights import load_attention  # noqa: E402
from .layernorm import layer_norm_gaussian  # noqa: E402
from .report import write_report  # noqa: E402
from .blocks import load_block, load_model  # noqa: E402
from .propagate import propagate  # noqa: E402

__version__ = "0.1.0"


def __getattr__(name: str) -> types.ModuleType:
    """`gf.plots` is imported on first use (matplotlib adds ~0.7 s to `import gaussflow`)."""
    if name == "plots":
        import importlib

        return importlib.import_module(".plots", __name__)
    raise AttributeError(f"module 'gaussflow' has no attribute {name!r}")

__all__ = [
    "Gaussian",
    "PositionalGaussians",
    "Derivation",
    "derive",
    "attention",
    "Attention",
    "SoftmaxNormalisation",
    "SinkhornNormalisation",
    "NoNormalisation",
    "Field",
    *sorted(_VARIANT_CLASSES),
    "Trajectory",
    "solve",
    "SweepResult",
    "sweep",
    "particles",
    "theory",
    "plots",
    "validate",
    "ValidationReport",
    "load_attention",
    "layer_norm_gaussian",
    "write_report",
    "load_block",
    "load_model",
    "propagate",
]
