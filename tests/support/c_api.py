"""A ctypes client of dist_sync._core's C table (csrc/capi/dist_sync_c_api.h), so the table and
the engine's completion callbacks are tested without any framework: submit() returns at once,
and the engine's thread reports the result to a callback."""
from __future__ import annotations

import ctypes
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dist_sync import _core

OK, MISMATCH, INVALID, FATAL, SHUTDOWN = range(5)


class Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("input", ctypes.c_void_p),
                ("output", ctypes.c_void_p), ("dtype", ctypes.c_int32),
                ("ndim", ctypes.c_int32), ("shape", ctypes.POINTER(ctypes.c_int64))]


class Request(ctypes.Structure):
    _fields_ = [("op_type", ctypes.c_int32), ("name", ctypes.c_char_p),
                ("reduce_op", ctypes.c_int32), ("prescale", ctypes.c_double),
                ("postscale", ctypes.c_double), ("root", ctypes.c_int32),
                ("splits", ctypes.POINTER(ctypes.c_int64)), ("num_splits", ctypes.c_int32),
                ("process_set", ctypes.c_int32), ("tensors", ctypes.POINTER(Tensor)),
                ("num_tensors", ctypes.c_int32)]


class Output(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("bytes", ctypes.c_size_t),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("ndim", ctypes.c_int32),
                ("received_splits", ctypes.POINTER(ctypes.c_int64)),
                ("num_received_splits", ctypes.c_int32)]


DONE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p,
                        ctypes.POINTER(Output))
SUBMIT = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.POINTER(Request), DONE, ctypes.c_void_p,
                          ctypes.c_char_p, ctypes.c_size_t)


class Table(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("struct_size", ctypes.c_uint32),
                ("submit", SUBMIT)]


def table() -> Table:
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return Table.from_address(get_pointer(_core._c_api, b"dist_sync._core._c_api"))


def submit(op_type: int, name: str, arrays: Sequence[np.ndarray], outputs: Sequence[Any] = (),
           reduce_op: int = 1, root: int = 0,
           splits: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Submits through the table and waits for the callback: {"status", "message", and on
    success "data" (the engine's buffer as bytes), "shape", "received_splits"}; a refused
    submission gives its status and message at once."""
    finished = threading.Event()
    result: Dict[str, Any] = {}

    def done(_context: Any, status: int, message: bytes, output: Any) -> None:
        out = output.contents
        result.update(status=status, message=message.decode())
        result["shape"] = [out.shape[i] for i in range(out.ndim)]
        result["received_splits"] = [out.received_splits[i]
                                     for i in range(out.num_received_splits)]
        result["data"] = ctypes.string_at(out.data, out.bytes) if out.bytes else b""
        finished.set()
    callback = DONE(done)
    keep: List[Any] = [callback]
    tensors = (Tensor * len(arrays))()
    for i, array in enumerate(arrays):
        shape = (ctypes.c_int64 * max(array.ndim, 1))(*array.shape)
        keep.append(shape)
        target = outputs[i].ctypes.data if i < len(outputs) else None
        code = {np.dtype(np.float64): 8, np.dtype(np.int32): 3}[array.dtype]
        label = f"{name}.{i}".encode()
        keep.append(label)
        tensors[i] = Tensor(label, array.ctypes.data, target, code, array.ndim, shape)
    split_values = (ctypes.c_int64 * max(len(splits or []), 1))(*(splits or []))
    request = Request(op_type, name.encode(), reduce_op, 1.0, 1.0, root, split_values,
                      len(splits or []), 0, tensors, len(arrays))
    message = ctypes.create_string_buffer(1024)
    status = table().submit(ctypes.byref(request), callback, None, message, len(message))
    if status != OK:
        return {"status": status, "message": message.value.decode()}
    finished.wait()
    return result


def check_table(rank: int, size: int) -> Dict[str, Any]:
    """What tests/engine/test_core_api_mpi.py checks of the table on every rank."""
    out: Dict[str, Any] = {"version": int(table().version)}
    x = np.arange(4, dtype=np.float64) + rank
    y = np.empty_like(x)
    reduced = submit(0, "capi.allreduce", [x], [y])
    out["allreduce"] = (reduced["status"], y.tolist())
    gathered = submit(2, "capi.allgather", [np.full((rank + 1, 2), rank, dtype=np.int32)])
    out["allgather"] = (gathered["status"], gathered["shape"], gathered["received_splits"],
                        np.frombuffer(gathered["data"], dtype=np.int32).tolist())
    mismatch = submit(0, "capi.mismatch", [np.zeros(3 + (rank == size - 1))],
                      [np.empty(3 + (rank == size - 1))])
    out["mismatch"] = (mismatch["status"], mismatch["message"])
    bad = submit(3, "capi.splits", [np.zeros(2)], splits=[2] * size)
    out["splits"] = (bad["status"], bad["message"])
    return out
