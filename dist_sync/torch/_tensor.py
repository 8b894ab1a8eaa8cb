"""Where torch tensors meet the engine: dtype codes, host memory, and results from engine buffers.

Note [One place for device memory]
Every tensor handed to the engine goes through :func:`host_memory`, which is the only function
that turns a tensor into a (pointer, device kind) pair. CPU tensors are handed over as they are.
CUDA support (a later step) inserts its host staging here: copy to a pinned host buffer before
submission, copy back in the completion callback. Nothing else in dist_sync.torch reads
``data_ptr()`` or inspects ``tensor.device``.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import torch

from .. import _dtypes
from .._engine import DEVICE_CPU, DistSyncError, RawResult

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
    """Rejects tensors whose memory the engine cannot read (see Note [One place for device
    memory])."""
    if tensor.device.type == "cuda":
        raise DistSyncError(f"{what}: CUDA tensors are not supported yet; move the tensor to the "
                            f"CPU with .cpu() first")
    if tensor.device.type != "cpu":
        raise DistSyncError(f"{what}: tensors on device {tensor.device} are not supported; "
                            f"dist_sync works on CPU tensors")


def host_memory(tensor: torch.Tensor, what: str) -> Tuple[int, int]:
    """(address of the first element, engine device kind) of a contiguous tensor.

    The one function where a device tensor would be staged through host memory
    (Note [One place for device memory]).
    """
    check_device(tensor, what)
    if tensor.numel() == 0:
        return 0, DEVICE_CPU
    return tensor.data_ptr(), DEVICE_CPU


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


def spec(name: str, source: torch.Tensor, target: torch.Tensor | None, what: str) -> tuple:
    """The engine's tensor tuple (name, input address, output address, dtype code, shape)."""
    code = dtype_code(source, what)
    in_pointer, _ = host_memory(source, what)
    out_pointer = host_memory(target, what)[0] if target is not None else 0
    return (name, in_pointer, out_pointer, code, list(source.shape))


def device_kind(tensors: Sequence[torch.Tensor], what: str) -> int:
    """The engine device kind for an operation over ``tensors`` (all must agree)."""
    kinds = {host_memory(t, what)[1] for t in tensors}
    return kinds.pop() if kinds else DEVICE_CPU


def from_buffer(raw: RawResult, dtype: torch.dtype) -> torch.Tensor:
    """The engine's output buffer as a tensor, without a copy (the tensor keeps the buffer
    object alive)."""
    buffer, shape = raw[0], list(raw[1])
    if buffer is None or len(memoryview(buffer)) == 0:
        # torch.frombuffer rejects empty buffers; an empty result owns no memory anyway.
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(buffer, dtype=torch.uint8).view(dtype).reshape(shape)


def mark_written(tensor: torch.Tensor) -> None:
    """Bumps the version counter of a tensor the engine wrote in place, so autograd notices if
    the tensor was saved for a backward pass (as it would after any in-place torch op)."""
    if not tensor.is_inference():  # inference tensors have no version counter
        torch.autograd.graph.increment_version(tensor)


def new_output(source: torch.Tensor) -> torch.Tensor:
    """A fresh row-major tensor shaped like ``source`` for an out-of-place result (empty_like
    would copy odd strides of size-1 dimensions)."""
    return torch.empty(source.shape, dtype=source.dtype, device=source.device)
