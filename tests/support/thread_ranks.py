"""Runs one collective over N thread ranks in this process (the thread-communicator test hooks)
and returns every rank's output as numpy arrays of the dtype's storage type."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from tests.support import hooks
from tests.support.reference import storage_dtype


def run(kind: str, inputs: Sequence[np.ndarray], dtype: str = "float32", op: str = "sum",
        segment: int = 64, small: int = 0, in_flight: int = 2, root: int = 0,
        split_rows: Sequence[int] = (), prescale: float = 1.0,
        postscale: float = 1.0) -> List[np.ndarray]:
    size = len(inputs)
    divisor = size if op == "average" else 1
    outputs = hooks.thread_collective(kind, [x.tobytes() for x in inputs], dtype, op, prescale,
                                      postscale, divisor, segment, small, in_flight, root,
                                      split_rows)
    return [np.frombuffer(o, dtype=storage_dtype(dtype)) for o in outputs]


def run_hierarchical(hosts: int, per_host: int, inputs: Sequence[np.ndarray], dtype: str,
                     op: str, segment: int = 64, small: int = 0) -> List[np.ndarray]:
    """The hierarchical allreduce over hosts x per_host thread ranks (inputs: one per rank)."""
    divisor = len(inputs) if op == "average" else 1
    outputs = hooks.thread_hierarchical(hosts, per_host, [x.tobytes() for x in inputs], dtype, op,
                                        1.0, 1.0, divisor, segment, small)
    return [np.frombuffer(o, dtype=storage_dtype(dtype)) for o in outputs]


def run_fused(tensors: Sequence[Sequence[np.ndarray]], dtype: str = "float32", op: str = "sum",
              segment: int = 64, small: int = 0, in_flight: int = 2, hosts: int = 1,
              reproducible: bool = True, prescale: float = 1.0,
              postscale: float = 1.0) -> List[List[np.ndarray]]:
    """Allreduce of tensors[r] (rank r's tensors, fused as one span each, as the engine fuses
    them) over len(tensors) thread ranks, hierarchical when hosts > 1; results[r][t]."""
    size = len(tensors)
    divisor = size if op == "average" else 1
    outputs = hooks.thread_fused_allreduce(
        hosts, [[x.tobytes() for x in rank] for rank in tensors], dtype, op, prescale, postscale,
        divisor, segment, small, in_flight, reproducible)
    return [[np.frombuffer(o, dtype=storage_dtype(dtype)) for o in rank] for rank in outputs]
