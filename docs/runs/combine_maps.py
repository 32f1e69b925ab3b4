"""Figures + CSV/JSON from the pickled maps (the outputs of reproduce_maps, one map at a time)."""
import json, os, pickle, sys
from gaussflow import plots, plots_regimes
from gaussflow.theory.maps import closed_form_agreement, write_table

order = [("softmax", "I", 64), ("softmax", "MtM", 32), ("softmax", "random", 32), ("l2", "I", 32),
         ("sinkhorn", "I", int(sys.argv[1]) if len(sys.argv) > 1 else 32)]
maps = []
for v, val, n in order:
    f = f"docs/runs/map_{v}_{val}_{n}.pkl"
    if os.path.exists(f):
        maps.append(pickle.load(open(f, "rb")))
print([m.name for m in maps])
agreement = closed_form_agreement(pickle.load(open("docs/runs/map_softmax_I_64_never.pkl", "rb")))
plots.save(plots_regimes.regime_maps(maps), "docs/regime_maps")
plots.save(plots_regimes.blowup_times(agreement["blowup_times"]), "docs/blowup_times")
write_table(maps, "docs/runs/regime_maps.csv")
summary = {"maps": [m.to_dict() for m in maps], "closed_form_source": "softmax V = I integrated (closed_form=never)",
           "closed_form": {k: v for k, v in agreement.items() if k != "blowup_times"}}
json.dump(summary, open("docs/runs/regime_maps.json", "w"), indent=1, default=str)
for f in ("docs/regime_maps.pdf", "docs/blowup_times.pdf"):
    if os.path.exists(f):
        os.remove(f)
