"""Clustering in d = 8: normalised spectrum against depth for a random multi-layer softmax
schedule, from the Gaussian closure and from particles, on the same axes.

    python examples/clustering.py [--quick] [--out DIR]
"""
import argparse
import os
import sys

from gaussflow.reproduce import clustering


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 layers, 256 particles")
    p.add_argument("--out", default="figures", help="output folder (default ./figures)")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    _, files = clustering(a.out, quick=a.quick)
    print("\n".join(files))
    return files


if __name__ == "__main__":
    main(sys.argv[1:])
