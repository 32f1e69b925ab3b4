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
    print(f"done in {summary['seconds']:.1f} s; files written to {os.path.abspath(args.out)}:")
    for f in summary["files"]:
        print(f"  {f}")
    return 0


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
    p.set_defaults(func=_cmd_reproduce)


def _cmd_reproduce(args):
    from .reproduce import reproduce

    parts = tuple(args.only) if args.only else ("regimes", "ranks", "clustering")
    summary = reproduce(args.out, quick=args.quick, parts=parts)
    print(f"done in {summary['seconds']['total']:.1f} s; files written to "
          f"{os.path.abspath(args.out)}:")
    for f in summary["files"]:
        print(f"  {f}")
    return 0


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
    or ``~/.cache/gaussflow/jax``); ``path = ""`` or ``"off"`` leaves it off. Returns the folder."""
    import jax

    if path is None:
        path = os.environ.get("GAUSSFLOW_CACHE_DIR",
                              os.path.join(os.path.expanduser("~"), ".cache", "gaussflow", "jax"))
    if path in ("", "off"):
        return None
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return path


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
    p.set_defaults(func=_cmd_validate)


def _int_list(name, text):
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--{name} must be comma-separated integers, got {text!r}") from None


def _cmd_validate(args):
    from .validate import example, validate

    field, g0, _ = example(args.variant, d=args.d, seed=args.seed)
    rep = validate(field, g0, args.t1, n_particles=_int_list("n", args.n),
                   seeds=_int_list("seeds", args.seeds))
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"validate-{args.variant}")
    png = rep.plot(stem)
    with open(stem + ".json", "w") as fh:
        fh.write(rep.to_json())
    print(rep.to_json() if args.json else rep)
    if not args.json:
        print(f"plot: {png}\nreport: {stem}.json")
    return 0 if rep.ok else 1


COMMANDS = [_add_run, _add_derive, _add_reproduce, _add_bench, _add_validate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        enable_compilation_cache(args.cache_dir)
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as e:
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"gaussflow: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
