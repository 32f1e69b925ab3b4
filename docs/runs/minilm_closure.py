"""The closure part of attention_through_depth alone (same tokens' moments): blow-up depths."""
import time, numpy as np
from gaussflow import particles, theory
from gaussflow.depth import read_attention_layers, score_spread
from gaussflow.minilm import checkpoint_file, embedding_gaussian, minilm_folder
from gaussflow.gaussian import Gaussian
from gaussflow.integrate import solve
from gaussflow.variants import Layers
from gaussflow.weights import read_attention
file = checkpoint_file(minilm_folder())
recs = [read_attention(file, layer=i) for i in read_attention_layers(file)]
d = recs[0].info["d"]
schedule = Layers([(r.field, 1.0) for r in recs])
ts = np.arange(1, 6 * 4 + 1) / 4
for label, g0 in [("s=0.5", Gaussian(np.zeros(d), 0.25 * np.eye(d))), ("embeddings", embedding_gaussian(file, seed=0))]:
    x0 = particles.sample(g0, 1024, seed=0)
    m0, S0 = (np.asarray(a) for a in particles.empirical_moments(x0))
    t = time.perf_counter()
    clo = solve(schedule, Gaussian(m0, S0), 6.0, ts=ts, rtol=1e-6, atol=1e-9)
    print(label, clo, f"{time.perf_counter() - t:.1f} s", flush=True)
    tr0 = np.trace(S0)
    for tt, m, S in zip(clo.ts, clo.means, clo.covs):
        lay = min(int(np.floor(tt)), 5)
        print(f"  depth {tt:.4g}: tr/tr0 {np.trace(S)/tr0:.4g}, eff rank {theory.effective_rank(S):.3g}, "
              f"score spread (layer {lay}) {np.max(score_spread(recs[lay].field, Gaussian(m, S))):.3g}", flush=True)
