"""Write the example notebooks `examples/*.ipynb` (without outputs) from the cells below.

    python -m scripts.make_notebooks          # rewrite examples/*.ipynb
    python -m scripts.make_notebooks --check  # exit 1 if a committed notebook differs

Edit the cells here, not the `.ipynb` files: `tests/test_notebooks.py` checks that the two agree
and executes every notebook headless with nbclient. Each notebook runs in well under a minute on
2 CPU cores (small dimensions, short `t1`, small N).
"""

from __future__ import annotations

import argparse
import os
import sys

import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")

# Each notebook: a list of ("md" | "code", source).
NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "derive": [
        ("md", r"""# Deriving a variant's Gaussian closure

`gf.derive(name)` runs the SymPy Gaussian calculus on a variant's declaration (its score, its
normalisation, its value map) and returns a `Derivation`: the steps, the ODEs for the mean
$\alpha$ and the covariance $\Sigma$ of $\mathcal N(\alpha, \Sigma)$, and the generated JAX.
A `Derivation` renders itself as LaTeX in a notebook."""),
        ("code", """import gaussflow as gf

d = gf.derive("softmax")
d"""),
        ("md", r"""For softmax the velocity is affine in $x$, so the closure is exact:
$\dot\alpha = \Gamma(\alpha)$, $\dot\Sigma = J\Sigma + \Sigma J^\top$. The same as plain text:"""),
        ("code", """print(d.text())"""),
        ("md", """The generated JAX source (the solver integrates `flow_rhs`):"""),
        ("code", """print(d.jax_source[:1200])"""),
        ("md", """Which built-in closures are exact, and which are moment projections:"""),
        ("code", """for name in ["softmax", "l2", "sinkhorn", "sigmoid", "unnormalized"]:
    der = gf.derive(name)
    print(f"{name:13s} exact={der.exact}  projection={der.projection}")"""),
    ],
    "solve": [
        ("md", r"""# Solving and classifying a flow

`gf.solve` integrates the closure with diffrax; `gf.theory.classify` says what the trajectory
does (collapse, convergence to a low-rank limit, finite-time blow-up, growth, stationary).
Softmax with $W_O V = I$ has $\Sigma(t)^{-1} = \Sigma_0^{-1} - t\beta (A + A^\top)$,
$A = K^\top Q$: it blows up as soon as $A + A^\top$ has a positive direction."""),
        ("code", """import numpy as np
import gaussflow as gf

rng = np.random.default_rng(0)
Q, K = rng.normal(size=(2, 2, 3))
g0 = gf.Gaussian(mean=np.zeros(3), cov=np.eye(3))
field = gf.Softmax(Q, K, V=np.eye(3), beta=1 / np.sqrt(2))
traj = gf.solve(field, g0, t1=5.0)
print(traj.status, traj.blowup_time, "closed form:", gf.theory.blowup_time(field, g0))
print(gf.theory.classify(traj))"""),
        ("md", r"""With $K = -Q$ the score is $-\beta\langle Qx, Qy\rangle$: $A + A^\top$ is negative
definite and the tokens collapse onto their mean (a well-conditioned $Q$, so that the collapse is
clear by $t = 20$; an ill-conditioned one first flattens $\Sigma$ onto a line)."""),
        ("code", """Qc = np.eye(3) + 0.2 * np.random.default_rng(1).normal(size=(3, 3))
collapsing = gf.Softmax(Qc, -Qc, V=np.eye(3), beta=0.5)
traj_c = gf.solve(collapsing, g0, t1=20.0)
print(traj_c.status, gf.theory.classify(traj_c))"""),
        ("md", r"""A trajectory displays itself as a compact table (status, time range, final state;
for large $d$ the covariance is summarised by its trace, effective rank and top eigenvalues)
with a small figure of the eigenvalues of $\Sigma(t)$:"""),
        ("code", """traj_c"""),
        ("code", """from gaussflow import plots

fig = plots.eigenvalues([traj, traj_c], labels=["blow-up", "collapse"], normalised=True,
                        title="normalised spectrum of Sigma(t)")"""),
    ],
    "validate": [
        ("md", r"""# Validating a closure against particles

`gf.validate` draws $N$ tokens from $\mathcal N(\alpha_0, \Sigma_0)$, moves them with the
interacting particle system (the attention of each token over all the others), and compares
their empirical mean and covariance with the closure. For an exact closure the error should
fall like $N^{-1/2}$. Small $N$ and a short horizon keep this quick."""),
        ("code", """import numpy as np
import gaussflow as gf

rng = np.random.default_rng(1)
Q, K = 0.5 * rng.normal(size=(2, 2, 2))
field = gf.Softmax(Q, K, V=np.eye(2), beta=1.0)
g0 = gf.Gaussian(mean=np.array([0.5, -0.2]), cov=np.array([[1.0, 0.3], [0.3, 0.6]]))
report = gf.validate(field, g0, t1=1.0, n_particles=(128, 256, 512), seeds=(0, 1, 2))
print(report)"""),
        ("code", """print("verdict:", report.verdict)
fig = report.plot()"""),
        ("md", """The report also displays itself as a table with a small figure (errors and slopes
per quantity, the verdict and its reasons):"""),
        ("code", """report"""),
    ],
    "regime_map": [
        ("md", r"""# A small regime map

49 softmax flows in $d = 2$ with $Q = I$, $K = \mathrm{diag}(a, b)$, $W_O V = I$, integrated
together by one `gf.sweep` and classified by `gf.theory.classify`. With
$\Sigma(t)^{-1} = \Sigma_0^{-1} - t(A + A^\top)$: a positive $a$ or $b$ gives a finite-time
blow-up, $a, b < 0$ a collapse, and on the axes ($a = 0$ or $b = 0$) the flow converges to a
rank-one limit (or stays put at $a = b = 0$). Those limits are approached like $1/t$, hence
the long horizon, with steps taken in $\log(1 + t)$."""),
        ("code", """from collections import Counter

import numpy as np
import matplotlib.pyplot as plt
import gaussflow as gf

grid = np.linspace(-1.0, 1.0, 7)
params = [(a, b) for a in grid for b in grid]
fields = [gf.Softmax(np.eye(2), np.diag([a, b]), np.eye(2), beta=1.0) for a, b in params]
g0 = gf.Gaussian(mean=np.zeros(2), cov=np.array([[1.0, 0.3], [0.3, 0.5]]))
result = gf.sweep(fields, g0, t1=200.0, time_scale="log")  # log steps: long runs, few steps
regimes = [gf.theory.classify(result.member(i)) for i in range(len(result))]
print(result)
print("regimes:", dict(Counter(r.kind for r in regimes)))"""),
        ("code", """colors = {"collapse": "tab:blue", "converge": "tab:green", "blowup": "tab:red",
          "growth": "tab:orange", "stationary": "tab:gray", "undetermined": "black"}
fig, ax = plt.subplots(figsize=(4.5, 4))
for kind in colors:
    pts = np.array([p for p, r in zip(params, regimes) if r.kind == kind]).reshape(-1, 2)
    if len(pts):
        ax.scatter(pts[:, 0], pts[:, 1], c=colors[kind], label=kind, s=60)
ax.set_xlabel("a"); ax.set_ylabel("b"); ax.set_title("softmax, K = diag(a, b)")
ax.legend(loc="upper left", fontsize=8);"""),
    ],
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook `name` (cells without outputs)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in NOTEBOOKS[name]:
        cell = (nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell)(source)
        cell.pop("id", None)  # no random cell ids: the files are reproducible
        nb.cells.append(cell)
    nb.nbformat, nb.nbformat_minor = 4, 4  # cell ids came with 4.5
    return nb


def path(name: str) -> str:
    return os.path.join(EXAMPLES, f"{name}.ipynb")


def render(name: str) -> str:
    return nbformat.writes(build(name)) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check the committed notebooks")
    args = ap.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        text = render(name)
        current = open(path(name), encoding="utf-8").read() if os.path.exists(path(name)) else None
        if current != text:
            stale.append(path(name))
            if not args.check:
                with open(path(name), "w", encoding="utf-8") as fh:
                    fh.write(text)
    for p in stale:
        print(("stale: " if args.check else "wrote: ") + os.path.relpath(p, ROOT))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
