import numpy as np, gaussflow as gf
z = np.load("docs/runs/l2_blowup_draw.npz"); Q, K, c, d = z["Q"], z["K"], float(z["c"]), int(z["d"])
print("eig K^-1 Q", np.linalg.eigvals(np.linalg.solve(K, Q)))
f = gf.L2(Q, K, np.eye(d), c=c)
g0 = gf.Gaussian(np.zeros(d), np.eye(d))
ts = np.linspace(0, 1100, 2201)
for thr in (1e8, 1e30):
    tr = gf.solve(f, g0, 1100.0, ts=ts, blowup_threshold=thr, closed_form="never")
    print(thr, tr)
    T = np.array([np.trace(S) for S in tr.covs])
    lg = np.log(T / 3)
    rate = np.diff(lg) / np.diff(tr.ts)
    for j in range(0, len(rate), max(1, len(rate)//40)):
        print(f"  t={tr.ts[j]:8.2f} log f={lg[j]:8.3f} rate={rate[j]:.4f}")
    print("  last", tr.ts[-3:], lg[-3:], rate[-3:])
