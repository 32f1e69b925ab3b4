"""Code generation: derived SymPy matrix expressions printed as matrix-level JAX, and compiled.

- `.printer`: `JaxMatrixPrinter` (a SymPy `CodePrinter` with one `_print_X` rule per node type;
  anything else is refused at generation time) and `generate_function`.
- `.compile`: `compile_source` (the package's single `exec`) and `RUNTIME`.
"""

from .compile import RUNTIME, compile_source
from .printer import JaxMatrixPrinter, generate_function

__all__ = ["JaxMatrixPrinter", "RUNTIME", "compile_source", "generate_function"]
