"""Run one regime map (settings of `reproduce_maps`, full), pickle it, print counts + undetermined reasons."""
import pickle, sys, time
from collections import Counter
from gaussflow.theory.maps import MAPS, regime_map, closed_form_agreement

variant, value, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
params = [p for v, val, p in MAPS if v == variant and val == value][0]
t = time.time()
cf = sys.argv[4] if len(sys.argv) > 4 else "auto"
m = regime_map(variant, value, params, (2, 3, 4, 5), n, seed=0, sweep_options={"closed_form": cf})
print(f"{m.name}: {m.seconds:.1f} s", flush=True)
with open(f"docs/runs/map_{variant}_{value}_{n}" + ("" if cf == "auto" else "_" + cf) + ".pkl", "wb") as fh:
    pickle.dump(m, fh)
tot = Counter(l for labs in m.labels.values() for l in labs)
print("totals", dict(tot))
for (p, d), labs in m.labels.items():
    c = Counter(labs)
    st = Counter(s for s, l in zip(m.status[(p, d)], labs) if l == "undetermined")
    print(p, d, dict(c), "undet statuses", dict(st))
und = Counter()
for key, regs in m.regimes.items():
    for r, s in zip(regs, m.status[key]):
        if r.kind == "undetermined":
            und[(s, r.reason.split(':')[0][:60])] += 1
print("undetermined reasons", dict(und))
if variant == "softmax" and value == "I":
    a = closed_form_agreement(m)
    print({k: v for k, v in a.items() if k != "blowup_times"})
