"""Reproducible allreduce (Note [Canonical reduction order]) over the thread communicator: a
tensor's result is bit-identical whether it is reduced alone or fused at any position behind
tensors of awkward sizes, whatever the segment size, the small-message threshold (which picks
the algorithm) or the segments in flight, for every dtype and op, flat and hierarchical. Each
result is also checked against numpy."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.randomized import configured
from tests.support.reference import DTYPES, OPS, compare, make_input
from tests.support.thread_ranks import run, run_fused

SEED = 20261202
FILLERS = [1, 2, 7, 97, 1009, 4099]  # never a multiple of 3, 4 or 5
FLOATS = ["float16", "bfloat16", "float32", "float64"]


def rank_tensors(n, counts, dtype, op, salt=0):
    """tensors[r][t]: rank r's tensor t (independent inputs per rank and tensor)."""
    return [[make_input(SEED + salt + 7919 * t, r, count, dtype, op) for t, count in enumerate(counts)]
            for r in range(n)]


def check_against_numpy(results, tensors, dtype, op, **scales):
    for t in range(len(tensors[0])):
        inputs = [rank[t] for rank in tensors]
        for r, rank in enumerate(results):
            problem = compare(rank[t], inputs, dtype, op, **scales)
            assert not problem, f"rank {r}, tensor {t}: {problem}"
            assert rank[t].tobytes() == results[0][t].tobytes(), f"rank {r} differs from rank 0"


def test_layout_changes_bits_without_it():
    """The problem this guards against: with the order following the fused buffer, one tensor
    alone and the same tensor fused behind another give different bits on 3 ranks."""
    target = rank_tensors(3, [100003], "float32", "sum")
    filler = rank_tensors(3, [7], "float32", "sum", salt=1)
    alone = run_fused(target, reproducible=False, segment=1 << 20)[0][0]
    fused = run_fused([f + t for f, t in zip(filler, target)], reproducible=False,
                      segment=1 << 20)[0][1]
    assert alone.tobytes() != fused.tobytes()


# Each dtype once and each rank count once (the pairing is arbitrary; the rank count decides the
# chunking, the dtype the element size and rounding).
@pytest.mark.parametrize("n,dtype", [(3, "float16"), (4, "bfloat16"), (5, "float32")])
def test_alone_and_fused_at_every_position(n, dtype):
    for count in (1, n - 1, n + 1, 4099, 100003):
        target = rank_tensors(n, [count], dtype, "sum")
        fillers = rank_tensors(n, FILLERS, dtype, "sum", salt=1)
        expected = run_fused(target, dtype)[0][0]
        check_against_numpy(run_fused(target, dtype), target, dtype, "sum")
        for position in range(len(FILLERS) + 1):
            fused = [f[:position] + t + f[position:] for f, t in zip(fillers, target)]
            for segment, small in ((64, 0), (24, 0), (1 << 20, 0), (4096, 1 << 30)):
                results = run_fused(fused, dtype, segment=segment, small=small)
                for r, rank in enumerate(results):
                    assert rank[position].tobytes() == expected.tobytes(), (
                        f"count {count} at position {position}, segment {segment}, small {small}: "
                        f"rank {r} differs from the tensor alone")
            if position == len(FILLERS) // 2:
                check_against_numpy(results, fused, dtype, "sum")


@pytest.mark.parametrize("n", [3, 4, 5])
def test_every_dtype_op_and_scaling(n):
    counts = [1, n + 2, 1021, 31]
    for dtype in DTYPES:
        for op in OPS:
            scales = ({"prescale": 0.5, "postscale": 3.0}
                      if dtype in FLOATS and op in ("sum", "average") else {})
            tensors = rank_tensors(n, counts, dtype, op)
            fused = run_fused(tensors, dtype, op, small=0, **scales)
            check_against_numpy(fused, tensors, dtype, op, **scales)
            for t in range(len(counts)):
                one = [[rank[t]] for rank in tensors]
                for small in (0, 1 << 30):
                    alone = run_fused(one, dtype, op, small=small, segment=8, **scales)[0][0]
                    assert alone.tobytes() == fused[0][t].tobytes(), (
                        f"{dtype} {op}: tensor {t} alone (small {small}) differs from fused")


