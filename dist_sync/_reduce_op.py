"""The reductions a user asks for (Average, Sum, Min, Max, Product) and their engine codes."""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np


class ReduceOp(int):
    """A reduction: Average, Sum, Min, Max or Product."""

    _names = {0: "Average", 1: "Sum", 2: "Min", 3: "Max", 4: "Product"}

    def __repr__(self) -> str:
        return f"dist_sync.{self._names[int(self)]}"


Average = ReduceOp(0)
Sum = ReduceOp(1)
Min = ReduceOp(2)
Max = ReduceOp(3)
Product = ReduceOp(4)
# The engine's codes (csrc/common/dtype.h ReduceOp); Average is Sum divided by the size.
_ENGINE_OP = {0: 0, 1: 0, 2: 1, 3: 2, 4: 3}


def engine_op(op: Any) -> Tuple[int, bool]:
    """(engine reduce-op code, average?) for a user-facing op; ValueError if unknown."""
    if isinstance(op, bool) or not isinstance(op, (int, np.integer)) or int(op) not in _ENGINE_OP:
        raise ValueError(f"op must be one of dist_sync.Average, Sum, Min, Max, Product; got {op!r}")
    return _ENGINE_OP[int(op)], int(op) == 0
