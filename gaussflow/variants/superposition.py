r"""Superposition of fields: `f1 + f2` is the field $\Gamma_1[\mu] + \Gamma_2[\mu]$.

The derivation of a sum is the sum of the derivations
(`gaussflow.symbolic.engine.sum_derivations`): each summand's weights get an index ($Q_1$,
$\beta_1$, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import jax.numpy as jnp

from ..symbolic.engine import sum_derivations
from ..field import Field, realise, register_sum


class SumDerivation:
    """`f.derivation()` on a sum: the sum of its parts' derivations (cached per kind of parts).

    On the class (`Sum.derivation()`, `MultiHead.derivation()`) it gives the class's example
    (`Sum._example_parts`), so that `gf.derive("multihead")` works by name.
    """

    def __get__(self, obj, cls):
        if obj is None:
            return lambda: _sum_derivation(cls.name, *_with_notes(cls, cls._example_parts()))
        return lambda: _sum_derivation(
            obj.name, *_with_notes(type(obj), [_derivation_of_part(p) for p in obj.parts]))


def _with_notes(cls, derivations):
    derivations = tuple(derivations)
    return derivations, cls._derivation_notes(len(derivations))


def _derivation_of_part(p):
    return p.derivation()


@functools.cache
def _sum_derivation(name, derivations, notes):
    return realise(sum_derivations(name, derivations, notes))


class Sum(Field):
    r"""Sum of fields acting on the same dimension; exact iff every summand is exact.

    Velocities, closures $(\mathrm{d}\alpha/\mathrm{d}t, J)$ and moment right-hand sides add.

    Parameters
    ----------
    parts : Iterable of Field
        The summands (at least one), all acting on the same dimension; no time-dependent layer
        schedules (`gf.Layers`) and no causal `gf.Masked` fields.

    Raises
    ------
    TypeError
        For a part that is not a field, a layer schedule or a masked field.
    ValueError
        For no parts, or parts of different dimensions.
    """

    parts: tuple

    name = "sum"

    def __init__(self, parts: Iterable[Field]) -> None:
        parts = tuple(parts)
        if len(parts) < 1:
            raise ValueError("parts must hold at least one field")
        for i, p in enumerate(parts):
            if not isinstance(p, Field):
                raise TypeError(f"parts[{i}] must be a gaussflow field, got {type(p).__name__}")
            if getattr(p, "time_dependent", False):
                raise TypeError(f"parts[{i}] is a time-dependent layer schedule "
                                f"({type(p).__name__}); a sum of schedules is not supported: put "
                                "the sum inside each layer instead")
            if getattr(p, "causal", False):
                raise TypeError(f"parts[{i}] is a causal gf.Masked field; a sum with masked fields "
                                "is not supported: mask the sum instead, gf.Masked(f1 + f2, n_blocks)")
        dims = {p.dim for p in parts}
        if len(dims) != 1:
            raise ValueError(f"parts act on different dimensions {sorted(dims)}; all must match")
        self.parts = parts

    @classmethod
    def _example_parts(cls):
        raise TypeError("a Sum's derivation depends on its parts: call derivation() on a sum "
                        "of fields, e.g. (f1 + f2).derivation() or gf.derive(f1 + f2)")

    @classmethod
    def _derivation_notes(cls, n_parts) -> tuple:
        return ()

    @classmethod
    def of(cls, a: Field, b: Field) -> Sum:
        """The sum `a + b`, flattened: the parts of a `Sum` operand are taken over one by one."""
        pa = a.parts if isinstance(a, Sum) else (a,)
        pb = b.parts if isinstance(b, Sum) else (b,)
        return cls(pa + pb)

    derivation = SumDerivation()

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return all(p.exact for p in self.parts)

    @property
    def dim(self) -> int:
        return self.parts[0].dim

    def _param_values(self) -> dict:
        """Values of the summed derivation's parameters: part `i`'s weights with subscript `i`."""
        out = {}
        for i, p in enumerate(self.parts, 1):
            out.update({f"{k}_{i}": v for k, v in p._param_values().items()})
        return out

    def _args(self):
        vals = self._param_values()
        return [vals[p.name] for p in self.derivation().params]

    def _velocity(self, t, mean, cov, x):
        return functools.reduce(jnp.add, [p._velocity(t, mean, cov, x) for p in self.parts])

    def _closure(self, t, mean, cov):
        outs = [p._closure(t, mean, cov) for p in self.parts]
        return sum(o[0] for o in outs), sum(o[1] for o in outs)

    def _moment_rhs(self, t, mean, cov):
        outs = [p._moment_rhs(t, mean, cov) for p in self.parts]
        return sum(o[0] for o in outs), sum(o[1] for o in outs)

    def _flow_rhs(self, t, mean, Phi, cov0):
        outs = [p._flow_rhs(t, mean, Phi, cov0) for p in self.parts]
        return sum(o[0] for o in outs), sum(o[1] for o in outs)

    def _domain_ok(self, t, mean, cov):
        return functools.reduce(jnp.logical_and, [p._domain_ok(t, mean, cov) for p in self.parts])


register_sum(Sum)
