"""`gaussflow solve`: integrate a variant's closure; write the trajectory and figures."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

from ._common import UsageError, fmt
from .io import SOLVE_KEYS, problem_from_arrays, read_arrays, state_from_arrays

if TYPE_CHECKING:
    import numpy as np

    from ..field import Field
    from ..gaussian import Gaussian

#: Past this dimension `gaussflow solve` saves Sigma at `COV_SAVES` times only (`--all-covs`).
LARGE_D = 32
#: Save times that keep Sigma when $d$ > `LARGE_D`.
COV_SAVES = 5
#: Past this dimension the printed summary describes the spectrum instead of listing it.
PRINT_MAX = 10


_SOLVE_DOC = f"""\
Integrate a variant's Gaussian closure from N(mean, cov) and write the trajectory
(solve-VARIANT.npz: ts, means, eigenvalues (of Sigma at every save time, increasing), covs
and cov_index (covs[k] is Sigma at ts[cov_index[k]]: every save time when d <= {LARGE_D} or with
--all-covs, else {COV_SAVES} of them; the ts are equispaced unless the run blows up at t*,
then half of them approach t* geometrically), status, t_stop, blowup_time (NaN unless blow-up)), a JSON
summary and figures (eigenvalues of Sigma and of Sigma/tr Sigma against depth; the unit disk
when d = 2) as PNG and PDF. For d > {PRINT_MAX} the printed summary gives the trace, effective rank
and largest eigenvalues of the final Sigma instead of all d eigenvalues.

Weights and the initial Gaussian come from --input FILE (.npz or .json; JSON values are
numbers or nested lists of numbers: no strings, null or true/false), from --checkpoint (a
BERT-style safetensors layer, multihead only; the initial Gaussian is N(0, I) unless --input
gives mean/cov), or are random (--d, --seed; the moderate weights of gaussflow.validation.example).

