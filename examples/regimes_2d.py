"""The six 2-D regimes of DESIGN.md §6 (softmax, L2, multi-head H=2, Sinkhorn): normalised
covariance paths on the unit disk and in the PSD cone, classified by gf.theory.classify.

    python examples/regimes_2d.py [--quick] [--out DIR]
"""
import argparse
import sys

from gaussflow.reproduce import regimes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small grid of initial covariances")
    p.add_argument("--out", default="figures", help="output folder (default ./figures)")
    a = p.parse_args(argv)
    import os
    os.makedirs(a.out, exist_ok=True)
    _, files = regimes(a.out, quick=a.quick)
    print("\n".join(files))
    return files


if __name__ == "__main__":
    main(sys.argv[1:])
