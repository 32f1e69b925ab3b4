"""Variant declarations: one module per attention variant, all on :mod:`.base`."""

from .base import DerivedField, Field
from .affine import Affine
from .l2 import L2
from .layers import Layers
from .multihead import MultiHead
from .sinkhorn import Sinkhorn
from .masked import Masked
from .sigmoid import Sigmoid
from .softmax import Softmax
from .superposition import Sum
from .unnormalized import Unnormalized

#: Variants by name, for ``gf.derive("name")`` and the CLI.
VARIANTS = {
    "softmax": Softmax,
    "multihead": MultiHead,
    "l2": L2,
    "sinkhorn": Sinkhorn,
    "affine": Affine,
    "sigmoid": Sigmoid,
    "unnormalized": Unnormalized,
    "masked": Masked,
}

__all__ = ["Field", "DerivedField", "Softmax", "MultiHead", "L2", "Sinkhorn", "Affine", "Sum",
           "Layers", "Sigmoid", "Unnormalized", "Masked", "VARIANTS"]
