"""Symbolic Gaussian calculus (SymPy) and the derivation engine. Imports nothing numeric."""

from .. import registry
from .derivation import ClosedForm, Derivation, Program, Step


def derive(field_or_name) -> Derivation:
    """The :class:`Derivation` of a variant, given by name (``"softmax"``), class or field object.

    Names are those of the registry (every declared variant, built-in or the user's own).
    Derivations are computed once per process and cached, with their generated JAX.
    """
    if isinstance(field_or_name, str):
        return registry.lookup(field_or_name).derivation()
    deriv = getattr(field_or_name, "derivation", None)
    if callable(deriv):
        return deriv()
    raise TypeError(f"derive() takes a variant name or a gaussflow field (or a variant class), "
                    f"got {type(field_or_name).__name__}")


__all__ = ["ClosedForm", "Derivation", "Program", "Step", "derive"]