Keys of --input (all variants: cov (d, d) required; mean (d,) default 0; t1 > 0); matrices
act on column vectors (Q, K: (k, d), V: (k_v, d), W_O: (d, k_v) for attention), the rest are
numbers. By variant (read from the declarations; required, then optional):
"""


def _keys_help() -> str:
    """One line per variant of `SOLVE_KEYS`: its required and optional `--input` keys."""
    width = max(len(n) for n in SOLVE_KEYS) + 2
    lines = []
    for name, (req, opt) in SOLVE_KEYS.items():
        text = " ".join(req) + (f"; optional {' '.join(opt)}" if opt else "")
        lines.append(f"  {name:<{width}}{text}")
    return "\n".join(lines)



def add(sub: argparse._SubParsersAction) -> None:
    """Register the `solve` subcommand on `sub` (the subparsers of the `gaussflow` parser)."""
    p = sub.add_parser("solve", help="integrate a variant's closure; write trajectory and figures",
                       description=_SOLVE_DOC + _keys_help(),
                       **fmt("gaussflow solve softmax --d 2 --seed 1 --t1 3 --out sol/\n"
                             "  gaussflow solve l2 --input weights.npz --out sol/ --json\n"
                             "  gaussflow solve multihead --checkpoint bert/ --layer 0 --t1 1"))
    p.add_argument("variant", help=", ".join(SOLVE_KEYS))
    p.add_argument("--input", metavar="FILE", help="weights and initial Gaussian (.npz or .json)")
    p.add_argument("--checkpoint", metavar="PATH", help="BERT-style safetensors file or folder "
                   "(multihead; see gf.load_attention)")
    p.add_argument("--layer", type=int, default=0, help="layer of --checkpoint (default 0)")
    p.add_argument("--heads", type=int, default=None, help="heads of --checkpoint (default: "
                   "its config.json)")
    p.add_argument("--d", type=int, default=2, help="dimension of random weights (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights (default 0)")
    p.add_argument("--t1", type=float, default=None, help="final time (default: the file's t1, "
                   "else 1)")
    p.add_argument("--n-save", type=int, default=201, help="number of save times (default 201)")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance (default 1e-8)")
    p.add_argument("--atol", type=float, default=1e-10, help="absolute tolerance (default 1e-10)")
    p.add_argument("--all-covs", action="store_true", help=f"save Sigma at every save time "
                   f"(default only when d <= {LARGE_D}; larger d: at {COV_SAVES} of them, about "
                   f"{COV_SAVES} d^2 x 8 bytes instead of n_save d^2 x 8)")
    p.add_argument("--closed-form", choices=("auto", "always", "never"), default="auto",
                   help="evaluate the closed-form solution where the derivation has one for these "
                   "weights (auto, the default), require it (always) or integrate (never)")
    p.add_argument("--out", default="gaussflow-out", help="output folder (default ./gaussflow-out)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress meter")
    p.set_defaults(func=cmd)


def _check_options(args):
    """The numeric options, before any file is read."""
    import math

    if args.t1 is not None and not (math.isfinite(args.t1) and args.t1 > 0):
        raise UsageError(f"--t1 must be a positive number, got {args.t1}")
    if args.n_save < 2:
        raise UsageError(f"--n-save must be at least 2, got {args.n_save}")
    for name, v in (("--rtol", args.rtol), ("--atol", args.atol)):
        if not (math.isfinite(v) and v > 0):
            raise UsageError(f"{name} must be a positive number, got {v}")


def problem(args: argparse.Namespace) -> tuple[Field, Gaussian, float | None, str]:
    """`(field, g0, t1 or None, source)` from `--checkpoint`, `--input` or random weights.

    `source` describes where the weights came from (for the summary and the figures).
    """
    from ..gaussian import Gaussian

    if args.checkpoint:
        if args.variant != "multihead":
            raise UsageError("--checkpoint gives a multi-head layer: use `gaussflow solve "
                             "multihead --checkpoint PATH`")
        arr = read_arrays(args.input) if args.input else {}
        extra = sorted(set(arr) - {"mean", "cov", "t1"})
        if extra:
            raise UsageError(f"{args.input}: with --checkpoint only mean, cov, t1 are read; "
                             f"remove {', '.join(extra)}")
        from ..weights import load_attention

        field = load_attention(args.checkpoint, layer=args.layer, heads=args.heads)
        g0, t1 = Gaussian.standard(field.dim), None
        if args.input:
            g0, t1 = state_from_arrays(arr, args.input, d=field.dim)
        return field, g0, t1, f"{args.checkpoint} layer {args.layer}"
    if args.input:
        field, g0, t1 = problem_from_arrays(args.variant, read_arrays(args.input), args.input)
        return field, g0, t1, args.input
    from ..validation import example

    if args.variant not in SOLVE_KEYS:
        raise UsageError(f"solve supports {', '.join(SOLVE_KEYS)}; got {args.variant!r}")
    if args.d < 1:
        raise UsageError(f"--d must be a positive integer, got {args.d}")
    field, g0, _ = example(args.variant, d=args.d, seed=args.seed)
    return field, g0, None, f"random (d = {args.d}, seed = {args.seed})"


def cmd(args: argparse.Namespace) -> int:
    """Integrate the problem of `args` (see `problem`); write `solve-VARIANT.npz`, `.json` and the
    figures into `args.out`, and print a summary (or the JSON summary). Exit code 0."""
    import numpy as np

    from .. import plots
    from ..savetimes import solve_resolved
    from ..theory import spectrum_summary

    _check_options(args)
    field, g0, t1, source = problem(args)
    t1 = float(args.t1 if args.t1 is not None else (t1 if t1 is not None else 1.0))
    tr = solve_resolved(field, g0, t1, n_save=args.n_save, rtol=args.rtol, atol=args.atol,
                        progress=not args.quiet, closed_form=args.closed_form)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"solve-{args.variant}")
    bt = np.nan if tr.blowup_time is None else tr.blowup_time
    spec = np.linalg.eigvalsh(np.asarray(tr.covs))  # once: at d = 384 it dominates the output
    keep = cov_index(len(tr.ts), g0.dim, args.all_covs)
    np.savez(stem + ".npz", ts=tr.ts, means=tr.means, eigenvalues=spec, cov_index=keep,
             covs=np.asarray(tr.covs)[keep], status=np.array(tr.status),
             t_stop=np.array(tr.t_stop), blowup_time=np.array(bt))
    files = [stem + ".npz"]
    label = f"{field.name}, {source}"
    fig, axs = plots.plt.subplots(1, 2, figsize=(10, 4))
    plots.eigenvalues([tr], ax=axs[0], spectra=[spec])
    plots.eigenvalues([tr], ax=axs[1], normalised=True, spectra=[spec])
    fig.suptitle(f"{label}: {tr.status}" + ("" if tr.blowup_time is None
                                             else f", blow-up at t* = {tr.blowup_time:.4g}"),
                 fontsize=10)
    fig.tight_layout()
    files.append(plots.save(fig, stem + "-eigenvalues"))
    if g0.dim == 2:
        fig = plots.unit_disk([tr], labels=[rf"$\Sigma(t)/\mathrm{{tr}}\,\Sigma$, $t \in [0, {tr.t_stop:.3g}]$"],
                              title=label)
        files.append(plots.save(fig, stem + "-disk"))
    w = spec[-1]
    summary = {"variant": field.name, "exact": bool(field.exact), "source": source, "d": g0.dim,
               "t1": t1, "method": tr.method, "status": tr.status, "t_stop": float(tr.t_stop),
               "blowup_time": tr.blowup_time, "num_steps": tr.num_steps,
               "final_mean": np.asarray(tr.means[-1]).tolist(),
               "final_eigenvalues": w.tolist(),
               "final_spectrum": spectrum_summary(np.asarray(tr.covs)[-1]),
               "covs_saved": len(keep), "files": files}
    with open(stem + ".json", "w") as fh:
        json.dump(summary, fh, indent=2)
    files.append(stem + ".json")
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    kind = "exact" if field.exact else "approximate"
    print(f"{field.name} ({kind} closure), d = {g0.dim}, {source}")
    line = f"status: {tr.status} at t = {tr.t_stop:.6g} ({tr.num_steps} steps)"
    if tr.blowup_time is not None:
        line += f"; blow-up time t* = {tr.blowup_time:.8g}"
    print(line)
    print(spectrum_line(summary["final_spectrum"], w))
    print("files: " + ", ".join(files))
    return 0


def cov_index(n_t: int, d: int, all_covs: bool = False) -> np.ndarray:
    r"""Indices of the save times at which `gaussflow solve` writes $\Sigma$: all of the `n_t`
    when $d \le$ `LARGE_D` or `all_covs`, else `COV_SAVES` spread evenly (first and last
    included)."""
    import numpy as np

    if all_covs or d <= LARGE_D or n_t <= COV_SAVES:
        return np.arange(n_t)
    return np.unique(np.round(np.linspace(0, n_t - 1, COV_SAVES)).astype(int))


def spectrum_line(spec: dict, w: np.ndarray) -> str:
    r"""The printed line on the final $\Sigma$: every eigenvalue when $d \le$ `PRINT_MAX`,
    else the summary `spec` (`gaussflow.theory.spectrum_summary`)."""
    if len(w) <= PRINT_MAX:
        return "final eigenvalues of Sigma: " + ", ".join(f"{v:.4g}" for v in w)
    top = ", ".join(f"{v:.4g}" for v in spec["top"])
    return (f"final Sigma: trace {spec['trace']:.6g}, effective rank "
            f"{spec['effective_rank']:.4g} of d = {spec['d']}, eigenvalues in "
            f"[{spec['min']:.4g}, {spec['max']:.4g}]; largest {top} (all of them: "
            f"final_eigenvalues in the JSON, eigenvalues in the .npz)")
