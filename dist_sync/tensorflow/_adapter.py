"""The TensorFlow array adapter (Note [Array adapters] in dist_sync/_adapter.py).

Note [TensorFlow tensors in the engine]
TensorFlow's CPU tensors are dense, C-ordered blocks. An eager tensor's memory is viewed as a
numpy array without a copy (``EagerTensor._numpy()``), and that view is what the shared builders
and the engine see: the adapter's "tensors" are numpy views, and the public functions of
dist_sync.tensorflow turn the engine's result buffers back into ``tf.Tensor`` objects (one copy,
made by ``tf.convert_to_tensor``). bfloat16 travels as its 2-byte bit pattern. This is the
eager path; graphs (inside ``tf.function``) run compiled kernels that hand TensorFlow's buffers
to the engine directly (Note [Collectives inside tf.function] in _graph.py).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import ml_dtypes
import numpy as np
import tensorflow as tf

from .. import _dtypes, _session
from .._adapter import Entry
from .._numpy import NumpyAdapter
from .._session import DEVICE_CPU, Handle, RawResult

TF_TO_CODE: Dict[tf.dtypes.DType, int] = {
    tf.uint8: _dtypes.UINT8,
    tf.int8: _dtypes.INT8,
    tf.int16: _dtypes.INT16,
    tf.int32: _dtypes.INT32,
    tf.int64: _dtypes.INT64,
    tf.float16: _dtypes.FLOAT16,
    tf.bfloat16: _dtypes.BFLOAT16,
    tf.float32: _dtypes.FLOAT32,
    tf.float64: _dtypes.FLOAT64,
}
SUPPORTED = "tf.uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64"
_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
_NUMPY_TO_CODE = {np.dtype(dtype.as_numpy_dtype): code for dtype, code in TF_TO_CODE.items()}


def dtype_code(dtype: tf.dtypes.DType, what: str) -> int:
    """The engine's code for a TensorFlow dtype; TypeError for dtypes the engine cannot reduce."""
    code = TF_TO_CODE.get(tf.as_dtype(dtype))
    if code is None:
        raise TypeError(f"{what}: unsupported dtype {tf.as_dtype(dtype).name}; dist_sync "
                        f"supports {SUPPORTED}")
    return code


def to_tensor(value: Any) -> Any:
    """A result of the shared builders (numpy arrays, lists and tuples of them) as tf.Tensors."""
    if isinstance(value, np.ndarray):
        return tf.convert_to_tensor(value)
    if isinstance(value, list):
        return [to_tensor(item) for item in value]
    if isinstance(value, tuple):
        return tuple(to_tensor(item) for item in value)
    return value


# Operations that move values without combining them (broadcast, allgather, alltoall) also take
# bool, uint16, uint32 and uint64 tensors, as Horovod does: their bytes travel as the engine's
# integer type of the same width.
_MOVING = (_session.BROADCAST, _session.ALLGATHER, _session.ALLTOALL)
MOVABLE = (tf.bool, tf.uint16, tf.uint32, tf.uint64)
_MOVABLE_NUMPY = {np.dtype(d.as_numpy_dtype) for d in MOVABLE}
_SAME_WIDTH = {1: (np.uint8, _dtypes.UINT8), 2: (np.int16, _dtypes.INT16),
               4: (np.int32, _dtypes.INT32), 8: (np.int64, _dtypes.INT64)}


def _engine_view(array: np.ndarray) -> np.ndarray:
    """What the engine reads and writes: bfloat16 as its uint16 bit pattern, the movable dtypes
    as integers of their width."""
    if array.dtype == _BFLOAT16:
        return array.view(np.uint16)
    if array.dtype in _MOVABLE_NUMPY:
        return array.view(_SAME_WIDTH[array.dtype.itemsize][0])
    return array


