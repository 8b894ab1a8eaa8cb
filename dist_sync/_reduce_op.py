"""The reductions a user asks for (Average, Sum, Min, Max, Product), numbered as the engine
numbers them (dist_sync._core.ReduceOp, Horovod's numbers)."""
from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

from . import _core


class ReduceOp(int):
    """A reduction: Average, Sum, Adasum (allreduce only), Min, Max or Product."""

    def __repr__(self) -> str:
        return f"dist_sync.{_core.ReduceOp(int(self)).name.capitalize()}"


Average = ReduceOp(_core.ReduceOp.AVERAGE)
Sum = ReduceOp(_core.ReduceOp.SUM)
Min = ReduceOp(_core.ReduceOp.MIN)
Max = ReduceOp(_core.ReduceOp.MAX)
Product = ReduceOp(_core.ReduceOp.PRODUCT)
# Adaptive summation (Note [Adasum] in csrc/collectives/adasum.h): allreduce only, floating
# dtypes, a power-of-two number of ranks.
Adasum = ReduceOp(_core.ReduceOp.ADASUM)
_USER_OPS = (Average, Sum, Adasum, Min, Max, Product)
# The common case (one of the constants above, or a plain int) is a dict lookup.
_ENGINE_OPS = {int(op): _core.ReduceOp(int(op)) for op in _USER_OPS}


def engine_op(op: Any) -> "_core.ReduceOp":
    """The engine's reduce op for a user-facing op; ValueError if unknown. Average is Sum
    divided by the number of ranks."""
    if type(op) is ReduceOp or type(op) is int:
        found = _ENGINE_OPS.get(op)
        if found is not None:
            return found
    if isinstance(op, bool) or not isinstance(op, (int, np.integer)) or int(op) not in _USER_OPS:
        raise ValueError(f"op must be one of dist_sync.Average, Sum, Adasum, Min, Max, Product; "
                         f"got {op!r}")
    return _core.ReduceOp(int(op))


def resolve_op(op: Any, average: Optional[bool], stacklevel: int = 3) -> ReduceOp:
    """The reduction for Horovod's (op, deprecated average) pair; ``op=None`` means Average.
    ``stacklevel``: where the deprecation warning points (the user's call)."""
    if op is not None and average is not None:
        raise ValueError("The op parameter supersedes average; please provide only one of them")
    if average is not None:
        warnings.warn("The average parameter is deprecated; use op=Average or op=Sum",
                      DeprecationWarning, stacklevel=stacklevel)
        return Average if average else Sum
    if op is None:
        return Average
    if type(op) is ReduceOp:  # one of the constants: nothing to check or convert
        return op
    engine_op(op)  # validates
    return ReduceOp(int(op))
