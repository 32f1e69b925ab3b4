r"""The causal-mask rule: a block of tokens moves under the field of its moment-matched prefix.

Tokens carry a position; with $B$ position blocks of equal mass, block $b$ sees the mixture
$\mu_{\le b} = \frac{1}{b+1} \sum_{c \le b} \mathcal N(\alpha_c, \Sigma_c)$. `derive_masked`
replaces that mixture by its moment-matched Gaussian $\mathcal N(\alpha_p, \Sigma_p)$ (law of total
covariance, built recursively with weight $p = b/(b+1)$), evaluates the inner variant's exact
velocity under it, and applies the affine closure rule to the block's own Gaussian
$\mathcal N(\alpha, \Sigma)$.
"""

from __future__ import annotations

import sympy as sp
from sympy import MatrixSymbol

from . import symbols as S
from .calculus import affine_closure, moment_match_mixture, simplify_matrix
from .derivation import Derivation, Program, Step
from .special import SinkhornFactor, SqrtPSD

#: Symbols of the masked derivation: prefix moments and the mixture weight $p$.
ALPHA_LT = MatrixSymbol("alpha_lt", S.d, 1)
SIGMA_LT = MatrixSymbol("Sigma_lt", S.d, S.d)
ALPHA_P = MatrixSymbol("alpha_p", S.d, 1)
SIGMA_P = MatrixSymbol("Sigma_p", S.d, S.d)
P = sp.Symbol("p", nonnegative=True)

PROJECTION = "moment-matched prefix mixture (one Gaussian per position block)"


def freeze_constants(expr: sp.Basic, x: MatrixSymbol) -> tuple:
    """Replace the `x`-free matrix square roots and inverses of `expr` by placeholder symbols.

    Differentiating in `x` then never enters those nodes (SymPy's matrix derivative does not
    terminate on a square root of a product that holds an inverse, as in the realised Sinkhorn
    velocity).

    Parameters
    ----------
    expr : sympy.Basic
        A matrix expression.
    x : MatrixSymbol
        The variable of differentiation.

    Returns
    -------
    tuple
        `(frozen, back, symmetric)`: `frozen` has the placeholders `Z_k`; `back` maps them to
        the nodes they stand for (`frozen.xreplace(back) == expr`); `symmetric` lists the
        placeholders of square roots and Sinkhorn factors (symmetric matrices).
    """
    nodes = []
    for node in sp.preorder_traversal(expr):
        opaque = isinstance(node, (SqrtPSD, SinkhornFactor, sp.Inverse)) or (
            isinstance(node, sp.MatPow) and node.exp.is_negative)
        if opaque and not node.has(x) and node not in nodes:
            nodes.append(node)
    back, fwd, symmetric = {}, {}, []
    for k, node in enumerate(nodes):
        z = MatrixSymbol(f"Z_{k}", *node.shape)
        back[z], fwd[node] = node, z
        if isinstance(node, (SqrtPSD, SinkhornFactor)):
            symmetric.append(z)
    return expr.xreplace(fwd), back, tuple(symmetric)


