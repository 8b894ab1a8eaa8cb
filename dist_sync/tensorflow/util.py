"""Horovod's ``horovod.tensorflow.util`` helper that scripts and tests import."""
from __future__ import annotations

import tensorflow as tf


def _executing_eagerly() -> bool:
    """True when TensorFlow runs eagerly (not while a tf.function is traced)."""
    return tf.executing_eagerly()
