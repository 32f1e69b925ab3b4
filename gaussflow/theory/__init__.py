r"""Theory toolkit: anisotropy measures, closed forms, exact limits and regime classification.

Conventions: score $s(x, y) = \beta\, y^\top A x$ with $A = K^\top Q$; value map
$y \mapsto W_O V y$. Everything here is NumPy (float64) on concrete arrays.

Modules (every public name is re-exported here, `gf.theory.X`):

- `gaussflow.theory.metrics`: anisotropy of a covariance or a stack `(..., d, d)`:
  `normalised_spectrum`, `effective_rank`, `condition_number`,
  `alignment`, `anisotropy` (along a trajectory), `angle_to_disk`;
- `gaussflow.theory.closed_forms`: softmax with $W_O V = v I$, where
  $\Sigma(t)^{-1} = \Sigma_0^{-1} - t S$: `blowup_time`, `blowup_direction`,
  `covariance`, `mean`, `limit_rank`, `limit_covariance`, and
  `stationary_lines` ($d = 2$, softmax or L2);
- `gaussflow.theory.affine`: `Affine(W, b) + softmax` (Alcalde–Ji–Zuazua):
  `affine_attention`, `AffineAttentionRegime`;
- `gaussflow.theory.regimes`: `classify` a solved trajectory into a `Regime`
  (`REGIMES`, `THRESHOLDS`);
- `gaussflow.theory.maps`: regime maps over random weight draws (`gf.sweep` +
  `classify`): `regime_map`, `RegimeMap`, `closed_form_agreement`.
"""

from .metrics import (alignment, angle_to_disk, anisotropy, condition_number, effective_rank,
                      normalised_spectrum, spectrum_summary)
from .closed_forms import (RANK_TOL, blowup_direction, blowup_time, covariance, limit_covariance,
                           limit_rank, mean, stationary_lines)
from .affine import AffineAttentionRegime, affine_attention
from .regimes import REGIMES, THRESHOLDS, Regime, classify
from .maps import RegimeMap, closed_form_agreement, regime_map

__all__ = [
    "normalised_spectrum", "effective_rank", "spectrum_summary", "condition_number", "alignment",
    "anisotropy",
    "covariance", "mean", "blowup_time", "blowup_direction", "limit_covariance", "limit_rank",
    "stationary_lines", "affine_attention", "AffineAttentionRegime", "classify", "Regime",
    "angle_to_disk", "REGIMES", "regime_map", "RegimeMap", "closed_form_agreement",
]
