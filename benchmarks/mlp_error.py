"""Measured error of the MLP closure (`gf.MLP`, GELU) against its particle system.

For each dimension d and scale of W1 (`gf.MLP.example(d, seed=0, scale=...)`: width 2d,
W1 = scale G1 / sqrt(d), W2 = G2 / sqrt(2d)), `gf.validate` compares the closure with scrambled
Sobol clouds (N = 4096, 16384; seeds 0, 1) up to t1 = 1 and fits the bias b of
e^2 = b^2 + C^2/N (mean: in units of the spread; cov: relative Frobenius error, max over time).
Prints a Markdown table (the README's). Run from the repository root:
`python benchmarks/mlp_error.py [activation]`.
"""

import sys
import time

import gaussflow as gf


def main(activation="gelu", dims=(2, 4, 8), scales=(0.25, 0.5, 1.0)):
    print(f"| d | scale of W1 | mean bias | cov bias | cov error at N=16384 |  ({activation})")
    print("|---|---|---|---|---|")
    for d in dims:
        for scale in scales:
            t = time.time()
            f, g0, t1 = gf.MLP.example(d, 0, scale=scale, activation=activation)
            rep = gf.validate(f, g0, t1, n_particles=(4096, 16384), seeds=(0, 1),
                              sampler="sobol")
            print(f"| {d} | {scale} | {rep.mean.bias:.1e} | {rep.cov.bias:.1e} | "
                  f"{rep.cov.rms[-1]:.1e} |  ({time.time() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:2])
