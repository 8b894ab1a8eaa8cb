"""Gradient compression for allreduce: cast floating tensors to 16 bits on the wire.

Same interface as ``horovod.torch.Compression``: ``compress(tensor) -> (tensor, ctx)`` before the
allreduce, ``decompress(tensor, ctx) -> tensor`` after it. Casts are differentiable, so the
compressors also work inside autograd-aware ``allreduce(..., compression=...)``.

The engine reduces float16 and bfloat16 through float32, so compression loses precision only
in the final rounding of each rank's input and of the result. float16 saturates at 65504: a
gradient beyond that becomes inf, as in Horovod; prefer ``Compression.bf16`` (float32's range)
when gradients can be large.
"""
from __future__ import annotations

from typing import Any, Tuple

import torch


class Compressor:
    """Interface for compressing and decompressing a tensor."""

    @staticmethod
    def compress(tensor: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        """Returns the tensor to send and the context :meth:`decompress` needs."""
        raise NotImplementedError

    @staticmethod
    def decompress(tensor: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Returns the reduced tensor in its original form."""
        raise NotImplementedError


class NoneCompressor(Compressor):
    """Sends tensors as they are."""

    @staticmethod
    def compress(tensor: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        return tensor, None

    @staticmethod
    def decompress(tensor: torch.Tensor, ctx: Any) -> torch.Tensor:
        return tensor


class _CastCompressor(Compressor):
    """Sends floating tensors wider than ``wire_dtype`` as ``wire_dtype``; others unchanged."""

    wire_dtype: torch.dtype = torch.float16

    @classmethod
    def compress(cls, tensor: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        if tensor.dtype.is_floating_point and tensor.dtype != cls.wire_dtype:
            return tensor.to(cls.wire_dtype), tensor.dtype
        return tensor, None

    @classmethod
    def decompress(cls, tensor: torch.Tensor, ctx: Any) -> torch.Tensor:
        return tensor if ctx is None else tensor.to(ctx)


class FP16Compressor(_CastCompressor):
    """Sends floating tensors as float16 (half the bytes of float32; range up to 65504)."""

    wire_dtype = torch.float16


class BF16Compressor(_CastCompressor):
    """Sends floating tensors as bfloat16 (half the bytes of float32, float32's range, 8 bits
    of mantissa)."""

    wire_dtype = torch.bfloat16


class Compression:
    """The available compressors: ``Compression.none``, ``Compression.fp16``,
    ``Compression.bf16``."""

    none = NoneCompressor
    fp16 = FP16Compressor
    bf16 = BF16Compressor
