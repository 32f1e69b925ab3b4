"""The JAX printer: solves instead of inverses, shared products (X + X^T, J reused by the mean),
product order by shape, and generated functions equal to SymPy's own evaluation."""

import re

import jax
import numpy as np
import pytest
import scipy.linalg
import sympy as sp
from sympy import Identity, ImmutableMatrix, Inverse, MatrixSymbol

import gaussflow as gf
from gaussflow.codegen import compile_source, generate_function
from gaussflow.symbolic.special import SinkhornFactor, SqrtPSD
from gaussflow.symbolic import symbols as S

DIMS = {S.d: 3, S.k: 2, S.k_v: 4}


def _matmuls(src: str) -> int:
    return src.count(" @ ")


def _numeric(expr, values):
    """SymPy's evaluation of ``expr`` at explicit matrices (SqrtPSD by scipy's sqrtm,
    SinkhornFactor by its literal formula)."""
    e = expr.xreplace(values).subs(DIMS)
    e = e.replace(lambda z: isinstance(z, SqrtPSD),
                  lambda z: ImmutableMatrix(np.real(scipy.linalg.sqrtm(
                      np.array(sp.Matrix(z.arg.doit()).evalf(), dtype=float)))))
    e = e.replace(lambda z: isinstance(z, SinkhornFactor), lambda z: ImmutableMatrix(_factor(
        np.array(sp.Matrix(z.arg.doit()).evalf(), dtype=float))))
    return np.array(sp.Matrix(e.doit()).evalf(), dtype=float)


def _factor(H):
    """SinkhornFactor by its literal formula (I + (I + 4 H^T H)^{1/2})^{-1} (scipy's sqrtm)."""
    n = H.shape[1]
    return np.linalg.inv(np.eye(n) + np.real(scipy.linalg.sqrtm(np.eye(n) + 4 * H.T @ H)))


def _values(rng, params):
    """Random explicit values for the state symbols and ``params`` (dims of DIMS)."""
    vals = {}
    G = rng.normal(size=(3, 3))
    vals[S.Sigma] = G @ G.T / 3 + 0.2 * np.eye(3)
    for s in (S.x, S.alpha, *params):
        if isinstance(s, MatrixSymbol):
            shape = tuple(int(sp.sympify(n).subs(DIMS).subs({z: 2 for z in n.free_symbols}))
                          for n in map(sp.sympify, s.shape))
            vals[s] = rng.normal(size=shape) / 2
        else:
            vals[s] = float(rng.uniform(0.3, 0.9))
    return vals


def _sym(vals):
    return {s: (ImmutableMatrix(v) if isinstance(v, np.ndarray) else sp.Float(v))
            for s, v in vals.items()}


@pytest.mark.parametrize("name", ["softmax", "l2", "sinkhorn", "multihead", "affine"])
def test_generated_functions_equal_sympy_evaluation(name):
    der = gf.derive(name)
    rng = np.random.default_rng(7)
    vals = _values(rng, der.params)
    fns = compile_source(der.jax_source, der.runtime)
    p = [vals[s] for s in der.params]
    a, Sg, x = vals[S.alpha], vals[S.Sigma], vals[S.x]
    sym = _sym(vals)
    dm, J = fns["closure"](0.0, a, Sg, *p)
    dm2, dS = fns["moment_rhs"](0.0, a, Sg, *p)
    v = fns["velocity"](0.0, x, a, Sg, *p)
    want = {"mean": _numeric(der.mean_rhs, sym), "J": _numeric(der.jacobian, sym),
            "cov": _numeric(der.cov_rhs, sym), "vel": _numeric(der.velocity, sym)}
    for got, key in ((dm, "mean"), (dm2, "mean"), (J, "J"), (dS, "cov"), (v, "vel")):
        np.testing.assert_allclose(np.asarray(got), want[key], rtol=1e-10, atol=1e-12,
                                   err_msg=f"{name}: {key}")


def test_chain_with_inverses_and_transposes_equals_sympy():
    d, k = S.d, S.k
    A, B = MatrixSymbol("A", d, d), MatrixSymbol("B", k, d)
    Sg, al = S.Sigma, S.alpha
    M = Identity(d) + Sg * A.T * A
    exprs = [2 * Inverse(M) * Sg * B.T * B * al,                 # solve on the left
             Sg * Inverse(M.T) * A + A.T * Inverse(M) * Sg,   # X + X^T, solve on the right
             al.T * A * Sg * Inverse(M) * al]                   # row vector chain
    args = (al, Sg, A, B)
    src = generate_function("f", args, exprs)
    assert "inv(" not in src and "jnp.linalg.solve" in src
    rng = np.random.default_rng(3)
    vals = _values(rng, (A, B))
    got = compile_source(src)["f"](*(vals[s] for s in args))
    for g, e in zip(got, exprs):
        np.testing.assert_allclose(np.asarray(g), _numeric(e, _sym(vals)), rtol=1e-10,
                                   atol=1e-12)


