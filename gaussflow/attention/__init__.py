"""Declaring attention variants: `Attention` (subclass it), the normalisation objects,
the symbols to write scores with, and the registry of declared variants."""

from .. import registry
from . import symbols
from .declaration import Attention
from .normalisation import NoNormalisation, Normalisation, SinkhornNormalisation, SoftmaxNormalisation

__all__ = ["Attention", "Normalisation", "SoftmaxNormalisation", "SinkhornNormalisation",
           "NoNormalisation", "symbols", "registry"]
