"""Adasum (Note [Adasum], csrc/collectives/adasum.cc) over thread ranks, against a numpy float64
reference of the same combination tree: N = 1..16 (powers of two), sizes around every halving
boundary, float16 / bfloat16 / float32 / float64, prescale and postscale, and the errors for
other rank counts and dtypes. No MPI."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support.reference import as_float64, make_input, storage_dtype, to_bfloat16_bits
from tests.support.thread_ranks import run

SEED = 20261202
FLOATS = ("float16", "bfloat16", "float32", "float64")
# Relative error allowed against the float64 tree, per level of the tree (inputs and each
# level's result are rounded to the dtype; dot products are float64 in both).
PER_LEVEL = {"float16": 2e-3, "bfloat16": 1.6e-2, "float32": 2e-7, "float64": 1e-14}


def combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Adasum of two vectors (a vector of norm 0 gets coefficient 1)."""
    dot, aa, bb = float(a @ b), float(a @ a), float(b @ b)
    ca = 1.0 - dot / (2.0 * aa) if aa > 0 else 1.0
    cb = 1.0 - dot / (2.0 * bb) if bb > 0 else 1.0
    return ca * a + cb * b


def adasum_tree(vectors):
    """Level d combines, in every group of 2d ranks, the left half's vector with the right's."""
    values = [v.copy() for v in vectors]
    distance = 1
    while distance < len(values):
        for left in range(0, len(values), 2 * distance):
            values[left] = combine(values[left], values[left + distance])
        distance *= 2
    return values[0]


def decoded(output: np.ndarray, dtype: str) -> np.ndarray:
    return as_float64(output, dtype)


def check(outputs, inputs, dtype, prescale=1.0, postscale=1.0):
    n = len(inputs)
    expected = adasum_tree([as_float64(x, dtype) * prescale for x in inputs]) * postscale
    levels = max(1, int(np.log2(n)) + 1)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    for rank, out in enumerate(outputs):
        got = decoded(out, dtype)
        error = float(np.abs(got - expected).max(initial=0.0))
        assert error <= PER_LEVEL[dtype] * levels * scale * 4, \
            f"rank {rank} {dtype} n={n}: max error {error}"
        assert out.tobytes() == outputs[0].tobytes(), f"rank {rank} differs bitwise from rank 0"


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("dtype", FLOATS)
def test_against_the_tree(n, dtype):
    for count in sorted({0, 1, max(n - 1, 0), n, n + 1, 7, 97, 1009}):
        inputs = [make_input(SEED, r, count, dtype, "sum") for r in range(n)]
        check(run("adasum", inputs, dtype), inputs, dtype)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_prescale_and_postscale(n):
    inputs = [make_input(SEED, r, 61, "float64", "sum") for r in range(n)]
    check(run("adasum", inputs, "float64", prescale=0.5, postscale=3.0), inputs, "float64",
          prescale=0.5, postscale=3.0)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_orthogonal_gradients_add_and_equal_ones_stay(n):
    count = 3 * n
    # Disjoint supports: orthogonal, so Adasum is the sum.
    inputs = []
    for r in range(n):
        x = np.zeros(count)
        x[3 * r:3 * r + 3] = r + 1.0
        inputs.append(x)
    for out in run("adasum", inputs, "float64"):
        np.testing.assert_array_equal(out, np.sum(inputs, axis=0))
    # The same gradient everywhere: Adasum returns it (each pair averages).
    same = [np.linspace(-1.0, 2.0, count)] * n
    for out in run("adasum", same, "float64"):
        np.testing.assert_allclose(out, same[0], rtol=1e-15)
    # Zeros everywhere stay zeros (norm 0: coefficient 1, no division by zero).
    for out in run("adasum", [np.zeros(count)] * n, "float64"):
        np.testing.assert_array_equal(out, np.zeros(count))


def test_bfloat16_storage():
    inputs = [to_bfloat16_bits(np.array([1.0, -2.0, 0.5])), to_bfloat16_bits(np.array([0.0, 0.0, 4.0]))]
    out = run("adasum", inputs, "bfloat16")[0]
    assert out.dtype == storage_dtype("bfloat16")


@pytest.mark.parametrize("n", [3, 5, 6])
def test_other_rank_counts_are_refused(n):
    inputs = [np.ones(4, dtype=np.float32)] * n
    with pytest.raises(Exception, match="power-of-two number of ranks, got %d" % n):
        run("adasum", inputs, "float32")


def test_integer_dtypes_are_refused():
    with pytest.raises(Exception, match="float16, bfloat16, float32 or float64"):
        run("adasum", [np.ones(4, dtype=np.int32)] * 2, "int32")
