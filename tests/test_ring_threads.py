"""The collective algorithms over the in-process thread communicator: N = 1..16 ranks, sizes
around every boundary, every dtype and op, tiny segments to force the multi-segment path. No
MPI, so this runs in seconds."""
from __future__ import annotations

import numpy as np
import pytest

from dist_sync import _testhooks
from reference import (DTYPE_CODE, DTYPES, OP_CODE, OPS, compare, make_input, storage_dtype)
from thread_ranks import run

SEED = 20261127



def sizes_for(n):
    return sorted({0, 1, max(n - 1, 0), n, n + 1, 7, 31, 97, 1009, 4099})


def check_all_ranks(outputs, inputs, dtype, op, **scales):
    for rank, out in enumerate(outputs):
        problem = compare(out, inputs, dtype, op, **scales)
        assert not problem, f"rank {rank}: {problem}"
        assert out.tobytes() == outputs[0].tobytes(), f"rank {rank} differs bitwise from rank 0"


@pytest.mark.parametrize("n", list(range(1, 17)))
def test_ring_allreduce_every_size(n):
    for count in sizes_for(n):
        for dtype in ("float32", "int32", "bfloat16"):
            inputs = [make_input(SEED, r, count, dtype, "sum") for r in range(n)]
            check_all_ranks(run("ring", inputs, dtype), inputs, dtype, "sum")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 13])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_and_op(n, dtype):
    for op in OPS:
        for count in (0, 1, n + 1, 257):
            inputs = [make_input(SEED, r, count, dtype, op) for r in range(n)]
            for kind, small in (("ring", 0), ("allreduce", 0), ("allreduce", 1 << 20)):
                outputs = run(kind, inputs, dtype, op, small=small)
                check_all_ranks(outputs, inputs, dtype, op)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 7, 8, 9, 16])
def test_recursive_doubling(n):
    for dtype in ("float64", "int64", "float16"):
        for op in ("sum", "min", "max", "product"):
            inputs = [make_input(SEED, r, 33, dtype, op) for r in range(n)]
            check_all_ranks(run("recursive_doubling", inputs, dtype, op), inputs, dtype, op)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_scaling_is_fused(n):
    for dtype in ("float32", "float16", "int32"):
        count = 1000
        inputs = [make_input(SEED, r, count, dtype, "sum") for r in range(n)]
        for small in (0, 1 << 20):
            out = run("allreduce", inputs, dtype, "average", small=small)
            check_all_ranks(out, inputs, dtype, "average")
        if dtype != "int32":
            out = run("allreduce", inputs, dtype, "sum", prescale=0.5, postscale=3.0)
            check_all_ranks(out, inputs, dtype, "sum", prescale=0.5, postscale=3.0)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_in_place_and_segment_sizes(n):
    count = 5003
    inputs = [make_input(SEED, r, count, "float64", "sum") for r in range(n)]
    for segment in (8, 24, 4096, 1 << 20):
        for in_flight in (1, 2, 8):
            check_all_ranks(run("inplace", inputs, "float64", segment=segment, in_flight=in_flight),
                            inputs, "float64", "sum")


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_broadcast(n):
    for count in (0, 1, 100, 10007):
        inputs = [make_input(SEED, r, count, "int32", "sum") for r in range(n)]
        for root in {0, n - 1, n // 2}:
            outputs = run("broadcast", inputs, "int32", root=root)
            for out in outputs:
                np.testing.assert_array_equal(out, inputs[root])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_allgather_uneven(n):
    inputs = [make_input(SEED, r, (r * 37) % 11, "int16", "sum") for r in range(n)]
    for out in run("allgather", inputs, "int16"):
        np.testing.assert_array_equal(out, np.concatenate(inputs))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_reducescatter(n):
    for count in (0, 1, n - 1, n + 3, 1001):
        inputs = [make_input(SEED, r, count, "float64", "sum") for r in range(n)]
        outputs = run("reducescatter", inputs, "float64")
        full = np.sum(np.stack(inputs), axis=0)
        bounds = np.cumsum([0] + [count // n + (1 if r < count % n else 0) for r in range(n)])
        for r, out in enumerate(outputs):
            np.testing.assert_allclose(out, full[bounds[r]:bounds[r + 1]], rtol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_alltoall(n):
    rng = np.random.default_rng(n)
    matrix = rng.integers(0, 5, size=(n, n))
    inputs = [np.arange(matrix[r].sum(), dtype=np.int64) + 1000 * r for r in range(n)]
    outputs = run("alltoall", inputs, "int64", split_rows=matrix.flatten().tolist())
    for d, out in enumerate(outputs):
        expected = []
        for s in range(n):
            start = matrix[s, :d].sum()
            expected.append(inputs[s][start:start + matrix[s, d]])
        np.testing.assert_array_equal(out, np.concatenate(expected))


def test_float16_conversion_exhaustive():
    """Every float16 value widens exactly and narrows back to itself; float32 values round to
    nearest even like numpy."""
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    as_float = np.array([_testhooks.half_to_float(int(h)) for h in halves[::97]], dtype=np.float32)
    expected = halves[::97].view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(as_float), np.isnan(expected))
    finite = ~np.isnan(expected)
    np.testing.assert_array_equal(as_float[finite], expected[finite])
    rng = np.random.default_rng(0)
    floats = np.concatenate([rng.standard_normal(2000).astype(np.float32) * 10.0 ** rng.integers(-8, 6, 2000),
                             np.array([65519.0, 65520.0, 1e-8, 6e-8, -0.0, np.inf, -np.inf], np.float32)])
    narrowed = np.array([_testhooks.float_to_half(float(f)) for f in floats], dtype=np.uint16)
    with np.errstate(over="ignore"):
        expected_bits = floats.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(narrowed, expected_bits)


def test_bfloat16_rounding():
    rng = np.random.default_rng(1)
    floats = rng.standard_normal(3000).astype(np.float32)
    got = np.array([_testhooks.float_to_bfloat16(float(f)) for f in floats], dtype=np.uint16)
    np.testing.assert_array_equal(got, [int(b) for b in __import__("reference").to_bfloat16_bits(floats)])



@pytest.mark.parametrize("hosts,per_host", [(1, 3), (2, 1), (2, 2), (2, 3), (3, 2), (4, 4)])
def test_hierarchical_allreduce(hosts, per_host):
    n = hosts * per_host
    for dtype, op in (("float32", "sum"), ("float64", "average"), ("int32", "max"), ("float16", "sum")):
        for count in (1, n - 1, n + 1, 1001):
            inputs = [make_input(SEED, r, count, dtype, op) for r in range(n)]
            for small in (0, 1 << 20):
                outputs = _testhooks.thread_hierarchical(
                    hosts, per_host, [x.tobytes() for x in inputs], DTYPE_CODE[dtype], OP_CODE[op],
                    divisor=n if op == "average" else 1, segment_bytes=64,
                    small_allreduce_bytes=small, in_flight=4)
                check_all_ranks([np.frombuffer(o, dtype=storage_dtype(dtype)) for o in outputs],
                                inputs, dtype, op)
