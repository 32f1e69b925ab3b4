"""The ``gaussflow`` command line.

Errors in the input (``ValueError``/``TypeError`` raised by gaussflow's checks, bad files) print one
line ``gaussflow: error: ...`` to stderr and exit with code 2; ``--debug`` shows the traceback.
Each subcommand lives in a ``_cmd_NAME`` function registered in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap


class UsageError(ValueError):
    """A user-facing error from the command line."""


def _fmt(example: str) -> dict:
    return {"epilog": "example:\n  " + example, "formatter_class": argparse.RawDescriptionHelpFormatter}


def _report_files(seconds, out, files) -> int:
    """Print the run time and the files a command wrote; exit code 0."""
    print(f"done in {seconds:.1f} s; files written to {os.path.abspath(out)}:")
    for f in files:
        print(f"  {f}")
    return 0


# ---------------------------------------------------------------------------------------- run
def _add_run(sub):
    p = sub.add_parser("run", help="run the default study (softmax, d = 2) and write figures",
                       description="Run the embedded default study: softmax attention in d = 2 on "
                       "a grid of trace-one initial covariances, for collapsing and blowing-up "
                       "weights. Writes figures and summary.json/summary.md.",
                       **_fmt("gaussflow run --out results/"))
    p.add_argument("--out", default="gaussflow-out", help="output folder (default ./gaussflow-out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--quick", action="store_true", help="a smaller grid")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args):
    from .study import run_study

    summary = run_study(args.out, seed=args.seed, quick=args.quick)
    if args.json:
        print(json.dumps({k: v for k, v in summary.items()}, indent=2))
        return 0
    for name, case in summary["cases"].items():
        st = ", ".join(f"{k}: {v}" for k, v in case["statuses"].items())
        print(f"{name:10s} {len(case['runs'])} runs ({st})")
    return _report_files(summary["seconds"], args.out, summary["files"])


# ------------------------------------------------------------------------------------- derive
def _add_derive(sub):
    p = sub.add_parser("derive", help="print the derived ODEs of a variant",
                       description="Derive a variant's Gaussian closure symbolically and print it "
                       "(plain text, LaTeX or Markdown). --all --out DIR writes one Markdown file "
                       "per variant.",
                       **_fmt("gaussflow derive softmax --latex\n  gaussflow derive --all --out derivations/"))
    p.add_argument("variant", nargs="?", help="variant name (softmax, ...)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--latex", action="store_true", help="print LaTeX")
    g.add_argument("--markdown", action="store_true", help="print the Markdown derivation")
    g.add_argument("--source", action="store_true", help="print the generated JAX source")
    p.add_argument("--all", action="store_true", help="every variant (with --out: write files)")
    p.add_argument("--out", help="folder for the Markdown files (with --all)")
    p.set_defaults(func=_cmd_derive)


def write_derivations(out_dir: str) -> list[str]:
    """Write ``out_dir/NAME.md`` for every registered variant; returns the paths."""
    from .derive import derive
    from .variants import VARIANTS

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in sorted(VARIANTS):
        path = os.path.join(out_dir, f"{name}.md")
        with open(path, "w") as fh:
            fh.write(derive(name).markdown())
        paths.append(path)
    return paths


def _cmd_derive(args):
    from .derive import derive
    from .variants import VARIANTS

    if args.all:
        if args.out:
            for p in write_derivations(args.out):
                print(p)
            return 0
        names = sorted(VARIANTS)
    else:
        if not args.variant:
            raise UsageError("derive needs a variant name (one of "
                             f"{', '.join(sorted(VARIANTS))}) or --all")
        names = [args.variant]
    for name in names:
        D = derive(name)
        if args.latex:
            print(D.latex())
        elif args.markdown:
            print(D.markdown())
        elif args.source:
            print(D.jax_source)
        else:
            print(D.text())
    return 0


# -------------------------------------------------------------------------------------- solve
#: Keys of a ``gaussflow solve --input`` file (``.npz`` or JSON), per variant. Every variant also
#: takes ``mean`` (d,), ``cov`` (d, d) (required) and ``t1`` (optional; ``--t1`` overrides it).
SOLVE_KEYS = {
    "softmax": (("Q", "K", "V"), ("W_O", "beta")),
    "l2": (("Q", "K", "V"), ("W_O", "c")),
    "sinkhorn": (("Q", "K", "V"), ("W_O", "beta", "eps")),
    "sigmoid": (("Q", "K", "V"), ("W_O", "beta", "bias")),
    "unnormalized": (("Q", "K", "V"), ("W_O", "beta")),
    "multihead": (("Q", "K", "V", "heads"), ("W_O", "beta")),
    "affine": (("W",), ("b",)),
}
_STATE_KEYS = (("cov",), ("mean", "t1"))

_SOLVE_DOC = """\
Integrate a variant's Gaussian closure from N(mean, cov) and write the trajectory
(solve-VARIANT.npz: ts, means, covs, status, t_stop, blowup_time (NaN unless blow-up)),
a JSON summary and figures (eigenvalues of Sigma and of Sigma/tr Sigma against depth; the
unit disk when d = 2) as PNG and PDF.

