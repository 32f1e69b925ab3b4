"""`gaussflow run`: the embedded default study."""

from __future__ import annotations

import argparse
import json

from ._common import fmt, report_files


def add(sub: argparse._SubParsersAction) -> None:
    """Register the `run` subcommand on `sub` (the subparsers of the `gaussflow` parser)."""
    p = sub.add_parser("run", help="run the default study (softmax, d = 2) and write figures",
                       description="Run the embedded default study: softmax attention in d = 2 on "
                       "a grid of trace-one initial covariances, for collapsing and blowing-up "
                       "weights. Writes figures, summary.json/summary.md and report.html (one "
                       "self-contained page: figures, key numbers, the command).",
                       **fmt("gaussflow run --out results/"))
    p.add_argument("--out", default="gaussflow-out", help="output folder (default ./gaussflow-out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--quick", action="store_true", help="a smaller grid")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors (and --json)")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Run the default study (`gaussflow.study.run_study`) and print its outcome; exit code 0."""
    from ..study import run_study

    from ..report import write_study_report

    summary = run_study(args.out, seed=args.seed, quick=args.quick)
    summary["report"] = write_study_report(args.out, "gaussflow run: softmax, d = 2", summary,
                                           getattr(args, "command_line", None))
    if args.json:
        print(json.dumps({k: v for k, v in summary.items()}, indent=2))
        return 0
    if args.quiet:
        return 0
    for name, case in summary["cases"].items():
        st = ", ".join(f"{k}: {v}" for k, v in case["statuses"].items())
        rg = ", ".join(f"{k}: {v}" for k, v in case["regimes"].items())
        print(f"{name:10s} {len(case['runs'])} runs (status {st}; regime {rg})")
    report_files(summary["seconds"], args.out, summary["files"])
    print(f"report: {summary['report']}")
    return 0
