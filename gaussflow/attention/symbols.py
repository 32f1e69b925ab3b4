"""The symbols a declaration is written with (re-exported from :mod:`gaussflow.symbolic.symbols`).

Query ``x`` and key ``y`` are ``(d, 1)`` columns; ``t`` is the time (depth). Weights: ``Q, K``
``(k, d)``, ``V`` ``(k_v, d)``, ``W_O`` ``(d, k_v)``; scales ``beta`` (real), ``c`` and ``eps``
(positive). New weights are plain SymPy symbols: ``sympy.MatrixSymbol("U", d, d)``,
``sympy.Symbol("gamma", positive=True)``.
"""

from ..symbolic.symbols import K, Q, V, W_O, beta, c, d, eps, k, k_v, t, x, y

#: The dot-product score ``beta <Q x, K y> = beta y^T K^T Q x`` (declared once, used by the
#: built-in dot-product variants).
dot_score = beta * (Q * x).T * (K * y)

__all__ = ["x", "y", "t", "d", "k", "k_v", "Q", "K", "V", "W_O", "beta", "c", "eps", "dot_score"]
