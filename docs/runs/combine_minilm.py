"""docs/depth_minilm.png + docs/runs/depth_minilm.{md,json} from the pickled DepthReports (one per job)."""
import json, os, pickle
from gaussflow import plots
from gaussflow.depth import DepthReport
from gaussflow.depth_plot import plot_depth
reps = [pickle.load(open(f, "rb")) for f in ("docs/runs/minilm_0.05,0.2,0.5.pkl", "docs/runs/minilm_embeddings.pkl")
        if os.path.exists(f)]
rep = DepthReport(runs=[r for x in reps for r in x.runs], info=reps[0].info, dropped=reps[0].dropped)
print(rep)
plots.save(plot_depth(rep), "docs/depth_minilm")
if os.path.exists("docs/depth_minilm.pdf"):
    os.remove("docs/depth_minilm.pdf")
open("docs/runs/depth_minilm.md", "w").write(rep.table() + "\n")
s = rep.to_dict(); s["agreeing"] = rep.agreeing(0.05)
json.dump(s, open("docs/runs/depth_minilm.json", "w"), indent=1, default=float)
for r in rep.runs:
    print(r.label, r.status, r.seconds, r.blowup_depth, r.max_error(), r.score_std)
