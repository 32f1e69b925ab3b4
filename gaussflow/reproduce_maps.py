"""`gaussflow reproduce --only maps`: the regime maps of `gaussflow.theory.maps`, their figure and
tables."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence

from ._checks import positive_int
from .theory.maps import MAPS, RegimeMap, check_dims, closed_form_agreement, regime_map, \
    sort_labels, write_table

__all__ = ["reproduce_maps"]


def _label_counts(m: RegimeMap) -> list[tuple[str, int]]:
    c = Counter(lab for labs in m.labels.values() for lab in labs)
    return [(k, c[k]) for k in sort_labels(c)]


def _format_table(maps) -> str:
    lines = []
    for m in maps:
        labels = m.all_labels()
        head = f"{'p':>6} {'d':>2} {'n':>4} " + " ".join(f"{lab:>12}" for lab in labels)
        lines += [f"{m.name} (p = {m.param}):", head]
        for row in m.rows():
            lines.append(f"{row['p']:>6g} {row['d']:>2} {row['n']:>4} "
                         + " ".join(f"{row[lab]:>12}" for lab in labels))
    return "\n".join(lines)



def reproduce_maps(out_dir: str, quick: bool = False, seed: int = 0,
                   log: Callable[[str], None] = print, n_draws: int | None = None,
                   dims: Sequence[int] | None = None) -> tuple:
    r"""The `maps` part of `gaussflow reproduce`: the five maps of `MAPS`, a figure, a table.

    Full: $d \in \{2, 3, 4, 5\}$, 4 scales, 64 draws (1024 flows per map); quick: $d = 2$,
    2 scales, 6 draws. Writes `regime_maps.png/.pdf`, `blowup_times.png/.pdf` (softmax,
    $V = I$: sweep against closed form), `regime_maps.csv` and `regime_maps.json`.

    Parameters
    ----------
    out_dir : output folder (must exist).
    quick : the small version (CI).
    seed : seed of the weight draws.
    log : a `print`-like function for progress and the table.
    n_draws, dims : override the draws per dimension and the dimensions.

    Returns
    -------
    tuple
        `(summary dict, list of written files)`.
    """
    from . import plots, plots_regimes

    n_draws = (6 if quick else 64) if n_draws is None else positive_int("n_draws", n_draws)
    dims = ((2,) if quick else (2, 3, 4, 5)) if dims is None else check_dims(dims)
    maps = []
    for variant, value, params in MAPS:
        ps = (params[1], params[3]) if quick else params
        m = regime_map(variant, value, ps, dims, n_draws, seed=seed)
        maps.append(m)
        log(f"  {m.name}: {len(ps) * len(dims) * n_draws} flows in {m.seconds:.1f} s; "
            + ", ".join(f"{k}: {v}" for k, v in _label_counts(m)))
    agreement = closed_form_agreement(maps[0])
    log(_format_table(maps))
    log(f"  closed form (softmax, V = I): {agreement['agree']}/{agreement['n']} agree, "
        f"{agreement['undetermined']} undetermined, {len(agreement['mismatches'])} mismatches; "
        f"blow-ups {agreement['blowups']} (predicted {agreement['predicted_blowups']}; "
        f"{agreement['beyond_horizon']} more after t1), max "
        f"relative error of t* {agreement['blowup_rel_err_max']}")
    files = [plots.save(plots_regimes.regime_maps(maps), os.path.join(out_dir, "regime_maps")),
             plots.save(plots_regimes.blowup_times(agreement["blowup_times"]),
                        os.path.join(out_dir, "blowup_times"))]
    files.append(write_table(maps, os.path.join(out_dir, "regime_maps.csv")))
    summary = {"maps": [m.to_dict() for m in maps],
               "closed_form": {k: v for k, v in agreement.items() if k != "blowup_times"}}
    path = os.path.join(out_dir, "regime_maps.json")
    with open(path, "w") as fh:
        json.dump(summary, fh, indent=1, default=str)
    files.append(path)
    return summary, files
