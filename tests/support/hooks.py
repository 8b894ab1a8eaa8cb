"""The C++ test hooks (dist_sync._testhooks, plus the running engine's counters in
dist_sync._core), reached by every test through this module alone: the collective algorithms
over the in-process thread communicator, the segment planner, the huge-page probe, the 16-bit
conversions and the engine's counters. It also says how they encode dtypes and ops, so the tests
pass names ("float32", "sum")."""
from __future__ import annotations

from typing import Dict, List, Sequence

from dist_sync import _core, _testhooks
from dist_sync._core import DataType, OpType, ReduceOp
from tests.support.reference import DTYPES, OPS

# The engine's codes, as it exports them.
DTYPE_CODE = {name: DataType[name.upper()] for name in DTYPES}
OP_CODE = {name: ReduceOp[name.upper()] for name in OPS}

plan_segments = _testhooks.plan_segments
on_huge_pages = _testhooks.on_huge_pages
float_to_half = _testhooks.float_to_half
half_to_float = _testhooks.half_to_float
float_to_bfloat16 = _testhooks.float_to_bfloat16

Algorithm = _testhooks.AllreduceAlgorithm
# The allreduce kinds the tests name: (algorithm, in place). "allreduce" hands the input over
# as uneven pieces, so the ring sees segments straddling them.
_ALLREDUCES = {
    "allreduce": (Algorithm.SIZE_BASED, False),
    "inplace": (Algorithm.SIZE_BASED, True),
    "ring": (Algorithm.RING, False),
    "recursive_doubling": (Algorithm.RECURSIVE_DOUBLING, False),
    "adasum": (Algorithm.ADASUM, False),
}


def thread_collective(kind: str, inputs: Sequence[bytes], dtype: str, op: str, prescale: float,
                      postscale: float, divisor: int, segment: int, small: int, in_flight: int,
                      root: int, split_rows: Sequence[int]) -> List[bytes]:
    """One collective over len(inputs) thread ranks; every rank's output."""
    if kind in _ALLREDUCES:
        op_type, (algorithm, in_place) = OpType.ALLREDUCE, _ALLREDUCES[kind]
    else:
        op_type, algorithm, in_place = OpType[kind.upper()], Algorithm.SIZE_BASED, False
    return _testhooks.thread_collective(
        op_type, list(inputs), DTYPE_CODE[dtype], OP_CODE[op], prescale=prescale,
        postscale=postscale, divisor=divisor, segment_bytes=segment, small_allreduce_bytes=small,
        in_flight=in_flight, root=root, split_rows=list(split_rows), algorithm=algorithm,
        in_place=in_place)


def thread_hierarchical(hosts: int, per_host: int, inputs: Sequence[bytes], dtype: str, op: str,
                        prescale: float, postscale: float, divisor: int, segment: int,
                        small: int) -> List[bytes]:
    """The hierarchical allreduce over hosts x per_host thread ranks; every rank's output."""
    return _testhooks.thread_hierarchical(
        hosts, per_host, list(inputs), DTYPE_CODE[dtype], OP_CODE[op], prescale=prescale,
        postscale=postscale, divisor=divisor, segment_bytes=segment, small_allreduce_bytes=small,
        in_flight=4)


def thread_fused_allreduce(hosts: int, inputs: Sequence[Sequence[bytes]], dtype: str, op: str,
                           prescale: float, postscale: float, divisor: int, segment: int,
                           small: int, in_flight: int, reproducible: bool) -> List[List[bytes]]:
    """Allreduce of inputs[r] (rank r's tensors, one span each) over hosts x len(inputs)/hosts
    thread ranks, hierarchical when hosts > 1; results[r][t]."""
    return _testhooks.thread_fused_allreduce(
        hosts, [list(rank) for rank in inputs], DTYPE_CODE[dtype], OP_CODE[op], prescale=prescale,
        postscale=postscale, divisor=divisor, segment_bytes=segment, small_allreduce_bytes=small,
        in_flight=in_flight, reproducible=reproducible)


def engine_stats() -> Dict[str, int]:
    """The running engine's counters: cycles, full_rounds, executions, requests, cache_hits."""
    return _core._engine_stats()
