"""The reductions a user asks for (Average, Sum, Min, Max, Product), numbered as the engine
numbers them (dist_sync._core.ReduceOp, Horovod's numbers)."""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _core


class ReduceOp(int):
    """A reduction: Average, Sum, Min, Max or Product."""

    def __repr__(self) -> str:
        return f"dist_sync.{_core.ReduceOp(int(self)).name.capitalize()}"


Average = ReduceOp(_core.ReduceOp.AVERAGE)
Sum = ReduceOp(_core.ReduceOp.SUM)
Min = ReduceOp(_core.ReduceOp.MIN)
Max = ReduceOp(_core.ReduceOp.MAX)
Product = ReduceOp(_core.ReduceOp.PRODUCT)
_USER_OPS = (Average, Sum, Min, Max, Product)
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
        raise ValueError(f"op must be one of dist_sync.Average, Sum, Min, Max, Product; got {op!r}")
    return _core.ReduceOp(int(op))
