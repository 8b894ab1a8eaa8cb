"""The numpy array adapter (Note [Array adapters] in _adapter.py)."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from . import _dtypes, _session
from ._adapter import Entry
from ._session import DEVICE_CPU, Handle, RawResult


class NumpyAdapter:
    """numpy arrays: handed to the engine as they are (it reads their data pointers itself,
    Note [Submission cost] in csrc/bindings.cc); results the engine allocates are viewed without
    a copy."""

    noun = "array"
    plural = "numpy arrays"

    def check(self, value: Any, what: str) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{what} expects a numpy.ndarray, got {type(value).__name__} "
                            f"(convert with numpy.asarray)")
        return value

    def contiguous_input(self, array: np.ndarray, what: str) -> np.ndarray:
        if array.flags.c_contiguous and array.flags.aligned:
            return array
        return np.ascontiguousarray(array)

    def inplace_target(self, array: np.ndarray, what: str) -> np.ndarray:
        if not (array.flags.c_contiguous and array.flags.aligned):
            raise ValueError(f"{what} works in place and needs a C-contiguous, aligned array; got "
                             f"strides {array.strides} for shape {array.shape} (use the "
                             f"out-of-place form, or numpy.ascontiguousarray first)")
        if not array.flags.writeable:
            raise ValueError(f"{what} works in place but the array is read-only")
        return array

    def new_output(self, source: np.ndarray) -> np.ndarray:
        return np.empty_like(source)

    def shape(self, array: np.ndarray) -> Tuple[int, ...]:
        return array.shape

    def itemsize(self, array: np.ndarray) -> int:
        return array.dtype.itemsize

    def as_rows(self, array: np.ndarray) -> np.ndarray:
        return array.reshape(1) if array.ndim == 0 else array

    def int_list(self, values: Any) -> Any:
        return values

    def int_tensor(self, values: List[int]) -> np.ndarray:
        return np.asarray(values, dtype=np.int64)

    def result(self, raw: RawResult, like: np.ndarray) -> np.ndarray:
        buffer, shape = raw[0], raw[1]
        return np.frombuffer(buffer, dtype=np.uint8).view(like.dtype).reshape(shape)

    def mark_written(self, array: np.ndarray) -> None:
        return None

    def submit(self, kind: int, name: Optional[str], what: str, entries: Sequence[Entry],
               keepalive: Any, finish: Callable[[RawResult], Any], **options: Any) -> Handle:
        specs = [(entry.name, entry.source, entry.target if entry.target is not None else 0,
                  _dtypes.code_of(entry.source.dtype), entry.source.shape) for entry in entries]
        return _session.submit(kind, name, specs, keepalive, finish, device=DEVICE_CPU,
                               **options)


NUMPY = NumpyAdapter()
