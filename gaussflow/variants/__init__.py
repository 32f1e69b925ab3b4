"""Variant declarations: one module per attention variant, all on :mod:`.base`."""

from .base import DerivedField, Field
from .softmax import Softmax
from .superposition import Sum

#: Variants by name, for ``gf.derive("name")`` and the CLI.
VARIANTS = {
    "softmax": Softmax,
}

__all__ = ["Field", "DerivedField", "Softmax", "Sum", "VARIANTS"]
