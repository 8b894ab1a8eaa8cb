"""Runs one collective over N thread ranks in this process (dist_sync._core._thread_collective)
and returns every rank's output as numpy arrays of the dtype's storage type."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from dist_sync import _core
from reference import DTYPE_CODE, OP_CODE, storage_dtype


def run(kind: str, inputs: Sequence[np.ndarray], dtype: str = "float32", op: str = "sum",
        segment: int = 64, small: int = 0, in_flight: int = 2, root: int = 0,
        split_rows: Sequence[int] = (), prescale: float = 1.0,
        postscale: float = 1.0) -> List[np.ndarray]:
    size = len(inputs)
    divisor = size if op == "average" else 1
    outputs = _core._thread_collective(kind, size, [x.tobytes() for x in inputs], DTYPE_CODE[dtype],
                                       OP_CODE[op], prescale, postscale, divisor, segment, small,
                                       in_flight, root, list(split_rows))
    return [np.frombuffer(o, dtype=storage_dtype(dtype)) for o in outputs]
