"""One attention layer of a BERT-style checkpoint: Gaussian closure vs the particle system.

Reads layer N's self-attention with ``gf.load_attention`` (heads, beta = 1/sqrt(k), W_O; what is
dropped is printed), integrates the exact multi-head closure from a Gaussian and compares it with
the N-token system driven by the same weights (``gf.validate``: error against N). Without
``--checkpoint`` it first writes a small random BERT-like checkpoint (d = 8, 2 heads) and uses it.

    python examples/bert_layer.py --checkpoint path/to/bert-base-uncased --layer 3 --out figs/
    python examples/bert_layer.py --quick --out figs/
"""
import argparse
import os
import sys
import time

import numpy as np

import gaussflow as gf
from gaussflow import plots, plots_regimes
from gaussflow.weights import read_attention, write_random_bert


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a .safetensors file or a folder with model.safetensors "
                   "(default: write a random d = 8 checkpoint into --out)")
    p.add_argument("--layer", type=int, default=0, help="layer index (default 0)")
    p.add_argument("--heads", type=int, default=None, help="heads (default: config.json)")
    p.add_argument("--t1", type=float, default=1.0, help="depth to integrate to (default 1)")
    p.add_argument("--scale", type=float, default=1.0, help="initial Gaussian N(0, scale^2 I) "
                   "(default 1: coordinates of order one, as after a layer norm)")
    p.add_argument("--bias", action="store_true", help="keep the value/output biases (gf.Affine)")
    p.add_argument("--quick", action="store_true", help="small particle counts, 2 seeds")
    p.add_argument("--out", default="figures", help="output folder (default ./figures)")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    t_start = time.time()

    ckpt = a.checkpoint or os.path.dirname(write_random_bert(os.path.join(a.out, "random-bert"),
                                                             d=8, heads=2, layers=1, seed=0,
                                                             scale=0.6))
    rec = read_attention(ckpt, layer=a.layer, heads=a.heads, with_bias=a.bias)
    field, info = rec.field, rec.info
    print(f"layer {info['layer']} of {info['file']}: d = {info['d']}, {info['heads']} heads of "
          f"size k = {info['k']}, beta = {info['beta']:.4g}")
    for s in rec.dropped:
        print(f"  dropped: {s}")

    d = info["d"]
    g0 = gf.Gaussian(np.zeros(d), a.scale**2 * np.eye(d))
    ts = np.linspace(0.0, a.t1, 11)
    traj = gf.solve(field, g0, a.t1, ts=ts)
    print(f"closure: {traj.status} at t = {traj.t_stop:.4g}")

    ns = (64, 256) if a.quick else (256, 1024, 4096)
    seeds = (0, 1) if a.quick else (0, 1, 2, 3)
    rep = gf.validate(field, g0, a.t1, n_particles=ns, seeds=seeds, ts=ts)
    print(rep)
    print(f"[{time.time() - t_start:.1f} s]")

    # particles of the largest N against the closure started from their own empirical moments
    x0 = gf.particles.sample(g0, ns[-1], seed=0)
    m0, S0 = (np.asarray(v) for v in gf.particles.empirical_moments(x0))
    part = gf.particles.simulate(field, x0, ts)
    clo = gf.solve(field, gf.Gaussian(m0, S0), a.t1, ts=ts)
    _, Sp = part.moments()

    def spectrum(S):
        w = np.linalg.eigvalsh(S)
        return w / w.sum(-1, keepdims=True)

    fig, axs = plots.plt.subplots(1, 2, figsize=(11, 4.2))
    plots_regimes.spectrum_depth(clo.ts, spectrum(clo.covs), ax=axs[0],
                         particles=(part.ts, spectrum(Sp)),
                         title=f"layer {info['layer']}: spectrum, closure vs N = {ns[-1]} tokens")
    plots.validation_errors(rep, ax=axs[1])
    fig.tight_layout()
    png = plots.save(fig, os.path.join(a.out, f"bert_layer{info['layer']}"))
    print(f"{png} [{time.time() - t_start:.1f} s]")
    return [png]


if __name__ == "__main__":
    main(sys.argv[1:])
