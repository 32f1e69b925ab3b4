"""Symbolic Gaussian calculus (SymPy) and the derivation engine. Imports nothing numeric."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import registry
from .derivation import ClosedForm, Derivation, Program, Step

if TYPE_CHECKING:
    from ..field import DerivedField


def derive(field_or_name: str | type[DerivedField] | DerivedField) -> Derivation:
    """The `Derivation` of a variant, given by name (`"softmax"`), class or field object.

    Names are those of the registry (every declared variant, built-in or the user's own).
    Derivations are computed once per process and cached, with their generated JAX.

    Parameters
    ----------
    field_or_name : str or DerivedField class or instance
        A registered variant name (case, `-` and `_` ignored), a variant class, or a field.

    Returns
    -------
    Derivation
        The derivation, with its generated JAX source and compiled functions.

    Raises
    ------
    TypeError
        When `field_or_name` is neither a name nor something with a `derivation()` method.
    ValueError
        When the name is not registered.
    """
    if isinstance(field_or_name, str):
        return registry.lookup(field_or_name).derivation()
    deriv = getattr(field_or_name, "derivation", None)
    if callable(deriv):
        return deriv()
    raise TypeError(f"derive() takes a variant name or a gaussflow field (or a variant class), "
                    f"got {type(field_or_name).__name__}")


__all__ = ["ClosedForm", "Derivation", "Program", "Step", "derive"]
