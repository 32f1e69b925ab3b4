"""MiniLM through depth, one cloud per call, each DepthReport pickled (partial results survive)."""
import pickle, sys, time
from gaussflow.depth import attention_through_depth
from gaussflow.minilm import minilm_folder
from gaussflow.depth_plot import FULL

which = sys.argv[1]  # "embeddings" or a scale
kw = dict(n_tokens=FULL["n_tokens"], steps_per_layer=FULL["steps_per_layer"], seed=0, log=print)
t = time.time()
if which == "embeddings":
    rep = attention_through_depth(minilm_folder(), scales=(), embeddings=True, **kw)
else:
    rep = attention_through_depth(minilm_folder(), scales=tuple(float(s) for s in which.split(",")), embeddings=False, **kw)
print(f"total {time.time() - t:.1f} s", flush=True)
with open(f"docs/runs/minilm_{which}.pkl", "wb") as fh:
    pickle.dump(rep, fh)
for r in rep.runs:
    print(r.label, r.status, r.seconds, "blowup_depth", getattr(r, "blowup_depth", None))
    print("score_std", r.score_std)
print(rep.table())
