"""`gaussflow bench`: the benchmarks of a source checkout."""

from __future__ import annotations

import argparse
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
                       "closure_vs_particles, cli_cold (default all).",
                       **fmt("gaussflow bench --quick rhs_codegen particle_step"))
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default all)")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=cmd)


def benchmarks_package() -> types.ModuleType:
    """Import `benchmarks` from the checkout this package sits in (it is not installed).

    Raises `UsageError` outside a source checkout.
    """
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(root, "benchmarks", "__init__.py")):
        raise UsageError("the benchmarks are not installed with the package: run `gaussflow "
                         "bench` from a source checkout (pip install -e .)")
    if root not in sys.path:
        sys.path.insert(0, root)
    import benchmarks

    return benchmarks


def cmd(args: argparse.Namespace) -> int:
    """Run the named benchmarks (default all); `--json` also writes the results. Exit code 0."""
    if args.json is not None:
        prepare_file(args.json, "--json")
    bm = benchmarks_package()
    bad = [n for n in args.names if n not in bm.NAMES]
    if bad:
        raise UsageError(f"unknown benchmark(s) {', '.join(bad)}; choose from "
                         f"{', '.join(bm.NAMES)}")
    results = bm.run(args.names or None, quick=args.quick)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=float)
    return 0
