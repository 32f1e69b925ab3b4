"""Code generation: derived SymPy matrix expressions printed as matrix-level JAX, and compiled.

- :mod:`.printer`: :class:`JaxMatrixPrinter` (a SymPy ``CodePrinter`` with one ``_print_X`` rule
  per node type; anything else is refused at generation time) and :func:`generate_function`.
- :mod:`.compile`: :func:`compile_source` (the package's single ``exec``) and :data:`RUNTIME`.
"""

from .compile import RUNTIME, compile_source
from .printer import JaxMatrixPrinter, generate_function

__all__ = ["JaxMatrixPrinter", "RUNTIME", "compile_source", "generate_function"]
