r"""One progress bar over a whole command, and the cost model that sizes it.

A command's work is a sequence of *stages* (a batch of particle clouds, a part of a
reproduction) of very unequal cost: at the default sizes of `gaussflow validate` the largest
cloud is 94 % of the particle work. A bar that counts stages moves fast and then sits still.
`WorkBar` counts in *estimated seconds* instead: each stage carries its estimate (from the cost
model below), the bar advances while a stage runs at the rate observed so far (never past 95 %
of the stage's estimate) and jumps to the stage's end when it finishes. It shows the elapsed time
and the remaining time, $(\text{total} - \text{done})\,\times$ elapsed / done, which rescales the
estimates by how fast this machine has actually been.

**Cost model** (measured once on the 2-core development machine, float64, `d = 3`, `t1 = 1`,
the moderate weights of `gaussflow.validation.example`; user CPU seconds, which is the wall time
on an idle 2-core machine within about a factor 1.5): a particle system costs
`PAIR_SECONDS[kind]` per seed and per pair of tokens $N^2$ (Sinkhorn: about 50 times softmax,
the Sinkhorn iterations at every velocity evaluation), scaled by $t_1$ and by $d / 3$ for
$d > 3$; a field whose velocity does not depend on the measure (affine, MLP) costs nothing per
pair. `OVERHEAD_SECONDS` covers the start, the compilations and the closure solves. Estimates
are rough (within a factor of about 2); they decide whether a command announces its expected
time (`LONG_SECONDS`), and they size the bar.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

#: Seconds per seed and per pair of tokens of one particle run (see the module docstring).
PAIR_SECONDS = {"attention": 6e-7, "sinkhorn": 3e-5, "local": 0.0}
#: Start, compilations and closure solves of one `validate` (seconds).
OVERHEAD_SECONDS = 15.0
#: Past this many estimated seconds a command says before starting how long it expects to take.
LONG_SECONDS = 120.0


def particle_kind(field: Any) -> str:
    """`"sinkhorn"` when any part of `field` is Sinkhorn-normalised attention, `"local"` when its
    velocity does not depend on the measure (affine: no pairs), else `"attention"`."""
    from .particles.dynamics import is_local, sinkhorn_fields

    if sinkhorn_fields(field):
        return "sinkhorn"
    return "local" if is_local(field) else "attention"


def particle_seconds(kind: str, n: int, n_seeds: int, d: int, t1: float) -> float:
    r"""Estimated seconds of `n_seeds` particle runs of $N$ = `n` tokens (cost model above).

    Parameters
    ----------
    kind : str
        A key of `PAIR_SECONDS` (`particle_kind`).
    n : int
        Tokens per cloud.
    n_seeds : int
        Clouds.
    d : int
        Token dimension.
    t1 : float
        Final time.

    Returns
    -------
    float
        The estimate in seconds.
    """
    return PAIR_SECONDS[kind] * n_seeds * float(n) ** 2 * max(d, 3) / 3 * max(float(t1), 0.05)


#: `gaussflow.validate`'s `batch="auto"` pads every cloud to the largest $N$ up to this size.
PADDED_MAX_N = 2048


def validate_seconds(field: Any, d: int, ns: Sequence[int], n_seeds: int, t1: float,
                     padded: bool | None = None) -> tuple[float, list[float]]:
    r"""Estimated seconds of `gaussflow.validate` at sizes `ns`: `(total, per batch)`.

    `padded` (default: `batch="auto"`'s rule, largest $N \le$ `PADDED_MAX_N`): every cloud is
    padded to the largest $N$ and simulated in one batch, which costs that size's pairs for
    every cloud; otherwise one batch per size. The total adds `OVERHEAD_SECONDS`.
    """
    kind = particle_kind(field)
    if padded is None:
        padded = max(ns) <= PADDED_MAX_N
    if padded:
        per = [particle_seconds(kind, max(ns), n_seeds * len(ns), d, t1)]
    else:
        per = [particle_seconds(kind, n, n_seeds, d, t1) for n in ns]
    return OVERHEAD_SECONDS + sum(per), per


def validate_notice(field: Any, d: int, ns: Sequence[int], seeds: Sequence[int],
                    t1: float) -> str | None:
    """The line `gaussflow validate` prints before a run estimated past `LONG_SECONDS`: the
    expected time, the size that dominates it, and the `--n`/`--seeds` that bring it under
    `LONG_SECONDS` (sizes halved, then three seeds); `None` for a shorter run."""
    total, per = validate_seconds(field, d, ns, len(seeds), t1)
    if total <= LONG_SECONDS:
        return None
    big = max(range(len(per)), key=lambda i: per[i])
    big_n = max(ns) if len(per) == 1 else ns[big]  # one padded batch: every cloud at max N
    what = {"sinkhorn": "the particle Sinkhorn", "attention": "the particle system",
            "local": "the particle system"}[particle_kind(field)]
    text = f"expected about {format_seconds(total)} on 2 cores"
    if per[big] > total / 2:
        text += (f" ({what} at N = {big_n} is {100 * per[big] / total:.0f}% of it; the cost "
                 "grows like N^2)")
    for scale in (1, 2, 4, 8, 16, 32):
        small = sorted({max(n // scale, d + 1) for n in ns})
        if len(small) < 2:
            break
        for s in (list(seeds), list(seeds)[:3]):
            est, _ = validate_seconds(field, d, small, len(s), t1)
            if est <= LONG_SECONDS and (small != sorted(ns) or len(s) < len(seeds)):
                opt = f"--n {','.join(map(str, small))}"
                if len(s) < len(seeds):
                    opt += f" --seeds {','.join(map(str, s))}"
                return text + f"; {opt} takes about {format_seconds(est)}"
    return text


#: Seconds of each part of `gaussflow reproduce`, `(quick, full)` (see `reproduce_seconds`):
#: the default parts as measured on the 2 shared cores (full: 151, 144, 65, 73 s at load 7 to
#: 14; quick: the 102 s of the first three parts in the README split in the same proportions,
#: and its 51 s for the gap); the parts that run only when named from their README timings.
REPRODUCE_SECONDS = {"regimes": (43.0, 150.0), "ranks": (41.0, 145.0), "clustering": (18.0, 65.0),
                     "clustering_gap": (51.0, 75.0), "maps": (100.0, 1800.0),
                     "meanfield": (120.0, 1700.0), "depth": (300.0, 3600.0)}


def reproduce_seconds(parts: Sequence[str], quick: bool) -> dict[str, float]:
    """Estimated seconds of each of the `parts` of `gaussflow reproduce` (`REPRODUCE_SECONDS`,
    measured once on 2 cores; unknown parts count 60 s)."""
    return {p: REPRODUCE_SECONDS.get(p, (60.0, 60.0))[0 if quick else 1] for p in parts}


def reproduce_notice(parts: Sequence[str], quick: bool) -> str | None:
    """The line `gaussflow reproduce` prints before a run estimated past `LONG_SECONDS`: the
    expected time and the options that shorten it (`--quick`, `--only PART`); `None` for a
    shorter run."""
    est = reproduce_seconds(parts, quick)
    total = sum(est.values())
    if total <= LONG_SECONDS:
        return None
    text = f"expected about {format_seconds(total)} on 2 cores"
    if not quick:
        text += f"; --quick takes about {format_seconds(sum(reproduce_seconds(parts, True).values()))}"
    if len(parts) > 1:
        one = min(parts, key=lambda p: reproduce_seconds([p], True)[p])
        text += (f"; --only PART runs one part (--only {one} --quick: about "
                 f"{format_seconds(reproduce_seconds([one], True)[one])})")
    return text


def format_seconds(s: float) -> str:
    """`s` seconds as `"45 s"`, `"12 min"` or `"2.5 h"`."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


class WorkBar:
    r"""A tqdm bar over a whole command, counted in estimated seconds (see the module docstring).

    Use `with bar.stage(estimate): ...` around each piece of work; `bar.close()` at the end (or
    use the bar as a context manager). With `enabled=False` nothing is printed.

    Parameters
    ----------
    total : float
        The estimated seconds of the whole command ($> 0$).
    desc : str
        The bar's label (the command).
    enabled : bool
        Print the bar (stderr).
    """

    def __init__(self, total: float, desc: str, enabled: bool = True) -> None:
        self.total = max(float(total), 1e-9)
        self.enabled = bool(enabled)
        self.done = 0.0  # estimated seconds of the finished stages
        self._start = time.perf_counter()
        self._bar = None
        if self.enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, smoothing=0, mininterval=0.5,
                             bar_format="{desc} {percentage:3.0f}% |{bar}| {elapsed} elapsed, "
                                        "{remaining} left")

    def _set(self, value: float) -> None:
        if self._bar is not None:
            value = min(value, self.total)
            self._bar.n = value
            self._bar.refresh()

    @contextlib.contextmanager
    def stage(self, estimate: float) -> Iterator[None]:
        """Run one piece of work of `estimate` seconds (the estimate, not a limit)."""
        estimate = max(float(estimate), 0.0)
        begin, t0 = self.done, time.perf_counter()
        elapsed0 = t0 - self._start
        rate = begin / elapsed0 if begin > 0 and elapsed0 > 0 else 1.0  # estimate s per real s
        stop = threading.Event()

        def tick():
            while not stop.wait(0.5):
                self._set(begin + min(0.95 * estimate, rate * (time.perf_counter() - t0)))

        thread = threading.Thread(target=tick, daemon=True) if self._bar is not None else None
        if thread is not None:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join()
            self.done = begin + estimate
            self._set(self.done)

    def each(self, items: Sequence[Any], estimates: Sequence[float] | float) -> Iterator[Any]:
        """Yield the `items`, each as one stage of its estimate (one number: the same for
        all)."""
        if isinstance(estimates, (int, float)):
            estimates = [float(estimates)] * len(items)
        for item, est in zip(items, estimates):
            with self.stage(est):
                yield item

    def wrap_log(self, log: Any) -> Any:
        """`log` (a `print`-like function) made to print above the bar instead of through it."""
        if self._bar is None:
            return log

        def wrapped(*args: Any, **kwargs: Any) -> None:
            from tqdm import tqdm

            with tqdm.external_write_mode():
                log(*args, **kwargs)

        return wrapped

    def write(self, text: str) -> None:
        """Print a line above the bar (or plainly, when the bar is off)."""
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text)

    def close(self) -> None:
        """Fill and close the bar."""
        if self._bar is not None:
            self._set(self.total)
            self._bar.close()
            self._bar = None

    def __enter__(self) -> WorkBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
