"""Runs one collective over N thread ranks in this process (dist_sync._testhooks.thread_collective)
and returns every rank's output as numpy arrays of the dtype's storage type."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from dist_sync import _testhooks
from dist_sync._core import OpType
from reference import DTYPE_CODE, OP_CODE, storage_dtype

Algorithm = _testhooks.AllreduceAlgorithm
# The allreduce kinds: (algorithm, in place). "allreduce" hands the input over as uneven pieces.
ALLREDUCES = {
    "allreduce": (Algorithm.SIZE_BASED, False),
    "inplace": (Algorithm.SIZE_BASED, True),
    "ring": (Algorithm.RING, False),
    "recursive_doubling": (Algorithm.RECURSIVE_DOUBLING, False),
}


def run(kind: str, inputs: Sequence[np.ndarray], dtype: str = "float32", op: str = "sum",
        segment: int = 64, small: int = 0, in_flight: int = 2, root: int = 0,
        split_rows: Sequence[int] = (), prescale: float = 1.0,
        postscale: float = 1.0) -> List[np.ndarray]:
    size = len(inputs)
    divisor = size if op == "average" else 1
    if kind in ALLREDUCES:
        op_type, (algorithm, in_place) = OpType.ALLREDUCE, ALLREDUCES[kind]
    else:
        op_type, algorithm, in_place = OpType[kind.upper()], Algorithm.SIZE_BASED, False
    outputs = _testhooks.thread_collective(
        op_type, [x.tobytes() for x in inputs], DTYPE_CODE[dtype], OP_CODE[op], prescale=prescale,
        postscale=postscale, divisor=divisor, segment_bytes=segment, small_allreduce_bytes=small,
        in_flight=in_flight, root=root, split_rows=list(split_rows), algorithm=algorithm,
        in_place=in_place)
    return [np.frombuffer(o, dtype=storage_dtype(dtype)) for o in outputs]
