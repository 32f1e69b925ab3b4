"""The symbols every derivation shares.

Dimensions: ``d`` (token dimension), ``k`` (query/key dimension), ``k_v`` (value dimension).
Vectors are ``(n, 1)`` column MatrixSymbols: the query token ``x``, the key token ``y``, the
mean ``alpha``; ``Sigma`` is the ``(d, d)`` covariance. Weights:
score ``s(x, y) = beta <Q x, K y>``, value map ``y -> W_O V y``.
"""

from __future__ import annotations

import sympy as sp
from sympy import MatrixSymbol

d, k, k_v = sp.symbols("d k k_v", integer=True, positive=True)

#: Time (depth). Scores and values may depend on it; every generated function takes it first.
t = sp.Symbol("t", real=True)

x = MatrixSymbol("x", d, 1)
y = MatrixSymbol("y", d, 1)
alpha = MatrixSymbol("alpha", d, 1)
Sigma = MatrixSymbol("Sigma", d, d)
# The solver's state: Sigma = Phi Sigma0 Phi^T (flow map Phi, initial covariance Sigma0).
Phi = MatrixSymbol("Phi", d, d)
Sigma0 = MatrixSymbol("Sigma0", d, d)

Q = MatrixSymbol("Q", k, d)
K = MatrixSymbol("K", k, d)
V = MatrixSymbol("V", k_v, d)
W_O = MatrixSymbol("W_O", d, k_v)

beta = sp.Symbol("beta", real=True)  # any finite real (beta < 0 flips A)
c = sp.Symbol("c", positive=True)
eps = sp.Symbol("epsilon", positive=True)
# The sigmoid score's scalar bias; named "bias" (printed so, and so passed by the fields), not
# "b", which is the affine layer's vector below (LaTeX renders it b).
bias = sp.Symbol("bias", real=True)

# Affine layer: velocity W x + b.
W = MatrixSymbol("W", d, d)
b = MatrixSymbol("b", d, 1)

DIMENSIONS = (d, k, k_v)

#: Symbols that are never parameters of a declaration.
STATE = (x, y, alpha, Sigma, Phi, Sigma0)
