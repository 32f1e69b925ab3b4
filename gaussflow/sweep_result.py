"""The result of `gf.sweep`: batched trajectories, read from the solvers' raw outputs."""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field, replace

import numpy as np

from .integrate import Trajectory, statuses_of, trajectory_of
from .passes import SCALARS

__all__ = ["SweepResult", "result_from_raw"]


@dataclass(frozen=True)
class SweepResult:
    """Batched trajectories of a `sweep` over `B` members.

    `ts` (n,) the requested save times; `means` (B, n, d), `covs` (B, n, d, d): the saved
    states, NaN where `mask` (B, n) is False (save times at or after a member's stop, or
    non-finite values). `final_means` (B, d), `final_covs` (B, d, d): the state at `t_stop`
    (B,). `status` (B,) strings as in `gaussflow.integrate.STATUSES`; `blowup_time` (B,)
    NaN unless the member blew up; `num_steps` (B,). `solvers` (B,) the name of the solver
    that finished each member (`"tsit5"`, `"kvaerno5"` for members rerun as stiff, `"lsoda"`
    for members finished by SciPy's LSODA, `"closed_form"` for members evaluated in closed
    form, with `num_steps` 0);
    `method` `"queue"` or `"vmap"`, `"closed_form"` when every member was evaluated,
    `"queue+closed_form"` / `"vmap+closed_form"` for a mix. `member(i)` is the
    `gaussflow.Trajectory` that `gf.solve(..., solver=solvers[i])` returns for member
    `i` (for a `"closed_form"` member: `gf.solve(...)`, which evaluates it too; for an
    `"lsoda"` member: the LSODA pass's trajectory, which `gf.solve` does not offer).
    `compile_seconds` / `run_seconds`: time spent compiling (0 when every chunk shape was
    already compiled) and integrating (including host transfers).
    """

    ts: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    mask: np.ndarray
    final_means: np.ndarray
    final_covs: np.ndarray
    status: np.ndarray
    t_stop: np.ndarray
    blowup_time: np.ndarray
    num_steps: np.ndarray
    compile_seconds: float
    run_seconds: float
    n_devices: int
    chunk_size: int
    field_name: str = ""
    t0: float = 0.0
    raw: dict = dc_field(default_factory=dict, repr=False)
    solvers: np.ndarray | None = None
    method: str = "vmap"

    def __len__(self) -> int:
        return len(self.status)

    def member(self, i: int) -> Trajectory:
        """Member `i` as a `gaussflow.Trajectory` (the same as `gf.solve` gives)."""
        out = {k: v[i] for k, v in self.raw.items()}
        class _Named:  # trajectory_of only reads the field's name
            name = self.field_name
        cf = self.solvers is not None and self.solvers[i] == "closed_form"
        return replace(trajectory_of(out, self.ts, _Named, self.t0),
                       method="closed_form" if cf else "integrate")

    def counts(self) -> dict[str, int]:
        """`{status: number of members}`."""
        names, n = np.unique(self.status, return_counts=True)
        return {str(k): int(v) for k, v in zip(names, n)}

    def __repr__(self) -> str:
        st = ", ".join(f"{k}: {v}" for k, v in self.counts().items())
        return (f"SweepResult({self.field_name}, B={len(self)}, d={self.final_means.shape[-1]}, "
                f"{st}; compile {self.compile_seconds:.3g} s, run {self.run_seconds:.3g} s, "
                f"devices={self.n_devices})")

    def _repr_html_(self) -> str:
        """A table: members, status counts, solvers, stop times, timing (`gaussflow.display`)."""
        from .display import sweep_html

        return sweep_html(self)


def result_from_raw(raw: dict[str, np.ndarray], ts_arr: np.ndarray, t0: float, name: str,
                    compile_s: float, run_s: float, ndev: int, chunk: int, solvers: np.ndarray,
                    method: str) -> SweepResult:
    """The `SweepResult` of the stacked raw outputs of every member (`raw`, keys of
    `gaussflow.integrate.integrate_closure`): per-member statuses and masks, with the rules of
    `gaussflow.integrate.trajectory_of`."""
    B, n = raw["t_stop"].shape[0], len(ts_arr)
    status = statuses_of({k: raw[k] for k in SCALARS}).astype(object)
    t_stop = raw["t_stop"].astype(float)
    saved_t = raw["ts"][:, :n]
    means, covs = raw["means"][:, :n], raw["covs"][:, :n]
    mask = (saved_t <= t_stop[:, None]) & np.isfinite(saved_t)
    mask &= np.all(np.isfinite(means.reshape(B, n, -1)), axis=2)
    mask &= np.all(np.isfinite(covs.reshape(B, n, -1)), axis=2)
    fm, fc = raw["mean_end"], raw["cov_end"]
    final_ok = np.all(np.isfinite(fm.reshape(B, -1)), 1) & np.all(np.isfinite(fc.reshape(B, -1)), 1)
    # A completed member must have every requested save time and a finite end state.
    bad = (status == "completed") & (~final_ok | ~mask.all(axis=1))
    status[bad] = "nonfinite"
    blow = status == "blowup"
    blowup_time = np.where(blow, t_stop + raw["tau"], np.nan)
    means = np.where(mask[:, :, None], means, np.nan)
    covs = np.where(mask[:, :, None, None], covs, np.nan)
    return SweepResult(ts=np.asarray(ts_arr), means=means, covs=covs, mask=mask,
                       final_means=np.where(final_ok[:, None], fm, np.nan),
                       final_covs=np.where(final_ok[:, None, None], fc, np.nan),
                       status=status.astype(str), t_stop=t_stop, blowup_time=blowup_time,
                       num_steps=raw["num_steps"].astype(int), compile_seconds=compile_s,
                       run_seconds=run_s, n_devices=ndev, chunk_size=chunk, field_name=name,
                       t0=t0, raw=raw, solvers=solvers.astype(str), method=method)