def test_x_plus_x_transpose_computes_x_once():
    d = S.d
    A, B, C = (MatrixSymbol(n, d, d) for n in "ABC")
    Sg = S.Sigma
    X, Xt = A * Sg * B * C, C.T * B.T * Sg * A.T     # Xt = X^T as Sigma is symmetric
    src = generate_function("f", (Sg, A, B, C), [S.beta * X + S.beta * Xt])
    assert _matmuls(src) == 3, src          # three products for X; X^T is a transpose
    assert re.search(r"_t\d+\.T", src), src
    # Without the knowledge that Sigma is symmetric the transposed term is a different product.
    src2 = generate_function("f", (Sg, A, B, C), [X + Xt], symmetric=())
    assert _matmuls(src2) > 3, src2


def test_softmax_closure_shares_J_between_mean_and_jacobian():
    src = gf.derive("softmax").jax_source
    closure = src[src.index("def closure"):src.index("def moment_rhs")]
    moment = src[src.index("def moment_rhs"):src.index("def flow_rhs")]
    flow = src[src.index("def flow_rhs"):]
    flow = flow[:flow.index("def ", 4)] if "def " in flow[4:] else flow
    # J = beta W_O V Sigma K^T Q: four products, then dalpha = W_O V alpha + J alpha: two more.
    assert _matmuls(closure) == 6, closure
    # dSigma = J Sigma + (J Sigma)^T: one more product than J, the mean reuses J^T; the weight
    # products (Q^T K, V^T W_O^T) are formed on their own (hoisted out of a solver loop).
    assert _matmuls(moment) == 7, moment
    assert "(Q.T @ K)" in moment and "(V.T @ W_O.T)" in moment, moment
    # J Phi with Sigma = Phi Sigma0 Phi^T: K Phi and Q Phi formed first, never K^T Q.
    assert "(Q @ Phi)" in flow and "K.T @ Q" not in flow and "Q.T @ K" not in flow, flow


def test_vectors_are_multiplied_in_first():
    d = S.d
    A, B, C = (MatrixSymbol(n, d, d) for n in "ABC")
    src = generate_function("f", (S.x, A, B, C), [A * B * C * S.x])
    assert "(A @ (B @ (C @ x)))" in src
    src = generate_function("f", (S.x, A, B, C), [S.x.T * A * B * C])
    assert "(((x.T @ A) @ B) @ C)" in src


# -- a printer that cannot lie: what it cannot print exactly is refused at generation -------------


def test_printer_is_a_codeprinter_with_one_rule_per_node():
    from sympy.printing.codeprinter import CodePrinter

    from gaussflow.codegen import JaxMatrixPrinter

    assert issubclass(JaxMatrixPrinter, CodePrinter)
    for node in ("MatrixSymbol", "Symbol", "Integer", "Rational", "Float", "Pi", "Identity",
                 "ZeroMatrix", "OneMatrix", "Transpose", "Inverse", "MatPow", "MatAdd", "MatMul",
                 "HadamardProduct", "Trace", "Determinant", "MatrixElement", "Add", "Mul", "Pow",
                 "exp", "log", "erf", "erfc", "tanh", "Abs"):
        assert f"_print_{node}" in vars(JaxMatrixPrinter), node


def test_non_integer_matrix_power_is_refused():
    """Sigma^{1/2} once printed as matrix_power(Sigma, 0), the identity."""
    half = sp.MatPow(S.Sigma, sp.Rational(1, 2))
    with pytest.raises(ValueError, match="not an integer"):
        generate_function("f", (S.Sigma,), [half])
    with pytest.raises(ValueError, match="not an integer"):
        generate_function("f", (S.Sigma, S.beta), [sp.MatPow(S.Sigma, S.beta)])
    # integer powers are exact: -1 a solve, -2 its square, 3 matrix_power
    A = np.array([[2.0, 0.5, 0.0], [0.5, 1.5, 0.2], [0.0, 0.2, 1.0]])
    exprs = [sp.MatPow(S.Sigma, -1), sp.MatPow(S.Sigma, -2), sp.MatPow(S.Sigma, 3)]
    src = generate_function("f", (S.Sigma,), exprs)
    assert "inv(" not in src
    got = compile_source(src)["f"](A)
    Ai = np.linalg.inv(A)
    for g, want in zip(got, (Ai, Ai @ Ai, A @ A @ A)):
        np.testing.assert_allclose(np.asarray(g), want, rtol=1e-12, atol=1e-12)
    # the PSD square root is its own node, printed through its _jax_name
    src = generate_function("f", (S.Sigma,), [SqrtPSD(S.Sigma)])
    R = np.asarray(compile_source(src)["f"](A))
    np.testing.assert_allclose(R @ R, A, rtol=1e-12, atol=1e-12)


