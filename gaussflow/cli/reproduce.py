"""`gaussflow reproduce`: the reference figures (regimes, rank histograms, clustering), and on
request the regime maps and the mean-field figure (`--only maps`, `--only meanfield`)."""

from __future__ import annotations

import argparse
import json
import sys

from ._common import fmt, report_files


def add(sub: argparse._SubParsersAction) -> None:
    """Register the `reproduce` subcommand on the subparsers `sub`."""
    p = sub.add_parser("reproduce", help="reproduce the reference figures (regimes, rank histograms, "
                       "clustering)",
                       description="Reproduce the reference experiments: the six 2-D regimes for softmax, "
                       "L2, multi-head and Sinkhorn (unit disk and PSD cone), the rank histograms "
                       "(d = 3, 4, 5), a d = 8 clustering figure (closure vs mirrored particles) "
                       "and the closure-particle gap against N for independent vs mirrored "
                       "clouds. Writes "
                       "PNG/PDF figures, summary.json and report.html (one self-contained page: "
                       "figures, key numbers, the command).",
                       **fmt("gaussflow reproduce --quick --out figures/"))
    p.add_argument("--out", default="gaussflow-reproduce", help="output folder "
                   "(default ./gaussflow-reproduce)")
    p.add_argument("--quick", action="store_true",
                   help="small grids and fewer draws (about 3 min on 2 cores)")
    p.add_argument("--only", choices=["regimes", "ranks", "clustering", "clustering_gap", "maps",
                                      "meanfield", "depth", "model"],
                   action="append", help="run only this part (repeatable; 'maps', 'meanfield', "
                   "'depth' and 'model' run only when named)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines (errors and --json only)")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Run `gaussflow.reproduce.reproduce` on the parsed arguments (`--out`, `--quick`, `--only`,
    `--json`); the exit status (0 on success)."""
    from ..progress import reproduce_notice
    from ..reproduce import PARTS, reproduce

    parts = tuple(args.only) if args.only else PARTS
    from ..report import write_study_report

    notice = None if args.quiet else reproduce_notice(parts, args.quick)
    if notice:
        print(f"gaussflow reproduce: {notice}", file=sys.stderr, flush=True)
    summary = reproduce(args.out, quick=args.quick, parts=parts, progress=not args.quiet,
                        log=(lambda *a, **k: None) if args.quiet else print)
    summary["report"] = write_study_report(args.out, "gaussflow reproduce: " + ", ".join(parts),
                                           summary, getattr(args, "command_line", None))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    if args.quiet:
        return 0
    report_files(summary["seconds"]["total"], args.out, summary["files"])
    print(f"report: {summary['report']}")
    return 0
