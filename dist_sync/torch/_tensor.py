"""Where torch tensors meet the engine: dtype codes, device checks, submission, and results from
engine buffers.

Note [One place for device memory]
Every tensor handed to the engine goes through :func:`submit`, the only function that turns a
tensor into an engine pointer. CPU tensors are handed over as they are (their own memory, device
kind CPU). CUDA tensors are staged through pinned host memory by dist_sync/torch/_staging.py
(Note [Host staging]) and handed over with device kind CUDA; :func:`from_buffer` puts the results
the engine allocates back on the input's device. Nothing else in dist_sync.torch reads
``data_ptr()`` to give it to the engine or decides how a device's memory reaches it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from .. import _dtypes
from .. import _engine
from .._engine import DEVICE_CPU, DistSyncError, Handle, RawResult
from . import _staging

TORCH_TO_CODE: Dict[torch.dtype, int] = {
    torch.uint8: _dtypes.UINT8,
    torch.int8: _dtypes.INT8,
    torch.int16: _dtypes.INT16,
    torch.int32: _dtypes.INT32,
    torch.int64: _dtypes.INT64,
    torch.float16: _dtypes.FLOAT16,
    torch.bfloat16: _dtypes.BFLOAT16,
    torch.float32: _dtypes.FLOAT32,
    torch.float64: _dtypes.FLOAT64,
}
SUPPORTED = ("torch.uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64")


def require_tensor(value: Any, what: str) -> torch.Tensor:
    """``value`` if it is a dense torch.Tensor; TypeError naming ``what`` otherwise."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} expects a torch.Tensor, got {type(value).__name__}")
    if value.layout != torch.strided:
        raise TypeError(f"{what} expects a dense tensor, got layout {value.layout} (convert "
                        f"with .to_dense())")
    return value


def dtype_code(tensor: torch.Tensor, what: str) -> int:
    """The engine's code for the tensor's dtype; TypeError for dtypes the engine cannot reduce."""
    code = TORCH_TO_CODE.get(tensor.dtype)
    if code is None:
        raise TypeError(f"{what}: unsupported dtype {tensor.dtype}; dist_sync supports {SUPPORTED}")
    return code


def check_device(tensor: torch.Tensor, what: str) -> None:
    """Rejects tensors whose memory cannot reach the engine, with what to do instead (see
    Note [One place for device memory])."""
    kind = tensor.device.type
    if kind == "cpu":
        return
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DistSyncError(
                f"{what}: got a tensor on {tensor.device}, but CUDA is not available to torch in "
                f"this process (torch.cuda.is_available() is False: a torch build without CUDA, "
                f"no GPU or driver visible, or CUDA_VISIBLE_DEVICES hides it); move the tensor "
                f"to the CPU with .cpu(), or run where torch sees a GPU")
        return
    raise DistSyncError(f"{what}: tensors on device {tensor.device} are not supported; "
                        f"dist_sync works on CPU and CUDA tensors")


@dataclass(frozen=True)
class Entry:
    """One tensor of an operation, as the ops hand it to :func:`submit`.

    ``source``: the contiguous input. ``target``: the tensor the engine's result is written to
    (``source`` itself for in-place operations), or None when the engine allocates the result
    (allgather, alltoall, reducescatter; see :func:`from_buffer`). ``copy_in``: False when the
    engine ignores this rank's input (a broadcast's non-root ranks), so staging skips its copy.
    """
    name: str
    source: torch.Tensor
    target: Optional[torch.Tensor] = None
    copy_in: bool = True


def submit(kind: int, name: Optional[str], what: str, entries: Sequence[Entry], keepalive: Any,
           finish: Callable[[RawResult], Any], **options: Any) -> Handle:
    """Hands an operation on ``entries`` to the engine and returns its handle.

    CPU tensors go to the engine directly. Tensors of a staged device go through their stager
    (Note [Host staging]); the engine then sees device kind CUDA. All tensors of one operation
    must be on the same device.
    """
    codes = [dtype_code(entry.source, what) for entry in entries]
    stager = _staging.stager_for(entries[0].source) if entries else None
    if len(entries) > 1:
        first = entries[0].source.device
        for entry in entries[1:]:
            if entry.source.device != first or _staging.stager_for(entry.source) is not stager:
                raise ValueError(f"{what}: all tensors of one operation must be on the same "
                                 f"device; got {first} and {entry.source.device}")
    if stager is None:
        specs = [(entry.name, _address(entry.source), _address(entry.target), code,
                  list(entry.source.shape)) for entry, code in zip(entries, codes)]
        return _engine.submit(kind, name, specs, keepalive, finish, device=DEVICE_CPU,
                              **options)
    return stager.submit(kind, name, entries, codes, keepalive, finish, **options)


def _address(tensor: Optional[torch.Tensor]) -> int:
    """A CPU tensor's first element (0 for None and empty tensors, which own no memory)."""
    if tensor is None or tensor.numel() == 0:
        return 0
    return tensor.data_ptr()


def contiguous_input(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """Out-of-place ops accept any layout: a non-contiguous input is copied once."""
    check_device(tensor, what)
    tensor = tensor.detach()
    return tensor if tensor.is_contiguous() else tensor.contiguous()


def require_inplace(tensor: torch.Tensor, what: str) -> None:
    """In-place ops write the result into ``tensor``'s memory, so it must be one dense block."""
    check_device(tensor, what)
    if not tensor.is_contiguous():
        raise ValueError(f"{what} works in place and needs a contiguous tensor; got shape "
                         f"{tuple(tensor.shape)} with strides {tuple(tensor.stride())} (use the "
                         f"out-of-place form, or call .contiguous() first and use its result)")


def from_buffer(raw: RawResult, dtype: torch.dtype, like: torch.Tensor) -> torch.Tensor:
    """The engine's output buffer as a tensor on ``like``'s device: without a copy for CPU
    tensors (the tensor keeps the buffer object alive), copied back for staged ones."""
    buffer, shape = raw[0], list(raw[1])
    if buffer is None or len(memoryview(buffer)) == 0:
        # torch.frombuffer rejects empty buffers; an empty result owns no memory anyway.
        return torch.empty(shape, dtype=dtype, device=like.device)
    host = torch.frombuffer(buffer, dtype=torch.uint8).view(dtype).reshape(shape)
    stager = _staging.stager_for(like)
    return host if stager is None else stager.to_device(host, like.device)


def mark_written(tensor: torch.Tensor) -> None:
    """Bumps the version counter of a tensor the engine wrote in place, so autograd notices if
    the tensor was saved for a backward pass (as it would after any in-place torch op)."""
    if not tensor.is_inference():  # inference tensors have no version counter
        torch.autograd.graph.increment_version(tensor)


def new_output(source: torch.Tensor) -> torch.Tensor:
    """A fresh row-major tensor shaped like ``source`` for an out-of-place result (empty_like
    would copy odd strides of size-1 dimensions)."""
    return torch.empty(source.shape, dtype=source.dtype, device=source.device)
