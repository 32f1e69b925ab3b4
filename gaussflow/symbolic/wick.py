r"""Gaussian moments of polynomials in $z \sim \mathcal N(0, S)$ by Wick's (Isserlis') theorem,
written as matrix expressions.

A *term* is a scalar coefficient times a product of *factors*, each linear or quadratic in $z$:

- `Lin(u)`: the scalar $u^\top z$ ($u$ a column);
- `Quad(M)`: the scalar $z^\top M z$;
- `COL`, `ROW`: the column $z$ and the row $z^\top$ of an outer product (a term holds at most one
  of each; with both it stands for the matrix $z z^\top$ times its scalar factors, with `COL`
  alone for the column $z$ times them).

Isserlis' theorem: $E[z_{i_1} \cdots z_{i_{2m}}]$ is the sum over the perfect pairings of the
$2m$ copies of $z$ of the products of $S_{i_a i_b}$ over the pairs (odd products vanish).
Follow one pairing through the factors: from a linear or free copy, along $S$ to its partner, and
through a quadratic factor to its other copy, until a linear or free copy ends the walk. So every
pairing splits into *chains* and *cycles*:

- a chain $u \to w$ between two linear factors is the scalar $u^\top S M_1 S \cdots S w$;
- a chain from `COL` to a linear factor $w$ is the column $S M_1 S \cdots S w$; from `ROW`
  likewise a row; from `COL` to `ROW` the matrix $S M_1 S \cdots S$;
- a cycle through quadratic factors is $\operatorname{tr}(S M_1 S M_2 \cdots)$.

The expectation of a term is its coefficient times the sum over pairings of the product of these
pieces (columns and rows multiplied into an outer product). Checked against SymPy integration
in $d = 1$ and against exact moments (derivatives of the moment generating function) in $d = 2$
in `tests/test_wick.py`. Symbolic only: imports nothing numeric.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import sympy as sp
from sympy import MatrixExpr, Trace, ZeroMatrix

from .calculus import simplify_matrix
from .special import Scalar


@dataclass(frozen=True)
class Lin:
    r"""The scalar $u^\top z$."""

    u: MatrixExpr


@dataclass(frozen=True)
class Quad:
    r"""The scalar $z^\top M z$."""

    M: MatrixExpr


@dataclass(frozen=True)
class Free:
    r"""The free copy of $z$: `"col"` ($z$) or `"row"` ($z^\top$)."""

    side: str


COL, ROW = Free("col"), Free("row")


@dataclass(frozen=True)
class Term:
    """`coeff` (a scalar expression) times the product of `factors`."""

    coeff: sp.Expr
    factors: tuple = ()

    def __mul__(self, other: Term) -> Term:
        return Term(self.coeff * other.coeff, self.factors + other.factors)


def _key(f) -> tuple:
    return (type(f).__name__, sp.srepr(getattr(f, "u", getattr(f, "M", getattr(f, "side", "")))))


def collect(terms: Sequence[Term]) -> list[Term]:
    """Like terms merged: factors put in a canonical order (the factors commute) and the
    coefficients of equal products added; zero terms dropped."""
    out: dict[tuple, sp.Expr] = {}
    for t in terms:
        factors = tuple(sorted(t.factors, key=_key))
        out[factors] = out.get(factors, sp.Integer(0)) + t.coeff
    return [Term(c, f) for f, c in out.items() if sp.expand(c) != 0]


def poly_mul(p: Sequence[Term], q: Sequence[Term]) -> list[Term]:
    """The product of two sums of terms, expanded and collected."""
    return collect([a * b for a in p for b in q])


def poly_pow(p: Sequence[Term], n: int) -> list[Term]:
    """`p` to the power `n >= 0`, expanded (`[Term(1)]` for `n = 0`)."""
    out = [Term(sp.Integer(1))]
    for _ in range(n):
        out = poly_mul(out, p)
    return out


def _pairings(slots: list[int]):
    if not slots:
        yield []
        return
    first, rest = slots[0], slots[1:]
    for i, partner in enumerate(rest):
        for tail in _pairings(rest[:i] + rest[i + 1:]):
            yield [(first, partner)] + tail


def _product(mats: list[MatrixExpr]) -> MatrixExpr:
    return sp.MatMul(*mats).doit() if len(mats) > 1 else mats[0]


def term_expectation(term: Term, S: MatrixExpr) -> sp.Basic:
    r"""$E[\text{term}]$ for $z \sim \mathcal N(0, S)$, $S$ symmetric (module docstring): a scalar
    expression, a column (`COL` in the term) or a matrix (`COL` and `ROW`).

    Raises
    ------
    ValueError
        For a term with `ROW` but no `COL`, or with more than one of either.
    """
    factors = term.factors
    frees = [f.side for f in factors if isinstance(f, Free)]
    if sorted(frees) not in ([], ["col"], ["col", "row"]):
        raise ValueError(f"a term holds at most one COL and one ROW (ROW only with COL), got {frees}")
    n = S.shape[0]
    shape = (n, n) if len(frees) == 2 else (n, 1) if frees else None
    # slots: (factor index, side); a quadratic factor has sides 0 (z^T, rows of M) and 1 (z)
    slots = [(i, s) for i, f in enumerate(factors) for s in ((0, 1) if isinstance(f, Quad) else (0,))]
    if len(slots) % 2:
        return ZeroMatrix(*shape) if shape else sp.Integer(0)
    counts: Counter = Counter()  # pairings with the same chains and cycles give equal products
    for pairing in _pairings(list(range(len(slots)))):
        partner = {}
        for a, b in pairing:
            partner[slots[a]], partner[slots[b]] = slots[b], slots[a]
        seen = set()

        def walk(start):
            """From a terminal slot: (end slot, the matrices between: S, M, S, ..., S)."""
            mats, s = [], start
            seen.add(s)
            while True:
                p = partner[s]
                seen.add(p)
                mats.append(S)
                f = factors[p[0]]
                if not isinstance(f, Quad):
                    return p, tuple(mats)
                mats.append(f.M if p[1] == 0 else f.M.T)
                s = (p[0], 1 - p[1])
                seen.add(s)

        scalars, col, row, matrix = [], None, None, None
        terminals = sorted((s for s in slots if not isinstance(factors[s[0]], Quad)),
                           key=lambda s: isinstance(factors[s[0]], Lin))  # free copies first
        for s in terminals:
            if s in seen:
                continue
            end, mats = walk(s)
            start_f, end_f = factors[s[0]], factors[end[0]]
            if isinstance(start_f, Free) and isinstance(end_f, Free):
                matrix = (mats, start_f.side == "col")
            elif isinstance(start_f, Free):
                if start_f.side == "col":
                    col = mats + (end_f.u,)
                else:
                    row = mats + (end_f.u,)
            else:
                scalars.append(("chain", (start_f.u.T,) + mats + (end_f.u,)))
        for s in slots:  # what is left are cycles through quadratic factors
            if s in seen:
                continue
            f0 = factors[s[0]]
            mats, cur = [f0.M if s[1] == 0 else f0.M.T], (s[0], 1 - s[1])
            seen.update({s, cur})
            while True:
                p = partner[cur]
                mats.append(S)
                if p == s:
                    break
                seen.add(p)
                f = factors[p[0]]
                mats.append(f.M if p[1] == 0 else f.M.T)
                cur = (p[0], 1 - p[1])
                seen.add(cur)
            scalars.append(("trace", tuple(mats)))
        counts[(tuple(sorted(scalars, key=str)), col, row, matrix)] += 1
    total = []
    for (scalars, col, row, matrix), count in counts.items():
        scalar = count * term.coeff
        for kind, mats in scalars:
            scalar *= Scalar(_product(list(mats))) if kind == "chain" else \
                Trace(_product(list(mats))).doit()
        if shape is None:
            total.append(scalar)
        elif len(frees) == 1:
            total.append(scalar * _product(list(col)))
        elif matrix is not None:
            M = _product(list(matrix[0]))
            total.append(scalar * (M if matrix[1] else M.T))
        else:
            total.append(scalar * _product(list(col)) * _product(list(row)).T)
    if shape is None:
        return simplify_matrix(sp.Add(*total), (S,))
    return simplify_matrix(sp.MatAdd(*total), (S,)) if total else ZeroMatrix(*shape)


def expectation(terms: Sequence[Term], S: MatrixExpr) -> sp.Basic:
    r"""$E[\sum \text{terms}]$, $z \sim \mathcal N(0, S)$: the sum of `term_expectation` (every
    term must have the same free copies)."""
    parts = [term_expectation(t, S) for t in terms]
    if not parts:
        return sp.Integer(0)
    total = sp.MatAdd(*parts) if isinstance(parts[0], MatrixExpr) else sp.Add(*parts)
    return simplify_matrix(total, (S,))


def monomials(terms: Sequence[Term]) -> int:
    """The number of pairings `expectation` sums over (the cost of the rule)."""
    def count(t):
        m = sum(2 if isinstance(f, Quad) else 1 for f in t.factors)
        return 0 if m % 2 else int(sp.factorial2(m - 1)) if m else 1
    return sum(count(t) for t in terms)


__all__ = ["Lin", "Quad", "Free", "COL", "ROW", "Term", "collect", "poly_mul", "poly_pow",
           "term_expectation", "expectation", "monomials"]
