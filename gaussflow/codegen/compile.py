"""Compile generated source: the package's single `exec`, and the namespace it runs in.

`RUNTIME` is everything generated code may name besides its own arguments and temporaries: the
modules `jnp` (`jax.numpy`), `jsp` (`jax.scipy.special`), `jax`, and one implementation per
`_jax_name` of the symbolic nodes in `gaussflow.symbolic.special` (`_sqrtm_psd`:
`gaussflow.linalg.sqrtm_psd`; `_sinkhorn_factor`: `gaussflow.linalg.sinkhorn_factor`; `_scalar`:
the entry of a `(1, 1)` matrix; `_logistic_gauss`:
`gaussflow.quadrature.logistic_gauss`; `_gauss_expect`: `gaussflow.quadrature.gauss_expect`;
`_mm`: `matmul_by_size`, the product of the source printed with `products="by_size"`).
The printer refuses arguments named like any of them.

Source is produced in-process from the package's own expressions and never read from disk.
"""

from __future__ import annotations

import ast
from typing import Any, Callable

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
import scipy.special

from ..linalg import sinkhorn_factor, sqrtm_psd
from ..quadrature import gauss_expect, logistic_gauss


def scalar_entry(M: jax.Array) -> jax.Array:
    """The entry `M[0, 0]` of a `(1, 1)` matrix, as a scalar (the node `Scalar`)."""
    return M[0, 0]


#: The largest inner dimension $k$ of a product $A B$ that `matmul_by_size` writes as $k$
#: elementwise multiply-adds instead of a matrix product.
UNROLL_MAX = 6


def matmul_by_size(A: jax.Array, B: jax.Array) -> jax.Array:
    r"""The product $A B$ of two matrices, laid out by its inner dimension $k$ (static).

    For $k \le$ `UNROLL_MAX`, $A B = \sum_{i<k} A_{:, i}\, B_{i, :}$ as $k$ broadcast
    multiply-adds; above, `A @ B`. Under `jax.vmap` over many members (a sweep) the batch axis
    leads, and XLA on CPU multiplies batches of small matrices slowly (measured by
    `benchmarks/layout.py`: 3 to 14 times slower than the multiply-adds for $4 \le d \le 7$,
    faster from $d \approx 8$); for one large matrix `@` is the right call.

    Parameters
    ----------
    A : jax.Array
        Shape `(n, k)`.
    B : jax.Array
        Shape `(k, m)`.

    Returns
    -------
    jax.Array
        Shape `(n, m)`, equal to `A @ B` up to rounding (summation order).
    """
    k = A.shape[-1]
    if A.ndim != 2 or B.ndim != 2 or k > UNROLL_MAX:
        return A @ B
    out = A[:, 0, None] * B[None, 0, :]
    for i in range(1, k):
        out = out + A[:, i, None] * B[None, i, :]
    return out


#: The namespace of generated code (see the module docstring).
RUNTIME = {
    "jnp": jnp,
    "jsp": jsp,
    "jax": jax,
    "_mm": matmul_by_size,
    "_sqrtm_psd": sqrtm_psd,
    "_sinkhorn_factor": sinkhorn_factor,
    "_scalar": scalar_entry,
    "_logistic_gauss": logistic_gauss,
    "_gauss_expect": gauss_expect,
}


def stacked_scalar_entry(M: np.ndarray) -> np.ndarray:
    """The entries `M[..., 0, 0]` of a stack of `(1, 1)` matrices, kept as `(..., 1, 1)` (the node
    `Scalar` in source printed with `products="stacked"`)."""
    return M[..., :1, :1]


#: The namespace of source printed with `products="stacked"` and run on NumPy stacks of members
#: (`gaussflow.numpy_engine`): `jnp` is NumPy itself and `jsp` SciPy's special functions (the
#: names generated code uses have the same meaning there), `_scalar` keeps unit axes. The other
#: runtime helpers (square roots, Sinkhorn factors, quadratures) are JAX-only: source that names
#: them has no NumPy form (`uses_only`).
NUMPY_RUNTIME = {
    "jnp": np,
    "jsp": scipy.special,
    "_scalar": stacked_scalar_entry,
}


def names_used(source: str) -> set[str]:
    """Every name and attribute name the text of `source` refers to (parsed, not run)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
    return names


def compile_source(source: str, extra: dict[str, Any] | None = None,
                   runtime: dict[str, Any] | None = None) -> dict[str, Callable]:
    """Execute generated source in a fresh namespace; return the functions it defines.

    Parameters
    ----------
    source : str
        Python source produced by `gaussflow.codegen.generate_function` (never read from disk).
    extra : dict, optional
        Further names for the namespace (runtime helpers, such as numerical rules, that a
        caller's own nodes print calls to).
    runtime : dict, optional
        The base namespace: `RUNTIME` (default, JAX) or `NUMPY_RUNTIME`.

    Returns
    -------
    dict
        Each function name the source defines, mapped to the function (the runtime `RUNTIME`
        and `extra` are left out).
    """
    base = RUNTIME if runtime is None else runtime
    namespace = dict(base)
    namespace.update(extra or {})
    code = compile(source, "<gaussflow-generated>", "exec")
    exec(code, namespace)  # noqa: S102 - our own generated text, never read from disk
    skip = set(base) | set(extra or {})
    return {k: v for k, v in namespace.items() if callable(v) and k not in skip}


__all__ = ["NUMPY_RUNTIME", "RUNTIME", "compile_source", "names_used", "scalar_entry",
           "stacked_scalar_entry"]
