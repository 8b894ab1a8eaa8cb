"""The torch array adapter (Note [Array adapters] in dist_sync/_adapter.py): dtype codes, device
checks, how tensors reach the engine, and results from engine buffers.

Note [One place for device memory]
Every torch tensor handed to the engine goes through :meth:`TorchAdapter.submit`, the only code
that turns a tensor into an engine pointer. CPU tensors are handed over as they are (their own
memory, device kind CPU). CUDA tensors are staged through pinned host memory by
dist_sync/torch/_staging.py (Note [Host staging]) and handed over with device kind CUDA;
:meth:`TorchAdapter.result` puts the results the engine allocates back on the input's device.
Nothing else in dist_sync.torch reads ``data_ptr()`` to give it to the engine or decides how a
device's memory reaches it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import _dtypes, _session
from .._adapter import Entry
from .._session import DEVICE_CPU, DistSyncError, Handle, RawResult
from .._validation import SplitsDtypeError
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


def dtype_code(tensor: torch.Tensor, what: str) -> int:
    """The engine's code for the tensor's dtype; TypeError for dtypes the engine cannot reduce."""
    code = TORCH_TO_CODE.get(tensor.dtype)
    if code is None:
        raise TypeError(f"{what}: unsupported dtype {tensor.dtype}; dist_sync supports {SUPPORTED}")
    return code


def check_device(tensor: torch.Tensor, what: str) -> None:
    """Rejects tensors whose memory cannot reach the engine, with what to do instead (see
    Note [One place for device memory])."""
    if tensor.is_cpu:  # the common case, without building a torch.device
        return
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


def _address(tensor: Optional[torch.Tensor]) -> int:
    """A CPU tensor's first element (0 for None and empty tensors, which own no memory)."""
    if tensor is None or tensor.numel() == 0:
        return 0
    return tensor.data_ptr()


class TorchAdapter:
    """torch tensors on the CPU (handed to the engine by address) or on a CUDA device (staged
    through pinned host memory)."""

    noun = "tensor"
    plural = "tensors"

    def check(self, value: Any, what: str) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{what} expects a torch.Tensor, got {type(value).__name__}")
        if value.layout != torch.strided:
            raise TypeError(f"{what} expects a dense tensor, got layout {value.layout} (convert "
                            f"with .to_dense())")
        return value

    def contiguous_input(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        check_device(tensor, what)
        if tensor.requires_grad:  # (detach() makes a new tensor object: only when needed)
            tensor = tensor.detach()
        if tensor.is_neg() or tensor.is_conj():
            # A lazily negated/conjugated view: its memory holds the values before the sign
            # flip, so the engine must be given materialized values.
            return tensor.resolve_neg().resolve_conj().contiguous()
        return tensor if tensor.is_contiguous() else tensor.contiguous()

    def inplace_target(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        if not tensor.is_cpu:
            check_device(tensor, what)
        if not tensor.is_contiguous():
            raise ValueError(f"{what} works in place and needs a contiguous tensor; got shape "
                             f"{tuple(tensor.shape)} with strides {tuple(tensor.stride())} (use "
                             f"the out-of-place form, or call .contiguous() first and use its "
                             f"result)")
        if tensor.is_neg() or tensor.is_conj():
            raise ValueError(f"{what} works in place but the tensor is a view with torch's "
                             f"{'negative' if tensor.is_neg() else 'conjugate'} bit set (for "
                             f"example from .conj() or .imag of one): its memory does not hold "
                             f"its values. Use the out-of-place form, or .resolve_neg() / "
                             f".resolve_conj() first and use the result")
        return tensor.detach() if tensor.requires_grad else tensor

    def new_output(self, source: torch.Tensor) -> torch.Tensor:
        # empty_like would copy odd strides of size-1 dimensions.
        return torch.empty(source.shape, dtype=source.dtype, device=source.device)

    def shape(self, tensor: torch.Tensor) -> Tuple[int, ...]:
        return tuple(tensor.shape)

    def itemsize(self, tensor: torch.Tensor) -> int:
        return tensor.element_size()

    def as_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(1) if tensor.dim() == 0 else tensor

    def int_list(self, values: Any) -> Any:
        if isinstance(values, torch.Tensor):
            if values.is_floating_point():
                raise SplitsDtypeError(f"splits must hold integers, got a {values.dtype} tensor")
            return values.tolist()
        return values

    def int_tensor(self, values: List[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int32)

    def result(self, raw: RawResult, like: torch.Tensor) -> torch.Tensor:
        """The engine's output buffer as a tensor on ``like``'s device: without a copy for CPU
        tensors (the tensor keeps the buffer object alive), copied back for staged ones."""
        buffer, shape = raw[0], list(raw[1])
        if buffer is None or len(memoryview(buffer)) == 0:
            # torch.frombuffer rejects empty buffers; an empty result owns no memory anyway.
            return torch.empty(shape, dtype=like.dtype, device=like.device)
        host = torch.frombuffer(buffer, dtype=torch.uint8).view(like.dtype).reshape(shape)
        stager = _staging.stager_for(like)
        return host if stager is None else stager.to_device(host, like.device)

    def mark_written(self, tensor: torch.Tensor) -> None:
        """Bumps the version counter of a tensor the engine wrote in place, so autograd notices
        if the tensor was saved for a backward pass (as it would after any in-place torch op)."""
        if not tensor.is_inference():  # inference tensors have no version counter
            torch.autograd.graph.increment_version(tensor)

    def submit(self, kind: int, name: Optional[str], what: str, entries: Sequence[Entry],
               keepalive: Any, finish: Callable[[RawResult], Any], **options: Any) -> Handle:
        """CPU tensors go to the engine directly; tensors of a staged device go through their
        stager (Note [Host staging]), and the engine then sees device kind CUDA. All tensors of
        one operation must be on the same device."""
        stager = _staging.stager_for(entries[0].source) if entries else None
        first = entries[0].source.device if len(entries) > 1 else None
        # One plain loop: an operation usually has one tensor (a gradient from a backward hook),
        # for which comprehensions and helper calls would cost more than the work itself.
        codes: List[int] = []
        specs: List[Tuple[str, int, int, int, List[int]]] = []
        for entry in entries:
            source = entry.source
            code = dtype_code(source, what)
            if first is not None and (source.device != first or
                                      _staging.stager_for(source) is not stager):
                raise ValueError(f"{what}: all tensors of one operation must be on the same "
                                 f"device; got {first} and {source.device}")
            codes.append(code)
            if stager is None:
                address = _address(source)
                output = address if entry.target is source else _address(entry.target)
                specs.append((entry.name, address, output, code, list(source.shape)))
        if stager is None:
            return _session.submit(kind, name, specs, keepalive, finish, device=DEVICE_CPU,
                                   **options)
        return stager.submit(kind, name, entries, codes, keepalive, finish, **options)


TORCH = TorchAdapter()