Weights and the initial Gaussian come from --input FILE (.npz or .json; JSON values are
numbers or nested lists), from --checkpoint (a BERT-style safetensors layer, multihead only;
the initial Gaussian is N(0, I) unless --input gives mean/cov), or are random (--d, --seed;
the moderate weights of gaussflow.validate.example).

Keys of --input (all variants: cov (d, d) required; mean (d,) default 0; t1):
  softmax, unnormalized   Q (k, d), K (k, d), V (k_v, d); optional W_O (d, k_v), beta
  l2                      Q, K, V; optional W_O, c
  sinkhorn                Q, K, V; optional W_O, beta, eps
  sigmoid                 Q, K, V; optional W_O, beta, bias
  multihead               Q, K (H k, d), V (H k_v, d) stacked by heads, heads (H);
                          optional W_O (d, H k_v), beta (default 1/sqrt(k))
  affine                  W (d, d); optional b (d,)
"""


def _add_solve(sub):
    p = sub.add_parser("solve", help="integrate a variant's closure; write trajectory and figures",
                       description=_SOLVE_DOC,
                       **_fmt("gaussflow solve softmax --d 2 --seed 1 --t1 3 --out sol/\n"
                              "  gaussflow solve l2 --input weights.npz --out sol/ --json\n"
                              "  gaussflow solve multihead --checkpoint bert/ --layer 0 --t1 1"))
    p.add_argument("variant", help=", ".join(SOLVE_KEYS))
    p.add_argument("--input", metavar="FILE", help="weights and initial Gaussian (.npz or .json)")
    p.add_argument("--checkpoint", metavar="PATH", help="BERT-style safetensors file or folder "
                   "(multihead; see gf.load_attention)")
    p.add_argument("--layer", type=int, default=0, help="layer of --checkpoint (default 0)")
    p.add_argument("--heads", type=int, default=None, help="heads of --checkpoint (default: "
                   "its config.json)")
    p.add_argument("--d", type=int, default=2, help="dimension of random weights (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights (default 0)")
    p.add_argument("--t1", type=float, default=None, help="final time (default: the file's t1, "
                   "else 1)")
    p.add_argument("--n-save", type=int, default=201, help="number of save times (default 201)")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance (default 1e-8)")
    p.add_argument("--atol", type=float, default=1e-10, help="absolute tolerance (default 1e-10)")
    p.add_argument("--out", default="gaussflow-out", help="output folder (default ./gaussflow-out)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress meter")
    p.set_defaults(func=_cmd_solve)


def read_arrays(path) -> dict:
    """The arrays of an ``.npz`` or JSON file as a dict (errors name the file and the fix)."""
    import numpy as np

    if not os.path.isfile(path):
        raise UsageError(f"input file {path!r} does not exist; pass an existing .npz or .json file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:
            raise UsageError(f"cannot read {path!r} as .npz ({type(e).__name__}: {e}); write it "
                             "with numpy.savez") from None
    if ext == ".json":
        try:
            with open(path) as fh:
                data = json.load(fh)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path!r} is not valid JSON ({e}); fix the file") from None
        if not isinstance(data, dict):
            raise UsageError(f"{path!r} must hold a JSON object of named arrays, e.g. "
                             '{"Q": [[1, 0], [0, 1]], ...}')
        return data
    raise UsageError(f"input file {path!r} must end in .npz or .json")


def _scalar_or_array(name, value):
    import numpy as np

    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise UsageError(f"input key {name!r} must be numeric, got {value!r}") from None
    return float(a) if a.ndim == 0 else a


def problem_from_arrays(variant, arrays, path="input"):
    """``(field, g0, t1 or None)`` from named arrays (keys in :data:`SOLVE_KEYS`)."""
    import numpy as np

    from .gaussian import Gaussian
    from .variants import VARIANTS

    if variant not in SOLVE_KEYS:
        raise UsageError(f"solve supports {', '.join(SOLVE_KEYS)}; got {variant!r}")
    required, optional = SOLVE_KEYS[variant]
    allowed = set(required) | set(optional) | {"mean", "cov", "t1"}
    unknown = sorted(set(arrays) - allowed)
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {', '.join(unknown)} for {variant}; allowed: "
                         f"{', '.join(sorted(allowed))}")
    missing = [k for k in required + ("cov",) if k not in arrays]
    if missing:
        raise UsageError(f"{path}: missing key(s) {', '.join(missing)} for {variant}; needed: "
                         f"{', '.join(required + ('cov',))} (see gaussflow solve --help)")
    a = {k: _scalar_or_array(k, v) for k, v in arrays.items()}
    cov = np.atleast_2d(a["cov"])
    mean = np.zeros(cov.shape[0]) if "mean" not in a else np.atleast_1d(a["mean"])
    g0 = Gaussian(mean, cov)
    t1 = a.get("t1")
    kw = {k: a[k] for k in optional if k in a}
    if variant == "affine":
        field = VARIANTS["affine"](a["W"], kw.get("b"))
    elif variant == "multihead":
        heads = a["heads"]
        if not float(heads).is_integer():
            raise UsageError(f"{path}: heads must be an integer, got {heads!r}")
        field = VARIANTS["multihead"].split(a["Q"], a["K"], a["V"], kw.get("W_O"), int(heads),
                                            beta=kw.get("beta"))
    else:
        field = VARIANTS[variant](a["Q"], a["K"], a["V"], **kw)
    return field, g0, t1


def _solve_problem(args):
    from .gaussian import Gaussian

    if args.checkpoint:
        if args.variant != "multihead":
            raise UsageError("--checkpoint gives a multi-head layer: use `gaussflow solve "
                             "multihead --checkpoint PATH`")
        from .weights import load_attention

        field = load_attention(args.checkpoint, layer=args.layer, heads=args.heads)
        g0, t1 = Gaussian.standard(field.dim), None
        if args.input:
            arr = read_arrays(args.input)
            extra = sorted(set(arr) - {"mean", "cov", "t1"})
            if extra:
                raise UsageError(f"{args.input}: with --checkpoint only mean, cov, t1 are read; "
                                 f"remove {', '.join(extra)}")
            import numpy as np

            if "cov" not in arr:
                raise UsageError(f"{args.input}: missing key cov (d, d)")
            cov = np.atleast_2d(np.asarray(arr["cov"], float))
            g0 = Gaussian(np.asarray(arr.get("mean", np.zeros(len(cov))), float), cov)
            t1 = arr.get("t1")
        return field, g0, t1, f"{args.checkpoint} layer {args.layer}"
    if args.input:
        field, g0, t1 = problem_from_arrays(args.variant, read_arrays(args.input), args.input)
        return field, g0, t1, args.input
    from .validate import example

    if args.variant not in SOLVE_KEYS:
        raise UsageError(f"solve supports {', '.join(SOLVE_KEYS)}; got {args.variant!r}")
    if args.d < 1:
        raise UsageError(f"--d must be a positive integer, got {args.d}")
    field, g0, _ = example(args.variant, d=args.d, seed=args.seed)
    return field, g0, None, f"random (d = {args.d}, seed = {args.seed})"


def _cmd_solve(args):
    import numpy as np

    from . import plots
    from .solve import solve

    field, g0, t1, source = _solve_problem(args)
    t1 = float(args.t1 if args.t1 is not None else (t1 if t1 is not None else 1.0))
    if not t1 > 0:
        raise UsageError(f"--t1 must be positive, got {t1}")
    if args.n_save < 2:
        raise UsageError(f"--n-save must be at least 2, got {args.n_save}")
    tr = solve(field, g0, t1, ts=np.linspace(0.0, t1, args.n_save), rtol=args.rtol,
               atol=args.atol, progress=not args.quiet)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"solve-{args.variant}")
    bt = np.nan if tr.blowup_time is None else tr.blowup_time
    np.savez(stem + ".npz", ts=tr.ts, means=tr.means, covs=tr.covs, status=np.array(tr.status),
             t_stop=np.array(tr.t_stop), blowup_time=np.array(bt))
    files = [stem + ".npz"]
    label = f"{field.name}, {source}"
    fig, axs = plots.plt.subplots(1, 2, figsize=(10, 4))
    plots.eigenvalues([tr], ax=axs[0])
    plots.eigenvalues([tr], ax=axs[1], normalised=True)
    fig.suptitle(f"{label}: {tr.status}" + ("" if tr.blowup_time is None
                                             else f", blow-up at t* = {tr.blowup_time:.4g}"),
                 fontsize=10)
    fig.tight_layout()
    files.append(plots.save(fig, stem + "-eigenvalues"))
    if g0.dim == 2:
        fig = plots.unit_disk([tr], labels=[rf"$\Sigma(t)/\mathrm{{tr}}\,\Sigma$, $t \in [0, {tr.t_stop:.3g}]$"],
                              title=label)
        files.append(plots.save(fig, stem + "-disk"))
    w = np.linalg.eigvalsh(tr.covs[-1])
    summary = {"variant": field.name, "exact": bool(field.exact), "source": source, "d": g0.dim,
               "t1": t1, "status": tr.status, "t_stop": float(tr.t_stop),
               "blowup_time": tr.blowup_time, "num_steps": tr.num_steps,
               "final_mean": np.asarray(tr.means[-1]).tolist(),
               "final_eigenvalues": w.tolist(), "files": files}
    with open(stem + ".json", "w") as fh:
        json.dump(summary, fh, indent=2)
    files.append(stem + ".json")
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    kind = "exact" if field.exact else "approximate"
    print(f"{field.name} ({kind} closure), d = {g0.dim}, {source}")
    line = f"status: {tr.status} at t = {tr.t_stop:.6g} ({tr.num_steps} steps)"
    if tr.blowup_time is not None:
        line += f"; blow-up time t* = {tr.blowup_time:.8g}"
    print(line)
    print("final eigenvalues of Sigma: " + ", ".join(f"{v:.4g}" for v in w))
    print("files: " + ", ".join(files))
    return 0


# ---------------------------------------------------------------------------------- reproduce
def _add_reproduce(sub):
    p = sub.add_parser("reproduce", help="reproduce the reference figures (regimes, rank histograms, "
                       "clustering)",
                       description="Reproduce DESIGN.md section 6: the six 2-D regimes for softmax, "
                       "L2, multi-head and Sinkhorn (unit disk and PSD cone), the rank histograms "
                       "(d = 3, 4, 5) and a d = 8 clustering figure (closure vs particles). Writes "
                       "PNG/PDF figures and summary.json.",
                       **_fmt("gaussflow reproduce --quick --out figures/"))
    p.add_argument("--out", default="gaussflow-reproduce", help="output folder "
                   "(default ./gaussflow-reproduce)")
    p.add_argument("--quick", action="store_true", help="small grids and fewer draws (< 2 min)")
    p.add_argument("--only", choices=["regimes", "ranks", "clustering"], action="append",
                   help="run only this part (repeatable)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_reproduce)


def _cmd_reproduce(args):
    from .reproduce import reproduce

    parts = tuple(args.only) if args.only else ("regimes", "ranks", "clustering")
    summary = reproduce(args.out, quick=args.quick, parts=parts)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    return _report_files(summary["seconds"]["total"], args.out, summary["files"])


# -------------------------------------------------------------------------------------- bench
def _add_bench(sub):
    p = sub.add_parser("bench", help="run the benchmarks (gaussflow vs baselines, same process)",
                       description="Run the benchmarks of the benchmarks/ package of a gaussflow "
                       "checkout; each prints its ratio against a baseline measured in the same "
                       "process. Names: rank_sweep, rhs_codegen, many_flows, particle_step, "
                       "closure_vs_particles, cli_cold (default all).",
                       **_fmt("gaussflow bench --quick rhs_codegen particle_step"))
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default all)")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=_cmd_bench)


def _benchmarks_package():
    """Import ``benchmarks`` from the checkout this package sits in (it is not installed)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(root, "benchmarks", "__init__.py")):
        raise UsageError("the benchmarks are not installed with the package: run `gaussflow "
                         "bench` from a source checkout (pip install -e .)")
    if root not in sys.path:
        sys.path.insert(0, root)
    import benchmarks

    return benchmarks


