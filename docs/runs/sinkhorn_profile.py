import pickle, time, numpy as np, gaussflow as gf
from gaussflow.theory.maps import draw_weights, save_times
ml2 = pickle.load(open("docs/runs/map_l2_I_32.pkl", "rb"))
for d, i, p in [(4, 30, 1.0), (4, 1, 1.0), (5, 28, 1.0)]:
    w = draw_weights(d, 32, 0, 1.0)
    f = gf.Sinkhorn(w["Q"][i], w["K"][i], np.eye(d), beta=p, eps=1.0)
    g0 = gf.Gaussian(np.zeros(d), np.eye(d))
    t1 = 500 / p
    t = time.time()
    tr = gf.solve(f, g0, t1, ts=save_times(t1, 101))
    el = time.time() - t
    S = tr.covs[-1]; ev = np.linalg.eigvalsh(S)
    trs = np.array([np.trace(c) for c in tr.covs]) / d
    print(f"d={d} draw={i} p={p}: {tr.status} t_stop={tr.t_stop:.4g} of t1={t1:.4g} steps={tr.num_steps} "
          f"({el:.1f} s incl. compile); tr/tr0 at stop {trs[-1]:.3g}; eig {ev}; cond {ev[-1]/ev[0]:.3g}; "
          f"k={w['k'][i]}; L2 labels {[ml2.labels[(c, d)][i] for c in ml2.params]}")
    # where did it slow down: saved times vs trace
    j = np.searchsorted(tr.ts, [t1*1e-3, t1*1e-2, t1*0.1])
    print("   tr/tr0 at saved times:", [(f"{tr.ts[k]:.3g}", f"{trs[k]:.3g}") for k in range(0, len(tr.ts), 10)], "last", tr.ts[-3:], trs[-3:])
