"""Per-layer cost of the embedding cloud's token system (MiniLM, attention-only, Tsit5,
rtol 1e-6, atol 1e-9 as in `attention_through_depth`): accepted/rejected steps, wall time and the
tokens' score spread at the start of each layer. Usage: python ... N MAX_STEPS_PER_LAYER"""
import sys, time
import diffrax, jax.numpy as jnp, numpy as np
from gaussflow import particles
from gaussflow.depth import read_attention_layers, score_spread
from gaussflow.minilm import embedding_gaussian, minilm_folder
from gaussflow.gaussian import Gaussian
from gaussflow.weights import read_attention

n, max_steps = int(sys.argv[1]), int(sys.argv[2])
folder = minilm_folder()
fields = [read_attention(folder, layer=i).field for i in read_attention_layers(folder)]
x = jnp.asarray(particles.sample(embedding_gaussian(folder, seed=0), n, seed=0))
ctx = particles.Context()
total = time.perf_counter()
for k, field in enumerate(fields):
    m, S = (np.asarray(a) for a in particles.empirical_moments(x))
    sig = float(np.max(score_spread(field, Gaussian(m, S))))
    term = diffrax.ODETerm(lambda t, y, a, f=field: particles.jit_velocity(f, y, None, ctx))
    t = time.perf_counter()
    sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), float(k), float(k + 1), None, x,
                              saveat=diffrax.SaveAt(t1=True),
                              stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-9),
                              max_steps=max_steps, throw=False)
    x = sol.ys[-1]
    print(f"layer {k}: sigma {sig:.3g}, tr S / d {np.trace(S) / S.shape[0]:.3g}; {sol.result}; "
          f"accepted {int(sol.stats['num_accepted_steps'])}, rejected "
          f"{int(sol.stats['num_rejected_steps'])}; {time.perf_counter() - t:.1f} s", flush=True)
    if not bool(jnp.all(jnp.isfinite(x))):
        break
print(f"total {time.perf_counter() - total:.1f} s")
