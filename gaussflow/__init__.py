"""gaussflow: mean-field dynamics of deep Transformers on Gaussian token distributions.

Pipeline: variants (kernel declarations) -> derive (SymPy Gaussian calculus) -> codegen (JAX
source) -> solve (diffrax) -> theory / plots / CLI; particles -> validate.

float64 is switched on at import (``jax_enable_x64``).
"""

import jax

jax.config.update("jax_enable_x64", True)

from .gaussian import Gaussian  # noqa: E402
from .derive import Derivation, derive  # noqa: E402
from .variants import L2, Affine, Field, Layers, MultiHead, Sinkhorn, Softmax, Sum  # noqa: E402
from .solve import Trajectory, solve  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Gaussian",
    "Derivation",
    "derive",
    "Field",
    "Softmax",
    "MultiHead",
    "L2",
    "Sinkhorn",
    "Affine",
    "Sum",
    "Layers",
    "Trajectory",
    "solve",
]
