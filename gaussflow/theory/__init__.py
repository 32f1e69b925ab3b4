"""Theory toolkit: anisotropy measures, closed forms, exact limits and regime classification.

Conventions: score ``s(x, y) = beta y^T A x`` with ``A = K^T Q``; value map
``y -> W_O V y``. Everything here is NumPy (float64) on concrete arrays.

Modules (every public name is re-exported here, ``gf.theory.X``):

- :mod:`~gaussflow.theory.metrics`: anisotropy of a covariance or a stack ``(..., d, d)``:
  :func:`normalised_spectrum`, :func:`effective_rank`, :func:`condition_number`,
  :func:`alignment`, :func:`anisotropy` (along a trajectory), :func:`angle_to_disk`;
- :mod:`~gaussflow.theory.closed_forms`: softmax with ``W_O V = v I``, where
  ``Sigma(t)^{-1} = Sigma0^{-1} - t S``: :func:`blowup_time`, :func:`blowup_direction`,
  :func:`covariance`, :func:`mean`, :func:`limit_rank`, :func:`limit_covariance`, and
  :func:`stationary_lines` (d = 2, softmax or L2);
- :mod:`~gaussflow.theory.affine`: ``Affine(W, b) + softmax`` (Alcalde–Ji–Zuazua):
  :func:`affine_attention`, :class:`AffineAttentionRegime`;
- :mod:`~gaussflow.theory.regimes`: :func:`classify` a solved trajectory into a :class:`Regime`
  (:data:`REGIMES`, :data:`THRESHOLDS`);
- :mod:`~gaussflow.theory.maps`: regime maps over random weight draws (``gf.sweep`` +
  :func:`classify`): :func:`regime_map`, :class:`RegimeMap`, :func:`closed_form_agreement`.
"""

from .metrics import (alignment, angle_to_disk, anisotropy, condition_number, effective_rank,
                      normalised_spectrum)
from .closed_forms import (RANK_TOL, blowup_direction, blowup_time, covariance, limit_covariance,
                           limit_rank, mean, stationary_lines)
from .affine import AffineAttentionRegime, affine_attention
from .regimes import REGIMES, THRESHOLDS, Regime, classify
from .maps import RegimeMap, closed_form_agreement, regime_map

__all__ = [
    "normalised_spectrum", "effective_rank", "condition_number", "alignment", "anisotropy",
    "covariance", "mean", "blowup_time", "blowup_direction", "limit_covariance", "limit_rank",
    "stationary_lines", "affine_attention", "AffineAttentionRegime", "classify", "Regime",
    "angle_to_disk", "REGIMES", "regime_map", "RegimeMap", "closed_form_agreement",
]
