"""Running the eager collectives in both TensorFlow modes, and naming them.

Note [Collectives inside tf.function]
Every collective of dist_sync.tensorflow is one Python function on numpy views of eager tensors
(Note [TensorFlow tensors in the engine] in _adapter.py). Eagerly it is called directly; while a
``tf.function`` is traced it becomes a ``tf.py_function`` node, which runs the same code on the
executor's thread each time the graph runs. The wait for the engine releases the GIL, so other
Python threads and TensorFlow's own kernels keep running meanwhile.

Names: eager unnamed operations are matched across ranks by call order, as in the other front
ends. Nodes of a graph may run in any order, so every unnamed collective traced into a graph gets
a name when it is traced: the graph's unique name for it ("DistSyncAllreduce_3" under the current
name scope), which is the same on every rank that traces the same function. 

Order: a py_function node holds one of the executor's inter-op threads while it waits. If the
collectives of a graph could run in any order, rank 0 might fill its threads waiting on A and B
while rank 1 waits on C and D, and neither would ever submit what the other waits for. So the
collective nodes of one graph run one after another, in the order they were traced (each has a
control dependency on the previous one): the same order on every rank, one thread waiting at a
time. Tracing order agrees with the data dependencies, so this adds no cycle. Collectives that
should overlap go into one node (grouped_allreduce; DistributedGradientTape and the Keras
DistributedOptimizer submit all of a step's gradients from one node, where the engine fuses
them).
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import tensorflow as tf


def op_name(kind: str, name: Optional[str]) -> Optional[str]:
    """``name`` if given; in graph mode a name unique in the graph being traced (Note
    [Collectives inside tf.function]); None eagerly (matched by call order)."""
    if name is not None or tf.executing_eagerly():
        return name
    return tf.compat.v1.get_default_graph().unique_name(f"DistSync{kind}")


def sub_name(name: Optional[str], part: str) -> Optional[str]:
    return f"{name}.{part}" if name is not None else None


def numpy_view(value: Any) -> np.ndarray:
    """An eager tensor's memory as a numpy array, without a copy."""
    if isinstance(value, np.ndarray):
        return value
    # A 0-d tensor's _numpy() is a numpy scalar, not an array.
    return np.asarray(value._numpy())


def run(fn: Callable[..., Sequence[np.ndarray]], inputs: Sequence[Any],
        out_dtypes: Sequence[tf.dtypes.DType],
        out_shapes: Optional[Sequence[Any]] = None) -> List[tf.Tensor]:
    """``fn(*numpy views of inputs)`` -> a sequence of numpy arrays, as tf.Tensors: called
    directly when eager, as a tf.py_function node in graph mode (``out_shapes`` then gives the
    static shapes of the results, None entries for unknown)."""
    if tf.executing_eagerly():
        outputs = fn(*[numpy_view(tf.convert_to_tensor(x)) for x in inputs])
        return [tf.convert_to_tensor(out) for out in outputs]

    def body(*tensors: tf.Tensor) -> List[np.ndarray]:
        return list(fn(*[numpy_view(t) for t in tensors]))
    graph = tf.compat.v1.get_default_graph()
    previous = getattr(graph, "_dist_sync_last_collective", None)
    with tf.control_dependencies([previous] if previous is not None else []):
        outputs = tf.py_function(body, list(inputs), list(out_dtypes))
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    # The node itself, found through its first output (Note [Collectives inside tf.function]).
    graph._dist_sync_last_collective = outputs[0].op if outputs else None
    outputs = list(outputs)
    if out_shapes is not None:
        for out, shape in zip(outputs, out_shapes):
            if shape is not None:
                out.set_shape(shape)
    return outputs
