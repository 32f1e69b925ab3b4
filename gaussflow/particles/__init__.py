r"""The interacting particle system behind every closure.

$N$ tokens $x_1, \dots, x_N$ in $\mathbb{R}^d$ move by $dx_i/dt = \Gamma[\mu^N](x_i)$ where
$\mu^N = \frac{1}{N} \sum_j \delta_{x_j}$ is their empirical measure; the Gaussian closures are the
$N \to \infty$ limit of this system started from Gaussian samples (see `gaussflow.validation`).

Modules:

- `gaussflow.particles.sampling`: clouds drawn from a Gaussian (`sample`), seeds,
  `empirical_moments`;
- `gaussflow.particles.kernels`: the score code generated from an attention declaration
  (`kernel_spec`, `Scores`), the evaluation `Context`, and the block-wise
  passes the normalisations use (`row_pass`, `direct_pass`); its docstring
  describes the memory;
- `gaussflow.particles.sinkhorn`: the particle Sinkhorn (`sinkhorn_potentials`,
  Anderson-accelerated; the causal per-prefix version `prefix_sinkhorn`), its stopping rule
  and cost;
- `gaussflow.particles.dynamics`: `particle_velocity`, `velocity`,
  `simulate`, `simulate_batch` and `ParticleTrajectory`;
- `gaussflow.particles.convergence`: the mean-field limit from non-Gaussian initial
  measures (`mean_field_convergence`, `wasserstein2` with POT);
- `gaussflow.particles.diagnostics`: `effective_keys` ($1 / \sum_j w_{ij}^2$ per
  query: how many keys carry a query's attention; a few means far from the mean-field limit).

Normalisations (the `kind` of the class attribute `normalisation`, a normalisation object of
`gaussflow.attention.normalisation`):

- `"softmax"`: $\Gamma(x_i) = \sum_j w_{ij} v_j / \sum_j w_{ij}$;
- `"none"`: $\Gamma(x_i) = \frac{1}{N} \sum_j w_{ij} v_j$ (mean-field average, weights not
  normalised);
- `"sinkhorn"`: the coupling $\pi_{ij} = \exp(f_i + g_j + \log w_{ij}) / N^2$ with both marginals
  uniform (log-domain Sinkhorn on the empirical measure, at every evaluation), and
  $\Gamma(x_i) = N \sum_j \pi_{ij} v_j = \sum_j \mathrm{softmax}_j(\log w_{ij} + g_j)\, v_j$.

with values $v_j = M x_j$ ($M$ the declared value matrix, $W_O V$ by default) and weights
$w_{ij}$ from the declared score (see `gaussflow.particles.kernels`).

**Causal masking.** With `positions` (shape `(N,)`) token $i$ attends to the tokens $j$
with `positions[j] <= positions[i]` (softmax over its prefix; for `"sinkhorn"`, the Sinkhorn
field of the prefix cloud, `prefix_sinkhorn`); `causal=True` uses
`positions = arange(N) / N` (token order). `"softmax"`, `"sinkhorn"` and linear `"none"`
weights support masks.

**Other fields.** Sums (`f1 + f2`, multi-head) add their parts' particle velocities; fields whose
velocity does not depend on the measure (e.g. an affine layer) move each particle by their
velocity; any field can define `_particle_velocity(self, X, ctx, positions=None, log_a=None,
t=0.0)` (`X` of shape `(N, d)`, `ctx` a `Context`, `t` the time; `particle_velocity` evaluates
other fields under the same context) to supply its own particle system. Layer schedules
(`gf.Layers`: `fields` and `durations`) are integrated segment by segment.

Everything is float64 and deterministic given the seed.
"""

from .sampling import SAMPLERS, SEED_LIMIT, check_count, empirical_moments, sample
from .kernels import (BLOCK_ELEMENTS, DIRECT_WEIGHTS, NORMALISATIONS, WEIGHT_HOOKS, Context,
                      KernelSpec, Scores, add_bias, col_lse, direct_pass, is_attention,
                      kernel_spec, row_lse, row_pass)
from .sinkhorn import prefix_sinkhorn, sinkhorn_potentials, sinkhorn_velocity
from .dynamics import (ParticleTrajectory, jit_velocity, particle_velocity, simulate,
                       simulate_batch, sinkhorn_fields, velocity)
from .convergence import (ConvergenceReport, InitialMeasure, gaussian_mixture,
                          mean_field_convergence, uniform_ball, uniform_sphere, wasserstein2)
from .diagnostics import EFFECTIVE_KEYS_WARN, effective_keys, effective_keys_path

__all__ = ["sample", "SAMPLERS", "simulate", "simulate_batch", "velocity", "particle_velocity",
           "empirical_moments", "ParticleTrajectory", "Context", "kernel_spec",
           "sinkhorn_potentials", "prefix_sinkhorn", "sinkhorn_velocity", "WEIGHT_HOOKS",
           "DIRECT_WEIGHTS", "BLOCK_ELEMENTS",
           "mean_field_convergence", "ConvergenceReport", "InitialMeasure", "uniform_ball",
           "uniform_sphere", "gaussian_mixture", "wasserstein2",
           "effective_keys", "effective_keys_path", "EFFECTIVE_KEYS_WARN"]
