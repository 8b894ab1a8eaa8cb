"""Gradient compression for the wire, as in ``horovod.tensorflow.Compression``: floating tensors
are cast to a 16-bit type before the collective and back afterwards."""
from __future__ import annotations

from typing import Any, Tuple

import tensorflow as tf


class Compressor:
    """Casts a tensor for the wire (``compress``) and back (``decompress``)."""

    @staticmethod
    def compress(tensor: Any) -> Tuple[Any, Any]:
        """(tensor to send, context that decompress needs)."""
        return tensor, None

    @staticmethod
    def decompress(tensor: Any, ctx: Any) -> Any:
        """The received tensor in the caller's dtype."""
        return tensor


class NoneCompressor(Compressor):
    """Sends tensors as they are."""


def _cast_compressor(wire: tf.dtypes.DType) -> type:
    class CastCompressor(Compressor):
        __doc__ = f"Sends floating tensors as {wire.name} (other dtypes as they are)."

        @staticmethod
        def compress(tensor: Any) -> Tuple[Any, Any]:
            dtype = tensor.dtype
            if dtype.is_floating and dtype != wire:
                return tf.cast(tensor, wire), dtype
            return tensor, None

        @staticmethod
        def decompress(tensor: Any, ctx: Any) -> Any:
            return tensor if ctx is None else tf.cast(tensor, ctx)
    CastCompressor.__name__ = f"{wire.name.upper()}Compressor"
    return CastCompressor


FP16Compressor = _cast_compressor(tf.float16)
BF16Compressor = _cast_compressor(tf.bfloat16)


class Compression:
    """The available compressors: ``Compression.none``, ``.fp16``, ``.bf16``."""

    none = NoneCompressor
    fp16 = FP16Compressor
    bf16 = BF16Compressor