class TensorFlowAdapter(NumpyAdapter):
    """Eager TensorFlow tensors and variables on the CPU, handed to the engine as numpy views of
    their memory (Note [TensorFlow tensors in the engine]); what it does with those views
    (outputs, shapes, rows) is the numpy adapter's."""

    noun = "tensor"
    plural = "tensors"

    def check(self, value: Any, what: str) -> Any:
        if isinstance(value, np.ndarray):
            # The numpy view of an eager tensor (how dist_sync.tensorflow's collectives call the
            # shared builders, Note [TensorFlow tensors in the engine]).
            if value.dtype not in _NUMPY_TO_CODE and value.dtype not in _MOVABLE_NUMPY:
                raise TypeError(f"{what}: unsupported dtype {value.dtype}; dist_sync supports "
                                f"{SUPPORTED}")
            return value
        if isinstance(value, tf.Variable):
            value = value.read_value()
        if isinstance(value, tf.IndexedSlices):
            raise TypeError(f"{what} expects a dense tf.Tensor, got tf.IndexedSlices (convert "
                            f"with tf.convert_to_tensor, or use allreduce, which allgathers "
                            f"them)")
        if not isinstance(value, tf.Tensor):
            raise TypeError(f"{what} expects a tf.Tensor or tf.Variable, got "
                            f"{type(value).__name__}")
        if not hasattr(value, "_numpy"):
            raise TypeError(f"{what} needs an eager tensor here, got the symbolic tensor "
                            f"{value.name}")
        dtype_code(value.dtype, what)
        if "GPU" in (value.device or "").upper():
            raise TypeError(f"{what}: got a tensor on {value.device}; dist_sync.tensorflow "
                            f"works on CPU tensors (place the op with tf.device('/CPU:0'))")
        return value

    def contiguous_input(self, tensor: Any, what: str) -> np.ndarray:
        array = tensor if isinstance(tensor, np.ndarray) else np.asarray(tensor._numpy())
        # (np.ascontiguousarray would turn a 0-d array into a 1-d one.)
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)

    def inplace_target(self, tensor: Any, what: str) -> np.ndarray:
        raise ValueError(f"{what}: TensorFlow tensors are immutable; use the out-of-place form "
                         f"(variables are updated with assign)")

    def int_list(self, values: Any) -> Any:
        if isinstance(values, (tf.Tensor, tf.Variable)):
            if values.dtype.is_floating:
                raise TypeError(f"splits must hold integers, got a {values.dtype.name} tensor")
            return [int(v) for v in np.asarray(values).reshape(-1)]
        if isinstance(values, np.ndarray):
            if values.dtype.kind == "f":
                raise TypeError(f"splits must hold integers, got a {values.dtype} array")
            return [int(v) for v in values.reshape(-1)]
        return values

    def int_tensor(self, values: List[int]) -> np.ndarray:
        return np.asarray(values, dtype=np.int32)

    def result(self, raw: RawResult, like: np.ndarray) -> np.ndarray:
        buffer, shape = raw[0], list(raw[1])
        if buffer is None or len(memoryview(buffer)) == 0:
            return np.empty(shape, dtype=like.dtype)
        return np.frombuffer(buffer, dtype=np.uint8).view(like.dtype).reshape(shape)

    def submit(self, kind: int, name: Optional[str], what: str, entries: Sequence[Entry],
               keepalive: Any, finish: Callable[[RawResult], Any], **options: Any) -> Handle:
        specs = []
        for entry in entries:
            code = _NUMPY_TO_CODE.get(entry.source.dtype)
            if entry.source.dtype in _MOVABLE_NUMPY and kind in _MOVING:
                code = _SAME_WIDTH[entry.source.dtype.itemsize][1]
            if code is None:
                raise TypeError(f"{what}: unsupported dtype {entry.source.dtype}; dist_sync "
                                f"supports {SUPPORTED}")
            target = entry.target
            specs.append((entry.name, _engine_view(entry.source),
                          _engine_view(target) if target is not None else 0, code,
                          entry.source.shape))
        return _session.submit(kind, name, specs, keepalive, finish, device=DEVICE_CPU,
                               **options)


TENSORFLOW = TensorFlowAdapter()
