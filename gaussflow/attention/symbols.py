r"""The symbols a declaration is written with (re-exported from `gaussflow.symbolic.symbols`).

Query `x` and key `y` are `(d, 1)` columns; `t` is the time (depth). Weights: `Q`, `K` of shape
`(k, d)`, `V` of shape `(k_v, d)`, `W_O` of shape `(d, k_v)`; scales `beta` (real, $\beta$), `c`
and `eps` (positive, $c$ and $\epsilon$). New weights are plain SymPy symbols:
`sympy.MatrixSymbol("U", d, d)`, `sympy.Symbol("gamma", positive=True)`.
"""

from ..symbolic.symbols import K, Q, V, W_O, beta, c, d, eps, k, k_v, t, x, y

#: The dot-product score $\beta \langle Q x, K y\rangle = \beta\, y^\top K^\top Q x$ (declared
#: once, used by the built-in dot-product variants).
dot_score = beta * (Q * x).T * (K * y)

__all__ = ["x", "y", "t", "d", "k", "k_v", "Q", "K", "V", "W_O", "beta", "c", "eps", "dot_score"]
