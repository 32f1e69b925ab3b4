"""Layer schedules: weights that change with depth, piecewise constant in time."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING

import equinox as eqx
import jax
import numpy as np
from jax.typing import ArrayLike

from .._checks import as_scalar
from ..field import Field

if TYPE_CHECKING:
    from ..gaussian import Gaussian


class Layers(Field):
    r"""A stack of distinct layers as one flow: `Layers([(f1, 1.0), (f2, 0.5), ...])`.

    Field $f_i$ acts during $[T_{i-1}, T_i)$ after the schedule's start ($T_0 = 0$,
    $T_i = T_{i-1} + \mathrm{duration}_i$). `gf.solve(layers, g0, t1)` integrates segment by
    segment, from the state reached at each switch, so no solver step crosses a switch; `t1 - t0`
    may not exceed the total duration. Exact iff every layer is exact. Nested schedules are
    flattened.

    Parameters
    ----------
    schedule : Sequence of (Field, float)
        `(field, duration)` pairs, in order; durations positive. A nested `Layers` must be given
        its own total duration. Causal `gf.Masked` fields are not allowed.

    Raises
    ------
    TypeError
        For a malformed schedule, a non-field entry or a masked field.
    ValueError
        For layers of different dimensions, or a nested schedule whose total duration differs
        from the duration it is given.
    """

    fields: tuple
    durations: tuple = eqx.field(static=True)

    name = "layers"
    time_dependent = True

    def __init__(self, schedule: Sequence[tuple[Field, float]]) -> None:
        if not isinstance(schedule, (list, tuple)) or len(schedule) == 0:
            raise TypeError("schedule must be a non-empty list of (field, duration) pairs, e.g. "
                            "gf.Layers([(f1, 1.0), (f2, 0.5)])")
        fields, durations = [], []
        for i, item in enumerate(schedule):
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise TypeError(f"schedule[{i}] must be a (field, duration) pair, got {item!r}")
            f, dur = item
            if not isinstance(f, Field):
                raise TypeError(f"schedule[{i}][0] must be a gaussflow field, got "
                                f"{type(f).__name__}")
            if getattr(f, "causal", False):
                raise TypeError(f"schedule[{i}][0] is a causal gf.Masked field; layer schedules of "
                                "masked fields are not supported (solve each masked layer in turn)")
            dur = float(as_scalar(f"schedule[{i}] duration", dur, positive=True))
            if isinstance(f, Layers):  # flatten; its own durations must add up to ``dur``
                if not np.isclose(f.total, dur, rtol=1e-12, atol=0):
                    raise ValueError(f"schedule[{i}] is a Layers of total duration {f.total} "
                                     f"but is given duration {dur}; they must match")
                fields += list(f.fields)
                durations += list(f.durations)
            else:
                fields.append(f)
                durations.append(dur)
        dims = {f.dim for f in fields}
        if len(dims) != 1:
            raise ValueError(f"the layers act on different dimensions {sorted(dims)}; all must match")
        self.fields = tuple(fields)
        self.durations = tuple(durations)

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return all(f.exact for f in self.fields)

    @property
    def dim(self) -> int:
        return self.fields[0].dim

    @property
    def total(self) -> float:
        """Total duration of the schedule."""
        return float(sum(self.durations))

    @property
    def switch_times(self) -> np.ndarray:
        r"""$T_1, \dots, T_n$ (relative to the start): the end of each layer."""
        return np.cumsum(self.durations)

    def at(self, t: float) -> Field:
        r"""The field acting at time `t` after the start (layer $i$ on $[T_{i-1}, T_i)$).

        The last layer also acts at the end time $T_n$.

        Raises
        ------
        ValueError
            If `t` lies outside $[0, T_n]$.
        """
        t = float(as_scalar("t", t))
        if not 0 <= t <= self.total:
            raise ValueError(f"t must lie in [0, {self.total}] (the schedule's span), got {t}")
        i = bisect.bisect_right(list(self.switch_times), t)
        return self.fields[min(i, len(self.fields) - 1)]

    def velocity(self, g: Gaussian, x: ArrayLike, t: float = 0.0) -> jax.Array:
        r"""$\Gamma[N(g)](x)$ of the layer acting at time `t` (default: the first)."""
        self._check_state(g)
        return self.at(t).velocity(g, x, t)

    def moment_rhs(self, g: Gaussian, t: float = 0.0) -> tuple[jax.Array, jax.Array]:
        r"""$(\mathrm{d}\alpha/\mathrm{d}t, \mathrm{d}\Sigma/\mathrm{d}t)$ of the layer at time `t`.

        The mean's and the covariance's time derivatives under the layer acting at time `t`
        (default: the first).
        """
        self._check_state(g)
        return self.at(t).moment_rhs(g, t)

    def _time_dependent(self, *args):
        raise TypeError("gf.Layers is piecewise constant in time: use layers.at(t) for the field "
                        "acting at time t, or gf.solve, which integrates layer by layer")

    _velocity = _closure = _moment_rhs = _time_dependent

    def __add__(self, other):
        raise TypeError("cannot add to a gf.Layers schedule; add fields inside each layer")

    __radd__ = __add__
