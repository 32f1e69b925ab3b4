"""The registry of declared variants, by name: read by `gf.derive(name)`, the CLI, validation
examples and the `derivations/` documents. Declarations register themselves when their class is
created (`gaussflow.attention.Attention` subclasses, and built-in fields that call `register`);
nothing is listed by hand."""

from __future__ import annotations

_VARIANTS: dict = {}

BUILTIN_PACKAGE = "gaussflow.variants"


def register(cls: type) -> None:
    """Register `cls` under `cls.name`.

    A class from outside the package may not take the name of a built-in variant; redefining a
    user class (e.g. re-running a notebook cell) replaces it.

    Parameters
    ----------
    cls : type
        A field class with a class attribute `name`.

    Raises
    ------
    ValueError
        When `cls.name` is the name of a built-in variant and `cls` is not that variant.
    """
    name = cls.name
    old = _VARIANTS.get(name)
    if old is not None and old is not cls:
        builtin = old.__module__.startswith(BUILTIN_PACKAGE)
        same = (old.__module__, old.__qualname__) == (cls.__module__, cls.__qualname__)
        if builtin and not same:
            raise ValueError(f"the variant name {name!r} is taken by the built-in "
                             f"gf.{old.__name__}; give {cls.__name__} another name")
    _VARIANTS[name] = cls


def variants() -> dict[str, type]:
    """`{name: class}` of every registered variant (built-ins first, in declaration order)."""
    return dict(_VARIANTS)


def builtin_names() -> list[str]:
    """Names of the registered built-in variants (those of `gaussflow.variants`), in order."""
    return [k for k, v in _VARIANTS.items() if v.__module__.startswith(BUILTIN_PACKAGE)]


def lookup(name: str) -> type:
    """The variant class registered as `name` (case, `-` and `_` ignored).

    Raises `ValueError` (listing the registered names) when there is none.
    """
    key = name.strip().lower().replace("-", "").replace("_", "")
    for k, v in _VARIANTS.items():
        if k.replace("_", "").replace("-", "") == key:
            return v
    raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(sorted(_VARIANTS))}")
