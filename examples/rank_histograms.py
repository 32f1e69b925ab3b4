"""Rank of the limit covariance (d = 3, 4, 5; K = -Q; V = I or M^T M; softmax and L2).

    python examples/rank_histograms.py [--quick] [--out DIR]
"""
import argparse
import os
import sys

from gaussflow.reproduce import rank_histograms


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="8 draws per d instead of 100")
    p.add_argument("--draws", type=int, default=None, help="draws per d (overrides --quick)")
    p.add_argument("--dims", type=int, nargs="+", default=[3, 4, 5], help="dimensions (default 3 4 5)")
    p.add_argument("--out", default="figures", help="output folder (default ./figures)")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    _, files = rank_histograms(a.out, quick=a.quick, n_draws=a.draws, dims=tuple(a.dims))
    print("\n".join(files))
    return files


if __name__ == "__main__":
    main(sys.argv[1:])
