"""``python -m benchmarks [--quick] [--json FILE] [NAMES...]``."""

from __future__ import annotations

import argparse
import json
import sys

from . import NAMES, run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run ({', '.join(NAMES)}); "
                   "default all")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds, for tests)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    bad = [n for n in args.names if n not in NAMES]
    if bad:
        p.error(f"unknown benchmark(s) {', '.join(bad)}; choose from {', '.join(NAMES)}")
    results = run(args.names or None, quick=args.quick)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
