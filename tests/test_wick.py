"""The Wick rule (`gaussflow.symbolic.wick`) against brute force: SymPy integration in d = 1 and
exact Gaussian moments (derivatives of the moment generating function) in d = 2."""

import pytest
import sympy as sp
from sympy import Identity, MatrixSymbol

from gaussflow.symbolic.special import Scalar
from gaussflow.symbolic.wick import (COL, ROW, Lin, Quad, Term, expectation, monomials, poly_mul,
                                     poly_pow, term_expectation)

n = sp.Symbol("n", integer=True, positive=True)
S = MatrixSymbol("S", n, n)
a = MatrixSymbol("a", n, 1)
b = MatrixSymbol("b", n, 1)
M = MatrixSymbol("M", n, n)
delta = [Term(2 / n, (Lin(a),)), Term(1 / n, (Quad(Identity(n)),)), Term(-sp.Trace(S) / n)]


def _value(expr, subs):
    """`expr` with the matrix symbols replaced by explicit matrices, as a SymPy Matrix."""
    out = sp.sympify(expr).subs(subs).doit()
    out = out.replace(lambda e: isinstance(e, Scalar), lambda e: sp.Matrix(e.args[0].doit())[0, 0])
    out = out.as_explicit() if hasattr(out, "as_explicit") else sp.Matrix([[out]])
    return out.applyfunc(sp.simplify)


def _explicit(term, zvec, subs):
    """The term as an explicit polynomial in the components of z (a Matrix, 1x1 when scalar)."""
    val = sp.Matrix([[sp.sympify(term.coeff).subs(subs).doit()]])
    col = row = None
    for f in term.factors:
        if isinstance(f, Lin):
            val = val * (f.u.subs(subs).as_explicit().T * zvec)
        elif isinstance(f, Quad):
            val = val * (zvec.T * f.M.subs(subs).as_explicit() * zvec)
        elif f == COL:
            col = zvec
        else:
            row = zvec.T
    s = val[0, 0]
    if col is not None and row is not None:
        return s * col * row
    return s * col if col is not None else sp.Matrix([[s]])


def _gaussian_moment(poly, Smat, zs):
    """E[poly(z)], z ~ N(0, Smat), entrywise, by differentiating the moment generating function
    exp(t^T S t / 2) at t = 0."""
    ts = sp.symbols(f"t0:{len(zs)}")
    t = sp.Matrix(ts)
    mgf = sp.exp((t.T * Smat * t)[0, 0] / 2)

    def moment(p):
        p = sp.Poly(sp.expand(p), *zs)
        total = 0
        for powers, c in p.terms():
            deriv = mgf
            for ti, k in zip(ts, powers):
                deriv = sp.diff(deriv, ti, k) if k else deriv
            total += c * deriv.subs({ti: 0 for ti in ts})
        return sp.simplify(total)

    return poly.applyfunc(moment)


@pytest.mark.parametrize("build", [
    lambda: poly_pow(delta, 2),
    lambda: poly_pow(delta, 3),
    lambda: poly_mul([Term(1, (COL,))], poly_pow(delta, 2)),
    lambda: poly_mul([Term(1, (COL, ROW))], poly_pow(delta, 2)),
    lambda: [Term(3, (ROW, Lin(b), COL, Quad(M), Lin(a)))],  # ROW first, M not symmetric
    lambda: [Term(1, (Quad(M), Quad(M.T * S)))],
])
def test_matches_exact_moments_in_d2(build):
    terms = build()
    Smat = sp.Matrix([[2, sp.Rational(1, 2)], [sp.Rational(1, 2), 1]])
    subs = {n: 2, S: sp.ImmutableMatrix(Smat), a: sp.ImmutableMatrix([1, -2]),
            b: sp.ImmutableMatrix([3, 1]), M: sp.ImmutableMatrix([[1, 2], [-1, 3]])}
    zs = sp.symbols("z0:2")
    zvec = sp.Matrix(zs)
    poly = sum((_explicit(t, zvec, subs) for t in terms[1:]), _explicit(terms[0], zvec, subs))
    exact = _gaussian_moment(poly, Smat, zs)
    rule = _value(expectation(terms, S), subs)
    assert (rule - exact).applyfunc(sp.simplify) == sp.zeros(*exact.shape)


def test_matches_integration_in_d1():
    """d = 1 with symbolic variance s^2 and mean offset: E[z delta^2] and E[z^2 delta^3] against
    SymPy's integral over the Gaussian density."""
    s, av = sp.symbols("s a_v", positive=True)
    z = sp.Symbol("z", real=True)
    dens = sp.exp(-z ** 2 / (2 * s ** 2)) / sp.sqrt(2 * sp.pi * s ** 2)
    d_expl = 2 * av * z + z ** 2 - s ** 2  # n = 1
    subs = {n: 1, S: sp.ImmutableMatrix([[s ** 2]]), a: sp.ImmutableMatrix([[av]])}
    for terms, integrand in [
        (poly_mul([Term(1, (COL,))], poly_pow(delta, 2)), z * d_expl ** 2),
        (poly_mul([Term(1, (COL, ROW))], poly_pow(delta, 3)), z ** 2 * d_expl ** 3),
    ]:
        exact = sp.integrate(sp.expand(integrand) * dens, (z, -sp.oo, sp.oo))
        rule = _value(expectation(terms, S), subs)[0, 0]
        assert sp.simplify(rule - exact) == 0


def test_odd_vanishes_and_bad_terms():
    assert term_expectation(Term(1, (Lin(a), Quad(Identity(n)))), S) == 0
    with pytest.raises(ValueError, match="at most one COL"):
        term_expectation(Term(1, (ROW, Lin(a))), S)
    with pytest.raises(ValueError, match="at most one COL"):
        term_expectation(Term(1, (COL, COL)), S)
    # pairings: 3 copies of z in (COL, Lin, Lin, Lin) -> 4 slots -> 3 pairings
    assert monomials([Term(1, (COL, Lin(a), Lin(a), Lin(a)))]) == 3
    assert monomials([Term(1, (Quad(M),) * 3)]) == 15


def test_known_layer_norm_moments():
    """The moments the layer-norm derivation uses, against the Isserlis formulas written by
    hand (E[z delta] = 2 S a / n, E[z z^T delta] = 2 S^2 / n, Var V)."""
    got = expectation(poly_pow(delta, 2), S)
    want = (4 * (a.T * S * a)[0, 0] + 2 * sp.Trace(S * S)) / n ** 2
    subs = {n: 3, S: sp.ImmutableMatrix([[2, 1, 0], [1, 2, 1], [0, 1, 3]]),
            a: sp.ImmutableMatrix([1, 2, -1])}
    assert _value(got, subs) == _value(want, subs)
    assert _value(expectation(poly_mul([Term(1, (COL,))], delta), S), subs) == \
        _value(2 * S * a / n, subs)
    assert _value(expectation(poly_mul([Term(1, (COL, ROW))], delta), S), subs) == \
        _value(2 * S * S / n, subs)