def _cmd_bench(args):
    bm = _benchmarks_package()
    bad = [n for n in args.names if n not in bm.NAMES]
    if bad:
        raise UsageError(f"unknown benchmark(s) {', '.join(bad)}; choose from "
                         f"{', '.join(bm.NAMES)}")
    results = bm.run(args.names or None, quick=args.quick)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=float)
    return 0


def enable_compilation_cache(path=None):
    """Switch on JAX's persistent compilation cache at ``path`` (default ``$GAUSSFLOW_CACHE_DIR``
    or ``~/.cache/gaussflow/jax``), after verifying its entries against gaussflow's manifest (see
    :mod:`gaussflow.cache`); ``path = ""`` or ``"off"`` leaves it off. Returns the folder."""
    from .cache import enable

    return enable(path)


# ----------------------------------------------------------------------------------- validate
def _add_validate(sub):
    p = sub.add_parser("validate", help="check a variant's closure against its particle system",
                       description="Sample particles from a Gaussian, start the closure from their "
                       "empirical moments, integrate both and report the error against N (see "
                       "gaussflow.validate). Weights are random (--seed) and moderate (see "
                       "gaussflow.validate.example). Exit code 1 if an exact closure is "
                       "inconsistent or the check is inconclusive.",
                       **_fmt("gaussflow validate softmax --d 3 --n 256,1024,4096 --out val/"))
    p.add_argument("variant", help="softmax, multihead, l2, sinkhorn, affine, sigmoid, unnormalized")
    p.add_argument("--d", type=int, default=3, help="token dimension (default 3)")
    p.add_argument("--t1", type=float, default=1.0, help="final time (default 1)")
    p.add_argument("--n", default="256,1024,4096", help="particle counts (default 256,1024,4096)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="sampling seeds (default 0,1,2,3,4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--out", default="gaussflow-out", help="folder for the plot and JSON")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_validate)


def _int_list(name, text):
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--{name} must be comma-separated integers, got {text!r}") from None


def _cmd_validate(args):
    from .validate import example, validate

    from ._checks import as_scalar
    from .validate import _check_seeds, _check_sizes

    ns, seeds = _int_list("n", args.n), _int_list("seeds", args.seeds)
    _check_sizes(ns, max(args.d, 1)), _check_seeds(seeds)  # before any work
    as_scalar("t1", args.t1, positive=True)
    field, g0, _ = example(args.variant, d=args.d, seed=args.seed)
    rep = validate(field, g0, args.t1, n_particles=ns,
                   seeds=seeds, progress=not args.quiet)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"validate-{args.variant}")
    png = rep.plot(stem)
    with open(stem + ".json", "w") as fh:
        fh.write(rep.to_json())
    print(rep.to_json() if args.json else rep)
    if not args.json:
        print(f"plot: {png}\nreport: {stem}.json")
    return 0 if rep.ok else 1


COMMANDS = [_add_run, _add_derive, _add_solve, _add_validate, _add_reproduce, _add_bench]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``gaussflow CMD: error: ...``), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gaussflow",
        description=textwrap.dedent("""\
            Mean-field dynamics of deep Transformers on Gaussian token distributions:
            derive closures symbolically, integrate them, validate against particles."""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="JAX persistent compilation cache (default $GAUSSFLOW_CACHE_DIR or "
                        "~/.cache/gaussflow/jax; 'off' disables it)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        out = getattr(args, "out", None)
        if isinstance(out, str) and os.path.exists(out) and not os.path.isdir(out):
            raise UsageError(f"--out {out} is a file; pass a folder name")
        enable_compilation_cache(args.cache_dir)
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, KeyError) as e:
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"gaussflow: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
