"""The interacting particle system behind every closure.

``N`` tokens ``x_1, ..., x_N`` in ``R^d`` move by ``dx_i/dt = Gamma[mu^N](x_i)`` where
``mu^N = (1/N) sum_j delta_{x_j}`` is their empirical measure; the Gaussian closures are the
``N -> infinity`` limit of this system started from Gaussian samples (see :mod:`gaussflow.validation`).

Modules:

- :mod:`~gaussflow.particles.sampling`: clouds drawn from a Gaussian (:func:`sample`), seeds,
  :func:`empirical_moments`;
- :mod:`~gaussflow.particles.kernels`: the score code generated from an attention declaration
  (:func:`kernel_spec`, :class:`Scores`), the evaluation :class:`Context`, and the block-wise
  passes the normalisations use (:func:`row_pass`, :func:`direct_pass`); its docstring
  describes the memory;
- :mod:`~gaussflow.particles.sinkhorn`: the particle Sinkhorn (:func:`sinkhorn_potentials`,
  Anderson-accelerated; the causal per-prefix version :func:`prefix_sinkhorn`), its stopping rule
  and cost;
- :mod:`~gaussflow.particles.dynamics`: :func:`particle_velocity`, :func:`velocity`,
  :func:`simulate`, :func:`simulate_batch` and :class:`ParticleTrajectory`;
- :mod:`~gaussflow.particles.convergence`: the mean-field limit from non-Gaussian initial
  measures (:func:`mean_field_convergence`, :func:`wasserstein2` with POT);
- :mod:`~gaussflow.particles.diagnostics`: :func:`effective_keys` (``1 / sum_j w_ij^2`` per
  query: how many keys carry a query's attention; a few means far from the mean-field limit).

Normalisations (class attribute ``normalisation``):

- ``"softmax"``: ``Gamma(x_i) = sum_j w_ij v_j / sum_j w_ij``;
- ``"none"``: ``Gamma(x_i) = (1/N) sum_j w_ij v_j`` (mean-field average, weights not normalised);
- ``"sinkhorn"``: the coupling ``pi_ij = exp(f_i + g_j + log w_ij) / N^2`` with both marginals
  uniform (log-domain Sinkhorn on the empirical measure, at every evaluation), and
  ``Gamma(x_i) = N sum_j pi_ij v_j = sum_j softmax_j(log w_ij + g_j) v_j``.

with values ``v_j = W_O V y_j`` and weights ``w_ij`` from the declared score (see
:mod:`~gaussflow.particles.kernels`).

**Causal masking.** With ``positions`` (shape ``(N,)``) token ``i`` attends to the tokens ``j``
with ``positions[j] <= positions[i]`` (softmax over its prefix; for ``"sinkhorn"``, the Sinkhorn
field of the prefix cloud, :func:`prefix_sinkhorn`); ``causal=True`` uses
``positions = arange(N) / N`` (token order). ``"softmax"``, ``"sinkhorn"`` and linear ``"none"``
weights support masks.

**Other fields.** Sums (``f1 + f2``, multi-head) add their parts' particle velocities; fields whose
velocity does not depend on the measure (e.g. an affine layer) move each particle by their
velocity; any field can define ``_particle_velocity(self, X, ctx, positions=None, log_a=None)``
(``X`` of shape ``(N, d)``,
``ctx`` a :class:`Context`; :func:`particle_velocity` evaluates other fields under the same
context) to supply its own particle system. Layer schedules (``gf.Layers``: ``fields`` and
``durations``) are integrated segment by segment.

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