@pytest.mark.parametrize("hosts,per_host", [(2, 2), (3, 1), (2, 3), (3, 2)])
def test_hierarchical(hosts, per_host):
    n = hosts * per_host
    for dtype, op in (("float32", "sum"), ("bfloat16", "average"), ("float64", "product")):
        target = rank_tensors(n, [5003], dtype, op)
        fillers = rank_tensors(n, [3, 1009, 11], dtype, op, salt=1)
        expected = run_fused(target, dtype, op, hosts=hosts)[0][0]
        for position in range(4):
            fused = [f[:position] + t + f[position:] for f, t in zip(fillers, target)]
            for segment, small in ((64, 0), (1 << 20, 1 << 30)):
                results = run_fused(fused, dtype, op, hosts=hosts, segment=segment, small=small)
                check_against_numpy(results, fused, dtype, op)
                assert results[0][position].tobytes() == expected.tobytes(), (
                    f"{dtype} {op} at position {position}, segment {segment}, small {small}")


@pytest.mark.parametrize("n", [3, 4, 5])
def test_reducescatter_ignores_segments(n):
    """Reducescatter is never fused: its chunks are each rank's rows, so only the segment size
    and the segments in flight could change anything, and they do not."""
    inputs = [make_input(SEED, r, 10007, "float32", "sum") for r in range(n)]
    expected = run("reducescatter", inputs, "float32", segment=1 << 20)
    for segment, in_flight in ((8, 1), (100, 3), (4096, 8)):
        got = run("reducescatter", inputs, "float32", segment=segment, in_flight=in_flight)
        for r in range(n):
            assert got[r].tobytes() == expected[r].tobytes(), f"rank {r}, segment {segment}"


@given(data=st.data(), n=st.integers(3, 5), dtype=st.sampled_from(["float32", "float16", "bfloat16", "float64"]),
       op=st.sampled_from(["sum", "average", "product", "min", "max"]))
@configured(max_examples=40)
def test_random_layouts(data, n, dtype, op):
    """Random tensors split into random groups (fusion cycles), in random orders, with random
    segment sizes, small-message thresholds and segments in flight: every tensor's bits are
    those of the tensor alone."""
    counts = data.draw(st.lists(st.one_of(st.integers(0, 40), st.integers(41, 20000)),
                                min_size=1, max_size=8), label="counts")
    tensors = rank_tensors(n, counts, dtype, op, salt=data.draw(st.integers(0, 1000), label="salt"))
    alone = [run_fused([[rank[t]] for rank in tensors], dtype, op)[0][0] for t in range(len(counts))]
    order = data.draw(st.permutations(range(len(counts))), label="order")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(counts) - 1)), max_size=3), label="cuts"))
    groups = [list(order[a:b]) for a, b in zip([0] + cuts, cuts + [len(counts)]) if a < b]
    segment = data.draw(st.sampled_from([2, 8, 24, 100, 4096, 1 << 20]), label="segment")
    small = data.draw(st.sampled_from([0, 64, 4096, 1 << 16, 1 << 30]), label="small")
    in_flight = data.draw(st.integers(1, 4), label="in_flight")
    element = 2 if dtype in ("float16", "bfloat16") else np.dtype(dtype).itemsize
    segment = max(element, segment // element * element)
    for group in groups:
        results = run_fused([[rank[t] for t in group] for rank in tensors], dtype, op,
                            segment=segment, small=small, in_flight=in_flight)
        for i, t in enumerate(group):
            for r, rank in enumerate(results):
                assert rank[i].tobytes() == alone[t].tobytes(), (
                    f"tensor {t} (count {counts[t]}) in group {group}: rank {r} differs from alone")
