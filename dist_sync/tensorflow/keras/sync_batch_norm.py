"""``SyncBatchNormalization``: Keras batch normalization whose training statistics are those of
the global batch (every rank's samples), as Horovod's layer of that name."""
from __future__ import annotations

from typing import Any, Tuple

import keras
import tensorflow as tf

from ..mpi_ops import Sum, grouped_allreduce


class SyncBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with mean and variance computed over the batches of
    all ranks during training (the sums, sums of squares and counts are allreduced together;
    differentiable). Inference uses the moving statistics, identical on every rank. Masks are
    not supported."""

    def _moments(self, inputs: Any, mask: Any) -> Tuple[tf.Tensor, tf.Tensor]:
        if mask is not None:
            raise NotImplementedError("SyncBatchNormalization does not support masks")
        # Statistics in float32 at least, as Keras's own moments do for 16-bit inputs.
        compute = tf.float64 if inputs.dtype == tf.float64 else tf.float32
        x = tf.cast(inputs, compute)
        axes = list(self._reduction_axes)
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), compute)
        total, squares, counts = grouped_allreduce(
            [tf.reduce_sum(x, axis=axes), tf.reduce_sum(tf.square(x), axis=axes),
             tf.reshape(count, [1])], op=Sum)
        n = counts[0]
        mean = total / n
        variance = tf.maximum(squares / n - tf.square(mean), 0.0)
        return tf.cast(mean, inputs.dtype), tf.cast(variance, inputs.dtype)
