"""Symbolic Gaussian calculus (SymPy) and the derivation engine."""

from .derivation import Derivation, Step


def derive(field_or_name):
    """The :class:`Derivation` of a variant, given by name (``"softmax"``) or by a field object.

    Derivations are computed once per process and cached.
    """
    from ..variants import VARIANTS
    from ..variants.base import DerivedField, Field

    if isinstance(field_or_name, str):
        key = field_or_name.strip().lower().replace("-", "").replace("_", "")
        names = {k.replace("_", ""): v for k, v in VARIANTS.items()}
        if key not in names:
            raise ValueError(f"unknown variant {field_or_name!r}; choose one of "
                             f"{', '.join(sorted(VARIANTS))}")
        return names[key].derivation()
    if isinstance(field_or_name, type) and issubclass(field_or_name, DerivedField):
        return field_or_name.derivation()
    if isinstance(field_or_name, Field):
        if hasattr(field_or_name, "derivation"):
            return field_or_name.derivation()
    raise TypeError(f"derive() takes a variant name or a gaussflow field, got "
                    f"{type(field_or_name).__name__}")


__all__ = ["Derivation", "Step", "derive"]
