"""Independent references: inputs every rank can regenerate, and numpy (float64, exact for
integers) results to compare dist_sync's against, with the tolerance stated per dtype."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from dist_sync._core import DataType, ReduceOp

DTYPES = ["uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64"]
OPS = ["sum", "min", "max", "product", "average"]
# The engine's codes, as it exports them.
DTYPE_CODE = {name: DataType[name.upper()] for name in DTYPES}
OP_CODE = {name: ReduceOp[name.upper()] for name in OPS}


def to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float -> bfloat16 bit patterns (uint16), rounding to nearest even like the engine."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def storage_dtype(dtype: str) -> np.dtype:
    return np.dtype(np.uint16) if dtype == "bfloat16" else np.dtype(dtype)


def make_input(seed: int, rank: int, count: int, dtype: str, op: str) -> np.ndarray:
    """This rank's input (storage dtype: bfloat16 as uint16 bits)."""
    rng = np.random.default_rng([seed, rank, count, DTYPES.index(dtype), OPS.index(op)])
    if dtype in ("float16", "bfloat16", "float32", "float64"):
        if op == "product":
            values = rng.uniform(0.5, 1.5, count)
        else:
            values = rng.uniform(-1.0, 1.0, count)
        if dtype == "bfloat16":
            return to_bfloat16_bits(values)
        return values.astype(dtype)
    info = np.iinfo(dtype)
    if op == "product":
        return rng.integers(-2 if info.min < 0 else 0, 3, count).astype(dtype)
    # The full range, so integer sums wrap around like numpy's.
    return rng.integers(info.min, int(info.max) + 1, count, dtype=np.int64).astype(dtype)


def as_float64(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return from_bfloat16_bits(values).astype(np.float64)
    return values.astype(np.float64)


def reference(inputs: List[np.ndarray], dtype: str, op: str, prescale: float = 1.0,
              postscale: float = 1.0) -> np.ndarray:
    """The exact result in float64 for floating dtypes, in the integer dtype (wrapping) else."""
    size = len(inputs)
    if dtype in ("float16", "bfloat16", "float32", "float64"):
        stack = np.stack([as_float64(x, dtype) * prescale for x in inputs])
        result = {"sum": stack.sum(0), "average": stack.sum(0) / size, "min": stack.min(0),
                  "max": stack.max(0), "product": stack.prod(0)}[op]
        return result * postscale
    stack = np.stack([x.astype(np.int64) for x in inputs])
    if op in ("sum", "average"):
        total = stack.sum(0, dtype=np.int64).astype(dtype)  # wraps like the engine
        if op == "average":
            wide = total.astype(np.int64)
            total = (np.sign(wide) * (np.abs(wide) // size)).astype(dtype)
        return total
    if op == "product":
        return np.prod(stack, axis=0, dtype=np.int64).astype(dtype)
    return (stack.min(0) if op == "min" else stack.max(0)).astype(dtype)


def tolerance(dtype: str, op: str, size: int) -> Tuple[float, float]:
    """(rtol, atol). Inputs lie in [-1, 1] (product: [0.5, 1.5]), so sums stay below `size`.
    float16/bfloat16 round once per ring step, each step adding at most half an ulp of a value
    of magnitude <= size."""
    if dtype in ("float64",):
        return 1e-12, 1e-12
    if dtype == "float32":
        return 1e-5, 1e-6 * size
    steps = max(size, 2)
    if dtype == "float16":
        return 2.0 ** -10 * steps, 2.0 ** -10 * steps * steps
    if dtype == "bfloat16":
        return 2.0 ** -7 * steps, 2.0 ** -7 * steps * steps
    return 0.0, 0.0


def compare(got: np.ndarray, inputs: List[np.ndarray], dtype: str, op: str,
            prescale: float = 1.0, postscale: float = 1.0) -> str:
    """Empty string when `got` matches the reference, else a description of the mismatch."""
    expected = reference(inputs, dtype, op, prescale, postscale)
    if got.shape != expected.shape:
        return f"shape {got.shape} != {expected.shape}"
    if dtype in ("float16", "bfloat16", "float32", "float64"):
        rtol, atol = tolerance(dtype, op, len(inputs))
        actual = as_float64(got, dtype)
        bad = ~np.isclose(actual, expected, rtol=rtol, atol=atol)
    else:
        bad = got != expected
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        return (f"{int(bad.sum())} of {bad.size} wrong, first at {index}: got {got.flat[index]}, "
                f"expected {expected.flat[index]}")
    return ""
