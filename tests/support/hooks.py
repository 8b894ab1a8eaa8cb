"""The C++ test hooks of dist_sync._core, reached by every test through this module alone: the
collective algorithms over the in-process thread communicator, the segment planner, the
huge-page probe, the 16-bit conversions and the engine's counters. It also says how they encode
dtypes and ops, so the tests pass names ("float32", "sum")."""
from __future__ import annotations

from typing import Dict, List, Sequence

from dist_sync import _core
from tests.support.reference import DTYPES

# The engine's codes (csrc/common/dtype.h); average is a sum with a divisor.
DTYPE_CODE = {name: code for code, name in enumerate(DTYPES)}
OP_CODE = {"sum": 0, "min": 1, "max": 2, "product": 3, "average": 0}

plan_segments = _core._plan_segments
on_huge_pages = _core._on_huge_pages
float_to_half = _core._float_to_half
half_to_float = _core._half_to_float
float_to_bfloat16 = _core._float_to_bfloat16


def thread_collective(kind: str, inputs: Sequence[bytes], dtype: str, op: str, prescale: float,
                      postscale: float, divisor: int, segment: int, small: int, in_flight: int,
                      root: int, split_rows: Sequence[int]) -> List[bytes]:
    """One collective over len(inputs) thread ranks; every rank's output."""
    return _core._thread_collective(kind, len(inputs), list(inputs), DTYPE_CODE[dtype], OP_CODE[op],
                                    prescale, postscale, divisor, segment, small, in_flight, root,
                                    list(split_rows))


def thread_hierarchical(hosts: int, per_host: int, inputs: Sequence[bytes], dtype: str, op: str,
                        prescale: float, postscale: float, divisor: int, segment: int,
                        small: int) -> List[bytes]:
    """The hierarchical allreduce over hosts x per_host thread ranks; every rank's output."""
    return _core._thread_hierarchical(hosts, per_host, list(inputs), DTYPE_CODE[dtype],
                                      OP_CODE[op], prescale, postscale, divisor, segment, small)


def engine_stats() -> Dict[str, int]:
    """The running engine's counters: cycles, full_rounds, executions, requests, cache_hits."""
    return _core._engine_stats()
