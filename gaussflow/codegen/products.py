r"""Matrix products for the JAX printer: chain ordering, shared sub-chains, solves for inverses.

A `MatMul` is a chain of factors $F_1 \cdots F_n$; `ProductRules` chooses its parenthesisation
by the matrix-chain recurrence on flop counts (symbolic dimensions taken as `DIM_GUESS`, so
`(n, 1)` vectors are multiplied in first), where a sub-chain that is already bound, or whose
transpose is, costs nothing, and one that occurs in several products of the function (or
transposed, e.g. $X$ and $X^\top$ in $X + X^\top$) is bound to a temporary and reused ($X^\top$
printed as `_t.T`). A sub-chain of constants only (weights and scales, fixed during a solve)
counts `CONSTANT_WEIGHT` of its flops: XLA hoists it out of the solver loop, so
$\Sigma Q^\top K \Sigma$ becomes $\Sigma (Q^\top K) \Sigma$ (two products per evaluation, not
three). An `Inverse(B)` factor is never formed: `Inverse(B) @ R` is `solve(B, R)` and
`L @ Inverse(B)` is `solve(B.T, L.T).T`.

The mixin expects of its host (`gaussflow.codegen.printer.JaxMatrixPrinter`): `print` (an
expression's text, with common sub-expressions bound), `_bind` (a temporary for a text), and the
attributes `constants`, `state`, `symmetric`, `chains`, `products`, `_tcache`, and the product
style `product_style`: `"matmul"` prints `A @ B`, `"by_size"` prints `_mm(A, B)`
(`gaussflow.codegen.compile.matmul_by_size`: multiply-adds for a small inner dimension).
"""

from __future__ import annotations

import sympy as sp
from sympy import Inverse, MatMul, MatPow, MatrixExpr, MatrixSymbol, Transpose

from ..symbolic.special import SinkhornFactor, SqrtPSD

#: Size assumed for a symbolic dimension when choosing the order of a matrix product.
DIM_GUESS = 64
#: Relative cost of a product of constants only (computed once per solve, not per evaluation).
CONSTANT_WEIGHT = 1e-3


def is_inverse(f: sp.Basic) -> bool:
    """Whether `f` is $B^{-1}$ (`Inverse(B)` or `MatPow(B, -1)`)."""
    return isinstance(f, Inverse) or (isinstance(f, MatPow) and f.exp == -1)


