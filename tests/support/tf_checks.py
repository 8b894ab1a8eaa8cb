"""Shared by the TensorFlow workers: their Registry (TensorFlow seeded, one intra-op thread),
conversions between tf tensors and tests/support/reference.py's numpy storage (bfloat16 as uint16
bit patterns), running a function eagerly or inside tf.function, and digests."""
from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import dist_sync.tensorflow as hvd  # noqa: E402
from tests.support.worker import Registry  # noqa: E402

OP = {"sum": hvd.Sum, "average": hvd.Average, "min": hvd.Min, "max": hvd.Max,
      "product": hvd.Product}
MODES = ("eager", "graph")


def _setup() -> None:
    tf.random.set_seed(0)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    # Few inter-op threads: graphs with many independent collectives must still not deadlock
    # (Note [Collectives inside tf.function] in dist_sync/tensorflow/_graph.py).
    tf.config.threading.set_inter_op_parallelism_threads(2)


def tf_registry() -> Registry:
    """A worker's Registry whose session starts with TensorFlow seeded (same draws on every
    rank), one intra-op and two inter-op threads per rank."""
    return Registry(setup=_setup)


def to_tf(storage: np.ndarray, dtype: str) -> tf.Tensor:
    """reference.make_input's storage array as a tf tensor of `dtype`."""
    if dtype == "bfloat16":
        return tf.bitcast(tf.constant(storage.astype(np.uint16)), tf.bfloat16)
    return tf.constant(storage)


def to_storage(tensor: Any, dtype: str) -> np.ndarray:
    """A tf tensor as reference.py's storage array (bfloat16 -> uint16 bits)."""
    tensor = tf.convert_to_tensor(tensor)
    if dtype == "bfloat16":
        return tf.bitcast(tensor, tf.uint16).numpy()
    return tensor.numpy()


def in_mode(mode: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` itself (eager) or wrapped in a tf.function (graph)."""
    return fn if mode == "eager" else tf.function(fn)


def digest(tensors: List[Any]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(np.ascontiguousarray(tf.convert_to_tensor(t).numpy()).tobytes())
    return h.hexdigest()
