"""regime_map's loop (same draws, fields, sweep call, classify), logged per cell with steps/solvers."""
import math, pickle, sys, time
from collections import Counter
import numpy as np
from gaussflow.batch import sweep
from gaussflow.gaussian import Gaussian
from gaussflow.theory.maps import (MAPS, RegimeMap, _field, _value, draw_weights, regime_label,
                                   save_times)
from gaussflow.theory.regimes import classify

variant, value, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
dims = tuple(int(x) for x in sys.argv[4].split(",")) if len(sys.argv) > 4 else (2, 3, 4, 5)
params = [p for v, val, p in MAPS if v == variant and val == value][0]
out = RegimeMap(variant, value, tuple(float(p) for p in params), dims, n, 500.0, 1.0, 0)
start = time.perf_counter()
for d in dims:
    w = draw_weights(d, n, 0, 1.0)
    g0 = Gaussian(np.zeros(d), np.eye(d))
    Vs = [_value(w, i, value, d) for i in range(n)]
    for p in out.params:
        t1 = 500.0 / p
        fields = [_field(variant, w["Q"][i], w["K"][i], Vs[i], p) for i in range(n)]
        t = time.perf_counter()
        res = sweep(fields, g0, t1, ts=save_times(t1, 101))
        regs = [classify(res.member(i)) for i in range(n)]
        out.regimes[(p, d)] = regs
        out.labels[(p, d)] = [regime_label(r) for r in regs]
        out.status[(p, d)] = list(res.status)
        out.t1[(p, d)] = t1
        print(f"p={p} d={d}: {time.perf_counter() - t:.1f} s (compile {res.compile_seconds:.1f}, "
              f"run {res.run_seconds:.1f}); labels {dict(Counter(out.labels[(p, d)]))}; "
              f"status {dict(Counter(map(str, res.status)))}; solvers {dict(Counter(map(str, res.solvers)))}; "
              f"steps max {int(np.max(res.num_steps))} median {int(np.median(res.num_steps))} "
              f"top5 {sorted(((int(s), i, str(st)) for i, (s, st) in enumerate(zip(res.num_steps, res.status))), reverse=True)[:5]}",
              flush=True)
        with open(f"docs/runs/map_{variant}_{value}_{n}.partial.pkl", "wb") as fh:
            pickle.dump(out, fh)
out.seconds = time.perf_counter() - start
print(f"{out.name}: {out.seconds:.1f} s", flush=True)
with open(f"docs/runs/map_{variant}_{value}_{n}.pkl", "wb") as fh:
    pickle.dump(out, fh)
print("totals", dict(Counter(l for labs in out.labels.values() for l in labs)))