class ProductRules:
    """Printing of `MatMul` chains (see the module docstring)."""

    def _chain_counts(self, expr: MatMul):
        """Record every sub-chain of `expr` (with its transpose) once; return the factors."""
        fs = self._factors(expr)[1]
        for i in range(len(fs)):
            for j in range(i + 2, len(fs) + 1):
                self.chains[self._pair(fs[i:j])] += 1
        return fs

    def _factors(self, e: MatMul):
        r"""`([], factors)`: the matrix factors, led by the scalar coefficient when there is one
        (so that $\beta X$ is shared as a whole, e.g. $J$ inside $J\alpha$). With a `state`
        symbol, each weight next to it is multiplied into it first (`_with_state`)."""
        scalars = [a for a in e.args if not isinstance(a, MatrixExpr)]
        mats = tuple(a for a in e.args if isinstance(a, MatrixExpr))
        if self.state is not None and len(mats) > 2:
            mats = self._with_state(mats)
        if scalars:
            mats = (sp.Mul(*scalars),) + mats
        return [], mats

    def _with_state(self, fs):
        r"""Merge $\Phi^\top W$ and a trailing $W \Phi$ ($W$ a weight) into single factors.

        In $J \Phi = \dots \Phi \Sigma_0 \Phi^\top K^\top Q \Phi$
        ($\Sigma = \Phi \Sigma_0 \Phi^\top$), where $\Sigma$ collapses $Q \Phi$ and $K \Phi$ are
        small, and $\Phi^\top K^\top Q \Phi$ is only accurate as $(K \Phi)^\top (Q \Phi)$: formed
        as $\Phi^\top (K^\top Q \Phi)$ it keeps an absolute round-off $\epsilon \|\Phi\|^2$ that
        $d\Phi/dt$ integrates into an error growing like $\epsilon t$ ($\epsilon$ the machine
        epsilon)."""
        P, PT = self.state, Transpose(self.state)
        weight = (lambda f: isinstance(f, (MatrixSymbol, Transpose))
                  and f.free_symbols <= self.constants)
        out, i = [], 0
        while i < len(fs):
            if i + 2 == len(fs) and fs[i + 1] == P and weight(fs[i]):
                out.append(MatMul(fs[i], P))
                i += 2
            elif i + 1 < len(fs) and fs[i] == PT and weight(fs[i + 1]):
                out.append(MatMul(PT, fs[i + 1]))
                i += 2
            else:
                out.append(fs[i])
                i += 1
        return tuple(out)

    def _canon(self, f):
        """`f` with a transposed symmetric symbol replaced by the symbol (top level only)."""
        return self.symmetric.get(f, f)

    def _transpose(self, f):
        """Transpose of one factor: cheap rules for symbols, SymPy's (slow) `.T` otherwise,
        cached per factor."""
        if isinstance(f, Transpose):
            return f.arg
        if f in self.symmetric.values() or isinstance(f, (SqrtPSD, SinkhornFactor)):
            return f
        if isinstance(f, MatrixSymbol):
            return Transpose(f)
        if f not in self._tcache:
            self._tcache[f] = f.T.xreplace(self.symmetric)
        return self._tcache[f]

    def _key(self, fs) -> tuple:
        return tuple(self._canon(f) for f in fs)

    def _tkey(self, fs) -> tuple:
        lead = () if isinstance(fs[0], MatrixExpr) else (fs[0],)  # a scalar stays in front
        return lead + tuple(self._canon(self._transpose(f)) for f in reversed(fs[len(lead):]))

    def _pair(self, fs) -> frozenset:
        return frozenset((self._key(fs), self._tkey(fs)))

    def _size(self, n) -> int:
        n = sp.sympify(n)
        if n.is_Integer:
            return int(n)
        v = sp.sympify(n.subs({s: DIM_GUESS for s in n.free_symbols}))
        return int(v) if v.is_Integer else DIM_GUESS

    def _available(self, fs):
        """Name (or transposed name) of an already bound product of `fs`, else `None`."""
        name = self.products.get(self._key(fs))
        if name is not None:
            return name
        name = self.products.get(self._tkey(fs))
        return None if name is None else f"{name}{self.tsuffix}"

    def _matmul(self, e: MatMul) -> str:
        scalars, fs = self._factors(e)
        n = len(fs)
        rows = [self._size(f.shape[0]) if isinstance(f, MatrixExpr) else 1 for f in fs]
        cols = [self._size(f.shape[1]) if isinstance(f, MatrixExpr) else 1 for f in fs]
        scalar0 = not isinstance(fs[0], MatrixExpr)
        # Matrix-chain recurrence: cost[i, j], best split of fs[i:j].
        fixed = [f.free_symbols <= self.constants if self.constants else False for f in fs]
        const = {(i, j): all(fixed[i:j]) for i in range(n) for j in range(i + 1, n + 1)}
        cost, split = {}, {}
        for i in range(n):
            cost[i, i + 1] = 0.0
        for length in range(2, n + 1):
            for i in range(n - length + 1):
                j = i + length
                if self._available(fs[i:j]) is not None:
                    cost[i, j], split[i, j] = 0.0, None
                    continue
                share = max(1, self.chains.get(self._pair(fs[i:j]), 1))
                best, arg = None, None
                for s in range(i + 1, j):
                    if i == 0 and s == 1 and scalar0:  # coefficient times a matrix
                        flops = rows[1] * cols[j - 1]
                    else:
                        flops = rows[i + (i == 0 and scalar0)] * cols[s - 1] * cols[j - 1]
                    if s - i == 1 and is_inverse(fs[i]):
                        flops += rows[i] ** 3  # factorisation
                    elif j - s == 1 and is_inverse(fs[j - 1]):
                        flops += rows[j - 1] ** 3
                    if const[i, j]:
                        flops *= CONSTANT_WEIGHT
                    c = cost[i, s] + cost[s, j] + flops / share
                    if best is None or c < best:
                        best, arg = c, s
                cost[i, j], split[i, j] = best, arg
        acc = self._chain(fs, 0, n, split)
        if scalars:
            coeff = " * ".join(self.print(s) for s in scalars)
            return f"({coeff} * {acc})"
        return acc

    def _chain(self, fs, i, j, split) -> str:
        if j - i == 1:
            return self.print(fs[i])
        name = self._available(fs[i:j])
        if name is not None:
            return name
        s = split[i, j]
        if s - i == 1 and not isinstance(fs[i], MatrixExpr):
            text = f"({self.print(fs[i])} * {self._chain(fs, s, j, split)})"
        elif s - i == 1 and is_inverse(fs[i]):
            text = f"jnp.linalg.solve({self.print(fs[i].args[0])}, {self._chain(fs, s, j, split)})"
        elif j - s == 1 and is_inverse(fs[j - 1]):
            t = self.tsuffix
            text = (f"jnp.linalg.solve({self.print(fs[j - 1].args[0])}{t}, "
                    f"{self._chain(fs, i, s, split)}{t}){t}")
        else:
            a, b = self._chain(fs, i, s, split), self._chain(fs, s, j, split)
            text = f"_mm({a}, {b})" if self.product_style == "by_size" else f"({a} @ {b})"
        if self.chains.get(self._pair(fs[i:j]), 0) > 1:
            name = self._bind(text)
            self.products[self._key(fs[i:j])] = name
            return name
        return text