def derive_masked(inner: Derivation, name: str | None = None) -> Derivation:
    r"""The masked closure of an exact inner derivation (affine velocity under a Gaussian).

    The inner velocity is evaluated at the prefix moments ($\alpha \to \alpha_p$,
    $\Sigma \to \Sigma_p$, inside matrix square roots too: for Sinkhorn, the closure of the
    prefix Gaussian's self-coupling); its $x$-free square roots and inverses are frozen
    (`freeze_constants`) while the affine closure rule differentiates in $x$.

    Generated functions: `prefix_moments(alpha_lt, Sigma_lt, alpha, Sigma, p)` (the mixture
    rule), `block_velocity(t, x, alpha_p, Sigma_p, *params)` and
    `block_closure(t, alpha, Sigma, alpha_p, Sigma_p, *params)` ($(d\alpha/dt, J)$ of the block).

    Parameters
    ----------
    inner : Derivation
        The exact derivation of the unmasked variant (its velocity is affine in $x$).
    name : str, optional
        The masked derivation's name (default `"masked <inner name>"`).

    Returns
    -------
    Derivation
        The approximate (moment-matched prefix) closure of one position block.

    Raises
    ------
    ValueError
        When `inner` is not exact.
    """
    if not inner.exact:
        raise ValueError(f"the causal-mask rule needs an exact inner closure; {inner.name!r} is "
                         f"approximate ({inner.projection})")
    name = name or f"masked {inner.name}"
    sym = (S.Sigma, SIGMA_LT, SIGMA_P)
    mix = moment_match_mixture([P, 1 - P], [ALPHA_LT, S.alpha], [SIGMA_LT, S.Sigma])
    velocity = simplify_matrix(inner.velocity.xreplace({S.alpha: ALPHA_P, S.Sigma: SIGMA_P}), sym)
    frozen, back, sym_z = freeze_constants(velocity, S.x)
    cl = affine_closure(frozen, S.x, S.alpha, S.Sigma, (SIGMA_P, *sym_z))
    cl = type(cl)(**{k: v.xreplace(back) for k, v in vars(cl).items()})
    kernel = [ex for st in inner.steps if st.title == "Kernel" for ex in st.exprs]
    steps = [
        Step("Causal kernel",
             f"A token at position $s$ weighs a key at $s'$ as in `gaussflow derive {inner.name}`, "
             "times $1\\{s' \\le s\\}$. With $B$ blocks of equal mass, block $b$ sees the "
             "mixture $\\mu_{\\le b} = \\frac{1}{b+1}\\sum_{c \\le b} \\mathcal N(\\alpha_c, \\Sigma_c)$ "
             "(its own block included).", tuple(kernel)),
        Step("Moment-matched prefix (mixture rule)",
             "Replace the prefix mixture by the Gaussian with its mean and covariance (law of total "
             "covariance), recursively: $\\mu_{\\le b} = p\\,\\mu_{<b} + (1-p)\\,\\mathcal N(\\alpha, "
             "\\Sigma)$ with $p = b/(b+1)$:",
             ((r"\alpha_{\le b}", mix.mean), (r"\Sigma_{\le b}", mix.cov))),
        Step("Block velocity",
             f"Block $b$ moves under the {inner.name} field of $\\mathcal N(\\alpha_p, \\Sigma_p) = "
             "\\mathcal N(\\alpha_{\\le b}, \\Sigma_{\\le b})$:", ((r"\Gamma_{\le b}(x)", velocity),)),
        Step("Affine closure per block",
             "$\\Gamma_{\\le b}$ is affine in $x$, so block $b$ (law $\\mathcal N(\\alpha, \\Sigma)$) "
             "stays Gaussian:",
             (("J_b", cl.jacobian), (r"\frac{d\alpha_b}{dt}", cl.mean_rhs),
              (r"\frac{d\Sigma_b}{dt}", cl.cov_rhs))),
    ]
    notes = (
        "Approximation: each prefix mixture is moment-matched to one Gaussian, and a token sees "
        "its whole block; exact when every block carries the same Gaussian (then the prefix "
        f"mixture is that Gaussian and the closure is the unmasked {inner.name} closure).",
        "alpha, Sigma are the block's own moments; alpha_p, Sigma_p its prefix moments (from "
        "prefix_moments).",
    )
    params = inner.params
    programs = (
        Program("prefix_moments", (ALPHA_LT, SIGMA_LT, S.alpha, S.Sigma, P), (mix.mean, mix.cov),
                "Moments of p N(alpha_lt, Sigma_lt) + (1 - p) N(alpha, Sigma).",
                symmetric=(S.Sigma, SIGMA_LT)),
        Program("block_velocity", (S.t, S.x, ALPHA_P, SIGMA_P, *params), (velocity,),
                "Gamma_{<=b}(x): the inner field under the prefix Gaussian.", params,
                symmetric=(SIGMA_P,)),
        Program("block_closure", (S.t, S.alpha, S.Sigma, ALPHA_P, SIGMA_P, *params),
                (cl.mean_rhs, cl.jacobian), "(d alpha_b/dt, J_b) of block b.", params,
                symmetric=(S.Sigma, SIGMA_P)),
    )
    return Derivation(name=name, exact=False, params=params, velocity=velocity,
                      mean_rhs=cl.mean_rhs, jacobian=cl.jacobian, cov_rhs=cl.cov_rhs,
                      steps=tuple(steps), notes=notes, projection=PROJECTION, programs=programs,
                      runtime=dict(inner.runtime))
