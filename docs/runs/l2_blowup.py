import pickle, numpy as np, gaussflow as gf
from gaussflow.theory.maps import draw_weights, save_times
m = pickle.load(open("docs/runs/map_l2_I_32.pkl", "rb"))
for key, labs in m.labels.items():
    for i, l in enumerate(labs):
        if l == "blowup":
            print(key, i, m.regimes[key][i], m.regimes[key][i].reason)
            p, d = key
            idx = i
w = draw_weights(d, 32, 0, 1.0)
Q, K = w["Q"][idx], w["K"][idx]
print("k", w["k"][idx]); print("Q", Q); print("K", K)
A = K.T @ Q
print("eig A+A^T", np.linalg.eigvalsh(A + A.T))
# other c values for this draw
for key, labs in m.labels.items():
    if key[1] == d:
        print(key, labs[idx], m.status[key][idx])
np.savez("docs/runs/l2_blowup_draw.npz", Q=Q, K=K, c=p, d=d, idx=idx)
