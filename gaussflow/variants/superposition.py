"""Superposition of fields: ``f1 + f2`` is the field ``Gamma_1[mu] + Gamma_2[mu]``."""

from __future__ import annotations

import functools

import jax.numpy as jnp

from .base import Field


class Sum(Field):
    """Sum of fields acting on the same dimension; exact iff every summand is exact.

    Velocities, closures ``(d alpha/dt, J)`` and moment right-hand sides add.
    """

    parts: tuple

    name = "sum"

    def __init__(self, parts):
        parts = tuple(parts)
        if len(parts) < 1:
            raise ValueError("parts must hold at least one field")
        for i, p in enumerate(parts):
            if not isinstance(p, Field):
                raise TypeError(f"parts[{i}] must be a gaussflow field, got {type(p).__name__}")
        dims = {p.dim for p in parts}
        if len(dims) != 1:
            raise ValueError(f"parts act on different dimensions {sorted(dims)}; all must match")
        self.parts = parts

    @classmethod
    def of(cls, a, b):
        pa = a.parts if isinstance(a, Sum) else (a,)
        pb = b.parts if isinstance(b, Sum) else (b,)
        return cls(pa + pb)

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return all(p.exact for p in self.parts)

    @property
    def dim(self) -> int:
        return self.parts[0].dim

    def _velocity(self, mean, cov, x):
        return functools.reduce(jnp.add, [p._velocity(mean, cov, x) for p in self.parts])

    def _closure(self, mean, cov):
        outs = [p._closure(mean, cov) for p in self.parts]
        return sum(o[0] for o in outs), sum(o[1] for o in outs)

    def _moment_rhs(self, mean, cov):
        outs = [p._moment_rhs(mean, cov) for p in self.parts]
        return sum(o[0] for o in outs), sum(o[1] for o in outs)

    def _domain_ok(self, mean, cov):
        return functools.reduce(jnp.logical_and, [p._domain_ok(mean, cov) for p in self.parts])
