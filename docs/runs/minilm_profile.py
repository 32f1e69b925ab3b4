"""Profile of the embedding cloud's token system (MiniLM, attention-only): cost per velocity
evaluation and the adaptive step sizes in layer 0 (Tsit5, rtol 1e-6, atol 1e-9 as in
`attention_through_depth`). Usage: python docs/runs/minilm_profile.py N T_END MAX_STEPS [LAYER]"""
import sys, time
import diffrax, jax, jax.numpy as jnp, numpy as np
from gaussflow import particles
from gaussflow.depth import score_spread
from gaussflow.minilm import embedding_gaussian, minilm_folder
from gaussflow.gaussian import Gaussian
from gaussflow.weights import read_attention

n, t_end, max_steps = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
layer = int(sys.argv[4]) if len(sys.argv) > 4 else 0
folder = minilm_folder()
field = read_attention(folder, layer=layer).field
x0 = jnp.asarray(particles.sample(embedding_gaussian(folder, seed=0), n, seed=0))
m0, S0 = (np.asarray(a) for a in particles.empirical_moments(x0))
print(f"N={n} layer {layer}: score spread of the heads on the tokens' moments: max "
      f"{np.max(score_spread(field, Gaussian(m0, S0))):.3g}", flush=True)
ctx = particles.Context()
v = particles.jit_velocity(field, x0, None, ctx).block_until_ready()
t = time.perf_counter()
for _ in range(5):
    v = particles.jit_velocity(field, x0, None, ctx).block_until_ready()
t_eval = (time.perf_counter() - t) / 5
print(f"one velocity evaluation: {t_eval * 1e3:.1f} ms; |v| rms {float(jnp.sqrt(jnp.mean(v**2))):.3g}",
      flush=True)
term = diffrax.ODETerm(lambda t, y, a: particles.jit_velocity(field, y, None, ctx))
t = time.perf_counter()
sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, t_end, None, x0,
                          saveat=diffrax.SaveAt(steps=True),
                          stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-9),
                          max_steps=max_steps, throw=False)
wall = time.perf_counter() - t
ts = np.asarray(sol.ts); ts = ts[np.isfinite(ts)]
h = np.diff(np.concatenate([[0.0], ts]))
acc, rej = int(sol.stats["num_accepted_steps"]), int(sol.stats["num_rejected_steps"])
print(f"solve to {t_end}: result {sol.result}, reached t = {ts[-1]:.4g}; accepted {acc}, rejected "
      f"{rej}; {wall:.1f} s wall ({wall / max(acc + rej, 1) * 1e3:.1f} ms per step incl. compile)")
for q in (0.1, 0.25, 0.5, 0.75, 1.0):
    k = min(int(q * len(h)) , len(h) - 1)
    print(f"  step {k}: t = {ts[k]:.4g}, h = {h[k]:.3g}")
print(f"  h: median {np.median(h):.3g}, min {h.min():.3g}, last 10 mean {h[-10:].mean():.3g}")