def test_two_parameters_with_one_printed_name_are_refused():
    vec_b, bias = MatrixSymbol("b", S.d, 1), sp.Symbol("b")
    with pytest.raises(ValueError, match=r"both print as 'b'") as err:
        generate_function("f", (S.x, vec_b, bias), [bias * S.x + vec_b])
    assert "MatrixSymbol" in str(err.value) and "Symbol" in str(err.value)
    # a free symbol of the outputs against an argument of that name
    with pytest.raises(ValueError, match=r"both print as 'b'"):
        generate_function("f", (S.x, vec_b), [bias * S.x + vec_b])
    # the shared sigmoid bias no longer collides with the affine vector
    assert S.bias.name != S.b.name
    generate_function("f", (S.x, S.b, S.bias), [S.bias * S.x + S.b])


@pytest.mark.parametrize("bad", ["jnp", "_sqrtm_psd", "_t0", "lambda", "not a name"])
def test_runtime_keyword_and_invalid_names_are_refused(bad):
    s = sp.Symbol(bad)
    with pytest.raises(ValueError, match="codegen"):
        generate_function("f", (S.x, s), [s * S.x])


def test_unknown_node_is_refused():
    class Mystery(sp.MatrixExpr):  # no rule, no _jax_name: the old printer's fall-through case
        @property
        def shape(self):
            return self.args[0].shape

    with pytest.raises(NotImplementedError, match="Mystery"):
        generate_function("f", (S.Sigma,), [Mystery(S.Sigma) * S.Sigma])
    # nodes SymPy's StrPrinter would print as plausible text are refused too
    y = sp.Symbol("y")
    for expr in (sp.Max(S.beta, y), sp.gamma(S.beta), sp.Derivative(sp.Function("g")(y), y),
                 sp.oo * S.beta, sp.KroneckerProduct(S.Sigma, S.Sigma)):
        with pytest.raises((NotImplementedError, ValueError)):
            generate_function("f", (S.Sigma, S.beta, y), [expr])

    class MyExp(sp.exp):  # a subclass of a mapped function is not printed as that function
        pass

    with pytest.raises(NotImplementedError, match="MyExp"):
        generate_function("f", (S.beta,), [MyExp(S.beta)])

    undefined_exp = sp.Function("exp")  # an undefined function that only shares exp's name
    with pytest.raises(NotImplementedError, match="exp"):
        generate_function("f", (S.beta,), [undefined_exp(S.beta)])


@pytest.mark.parametrize("name", ["softmax", "l2", "sinkhorn", "multihead", "affine"])
def test_size_laid_out_functions_equal_the_matmul_source(name):
    """`functions` (products laid out by size) and `matmul_functions` (the documented `@` source)
    are the same functions up to rounding, at d = 3 (every product unrolled)."""
    der = gf.derive(name)
    assert " @ " in der.jax_source
    rng = np.random.default_rng(3)
    vals = _values(rng, der.params)
    p = [vals[s] for s in der.params]
    a, Sg, x = vals[S.alpha], vals[S.Sigma], vals[S.x]
    Phi = np.eye(3) + 0.1 * rng.normal(size=(3, 3))
    calls = {"closure": (0.0, a, Sg, *p), "moment_rhs": (0.0, a, Sg, *p),
             "velocity": (0.0, x, a, Sg, *p), "flow_rhs": (0.0, a, Phi, Sg, *p)}
    for fn, args in calls.items():
        got, want = der.functions[fn](*args), der.matmul_functions[fn](*args)
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-12, atol=1e-13,
                                       err_msg=f"{name}.{fn}")


@pytest.mark.parametrize("shape", [(3, 1, 3), (5, 5, 1), (6, 6, 6), (8, 7, 8), (2, 12, 3)])
def test_matmul_by_size_equals_matmul_batched_and_alone(shape):
    from gaussflow.codegen.compile import UNROLL_MAX, matmul_by_size

    n, k, m = shape
    rng = np.random.default_rng(k)
    A, B = rng.normal(size=(4, n, k)), rng.normal(size=(4, k, m))
    want = A @ B
    np.testing.assert_allclose(np.asarray(jax.vmap(matmul_by_size)(A, B)), want, rtol=1e-13,
                               atol=1e-13)
    np.testing.assert_allclose(np.asarray(matmul_by_size(A[0], B[0])), want[0], rtol=1e-13,
                               atol=1e-13)
    # the layout is chosen by the inner dimension: unrolled products contain no dot
    hlo = jax.jit(matmul_by_size).lower(A[0], B[0]).as_text()
    assert ("dot" in hlo) == (k > UNROLL_MAX)
