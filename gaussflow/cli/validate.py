"""`gaussflow validate`: a variant's closure against its particle system."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ._common import UsageError, fmt, int_list


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a variant's closure against its particle system",
                       description="Sample particles from a Gaussian, start the closure from their "
                       "empirical moments, integrate both and report the error against N (see "
                       "gaussflow.validate). Weights are random (--seed) and moderate (see "
                       "gaussflow.validation.example). Writes validate-VARIANT.png/.pdf/.json and "
                       "validate-VARIANT.html (one self-contained page: figure, key numbers, "
                       "the command). Exit code 1 if an exact closure is "
                       "inconsistent or the check is inconclusive.",
                       **fmt("gaussflow validate softmax --d 3 --n 256,1024,4096 --out val/"))
    p.add_argument("variant", help="softmax, multihead, l2, sinkhorn, affine, sigmoid, unnormalized")
    p.add_argument("--d", type=int, default=3, help="token dimension (default 3)")
    p.add_argument("--t1", type=float, default=1.0, help="final time (default 1)")
    p.add_argument("--n", default="256,1024,4096", help="particle counts (default 256,1024,4096)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="sampling seeds (default 0,1,2,3,4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--sampler", default="random", choices=("random", "antithetic", "sobol"),
                   help="how clouds are drawn: independent (default), mirrored pairs x, "
                   "2 alpha - x (exact empirical mean) or scrambled Sobol points")
    p.add_argument("--out", default="gaussflow-out", help="folder for the plot and JSON")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no printed report "
                   "(errors and --json only)")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    from .._checks import as_scalar
    from ..display import validation_numbers
    from ..progress import validate_notice
    from ..report import write_report
    from ..validation import check_seeds, check_sizes, example, validate

    ns, seeds = int_list("n", args.n), int_list("seeds", args.seeds)
    check_sizes(ns, max(args.d, 1)), check_seeds(seeds)  # before any work
    try:
        as_scalar("t1", args.t1, positive=True)
    except ValueError as e:
        raise UsageError(f"--{e}") from None
    field, g0, _ = example(args.variant, d=args.d, seed=args.seed)
    notice = None if args.quiet else validate_notice(field, args.d, ns, seeds, args.t1)
    if notice:
        print(f"gaussflow validate {args.variant}: {notice}", file=sys.stderr, flush=True)
    rep = validate(field, g0, args.t1, n_particles=ns,
                   seeds=seeds, sampler=args.sampler, progress=not args.quiet)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"validate-{args.variant}")
    png = rep.plot(stem)
    with open(stem + ".json", "w") as fh:
        fh.write(rep.to_json())
    html = write_report(stem + ".html", f"gaussflow validate {args.variant}",
                        validation_numbers(rep), [png], getattr(args, "command_line", None),
                        [stem + ".json"])
    if args.json:
        print(json.dumps({**rep.to_dict(), "files": {"plot": png, "json": stem + ".json",
                                                     "report": html}}, indent=2))
    elif not args.quiet:
        print(rep)
        print(f"plot: {png}\njson: {stem}.json\nreport: {html}")
    return 0 if rep.ok else 1
