"""`gaussflow bench`: the benchmarks of a source checkout."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import types

from ._common import UsageError, fmt, prepare_file


def add(sub: argparse._SubParsersAction) -> None:
    """Register the `bench` subcommand on `sub` (the subparsers of the `gaussflow` parser)."""
    p = sub.add_parser("bench", help="run the benchmarks (gaussflow vs baselines, same process)",
                       description="Run the benchmarks of the benchmarks/ package of a gaussflow "
                       "checkout; each prints its ratio against a baseline measured in the same "
                       "process. Names: rank_sweep, rhs_codegen, many_flows, particle_step, "
                       "closure_vs_particles, cli_cold, sinkhorn_speed, layout, scaling "
                       "(default all).",
                       **fmt("gaussflow bench --quick rhs_codegen particle_step"))
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default all)")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="print the results as JSON (or write them to FILE)")
    p.add_argument("--quiet", action="store_true", help="no tables (with --json: only the JSON)")
    p.set_defaults(func=cmd)


def _checkout_roots() -> list[str]:
    """Folders that may hold the checkout's `benchmarks/`: the one this package sits in (an
    editable install), then the working directory and its parents (`pip install .` copies the
    package elsewhere, but the checkout is usually where the command runs)."""
    roots = [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
    here = os.path.abspath(os.getcwd())
    while True:
        roots.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            return roots
        here = parent


def _is_checkout(root: str) -> bool:
    pyproject = os.path.join(root, "pyproject.toml")
    if not (os.path.isfile(os.path.join(root, "benchmarks", "__init__.py"))
            and os.path.isfile(pyproject)):
        return False
    with open(pyproject, encoding="utf-8", errors="replace") as fh:
        return 'name = "gaussflow"' in fh.read()


def benchmarks_package() -> types.ModuleType:
    """Import `benchmarks` from a gaussflow checkout (they are not installed with the package).

    The checkout is the folder the package sits in (editable install) or the working directory or
    one of its parents. Raises `UsageError` when there is none.
    """
    root = next((r for r in _checkout_roots() if _is_checkout(r)), None)
    if root is None:
        raise UsageError("the benchmarks are not installed with the package: run `gaussflow "
                         "bench` inside a gaussflow source checkout (the folder holding "
                         "benchmarks/ and pyproject.toml)")
    if root not in sys.path:
        sys.path.insert(0, root)
    import benchmarks

    return benchmarks


def cmd(args: argparse.Namespace) -> int:
    """Run the named benchmarks (default all); `--json` prints the results as JSON (`--json FILE`
    writes them); `--quiet` drops the tables. Exit code 0."""
    if args.json not in (None, "-"):
        prepare_file(args.json, "--json")
    bm = benchmarks_package()
    bad = [n for n in args.names if n not in bm.NAMES]
    if bad:
        raise UsageError(f"unknown benchmark(s) {', '.join(bad)}; choose from "
                         f"{', '.join(bm.NAMES)}")
    with contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext():
        results = bm.run(args.names or None, quick=args.quick)
    if args.json == "-":
        print(json.dumps(results, indent=2, default=float))
    elif args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=float)
    return 0
