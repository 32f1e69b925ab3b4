"""The built-in variants: one module per variant, each a declaration (see `gaussflow.attention`).

Every module of this package is imported here, in alphabetical order; each declaration registers
itself (`gaussflow.registry`), so a new built-in variant is one new file.
"""

import importlib
import pkgutil

from .. import registry
from ..field import DerivedField, Field

_MODULES = [m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"]
for _m in _MODULES:
    importlib.import_module(f".{_m}", __name__)

#: Exported classes: every public class defined in the variant modules.
EXPORTS = {}
for _m in _MODULES:
    _mod = importlib.import_module(f".{_m}", __name__)
    for _k, _v in vars(_mod).items():
        if isinstance(_v, type) and issubclass(_v, Field) and _v.__module__ == _mod.__name__ \
                and not _k.startswith("_"):
            EXPORTS[_k] = _v
globals().update(EXPORTS)

#: Variants by name, read from the registry (built-ins), for `gf.derive("name")` and the CLI.
VARIANTS = {k: v for k, v in registry.variants().items() if k in registry.builtin_names()}

__all__ = ["Field", "DerivedField", "VARIANTS", "EXPORTS", *EXPORTS]
