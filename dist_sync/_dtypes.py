"""Element types: numpy dtypes <-> the engine's dtype codes (dist_sync._core.DataType)."""
from __future__ import annotations

import numpy as np

from ._core import DataType

UINT8, INT8, INT16, INT32, INT64, FLOAT16, BFLOAT16, FLOAT32, FLOAT64 = (
    DataType.UINT8, DataType.INT8, DataType.INT16, DataType.INT32, DataType.INT64,
    DataType.FLOAT16, DataType.BFLOAT16, DataType.FLOAT32, DataType.FLOAT64)

NUMPY_TO_CODE = {
    np.dtype(np.uint8): UINT8,
    np.dtype(np.int8): INT8,
    np.dtype(np.int16): INT16,
    np.dtype(np.int32): INT32,
    np.dtype(np.int64): INT64,
    np.dtype(np.float16): FLOAT16,
    np.dtype(np.float32): FLOAT32,
    np.dtype(np.float64): FLOAT64,
}
CODE_TO_NUMPY = {code: dtype for dtype, code in NUMPY_TO_CODE.items()}
# bfloat16 has no numpy dtype; its 2-byte elements travel as uint16 on the numpy side.
CODE_TO_NUMPY[BFLOAT16] = np.dtype(np.uint16)

SUPPORTED_NAMES = "uint8, int8, int16, int32, int64, float16, bfloat16 (torch), float32, float64"


def code_of(dtype: np.dtype) -> int:
    """The engine's code for a numpy dtype; TypeError if dist_sync cannot reduce it."""
    # The common case first, as one dict lookup: a numpy dtype equals a key only if it is that
    # native type (other byte orders compare unequal). isinstance(dtype, np.dtype) would cost
    # four times the lookup (numpy's dtype metaclass), Note [Submission cost].
    try:
        code = NUMPY_TO_CODE.get(dtype)
    except TypeError:  # unhashable, so not a dtype: np.dtype() below says what is wrong
        code = None
    if code is not None:
        return code
    dt = np.dtype(dtype)
    code = NUMPY_TO_CODE.get(dt) if dt.isnative else None
    if code is None:
        raise TypeError(f"unsupported dtype {dt}; dist_sync supports {SUPPORTED_NAMES}")
    return code
