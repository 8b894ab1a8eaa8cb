"""Running the eager collectives in both TensorFlow modes, and naming them.

Note [Collectives inside tf.function]
Eagerly, a collective of dist_sync.tensorflow is one Python function on numpy views of eager
tensors (Note [TensorFlow tensors in the engine] in _adapter.py). While a graph is built
(``tf.function``, a TensorFlow 1 session) it becomes one node of a compiled asynchronous op
(DistSyncAllreduce, ...; _kernels.py, Note [Asynchronous collective kernels] in
csrc/tensorflow/collective_kernel.cc): the kernel submits to the engine and returns, and the
engine's thread ends the op when every rank has taken part. A waiting collective holds no
TensorFlow thread and no GIL, and needs no Python to run. An error is the op's status:
FAILED_PRECONDITION when ranks disagree (the engine's message naming tensor, values and ranks),
INVALID_ARGUMENT for a bad argument, ABORTED when a rank was lost, FAILED_PRECONDITION (with a
message saying so) when dist_sync is not running.

Names: eager unnamed operations are matched across ranks by call order, as in the other front
ends. Nodes of a graph may run in any order, so every unnamed collective traced into a graph gets
a name when it is traced: the graph's unique name for it ("DistSyncAllreduce_3" under the current
name scope), which is the same on every rank that traces the same function.

Order: kernel nodes need none. Negotiation pairs operations by name whatever order each rank
submits them in, and a submitted kernel holds no thread, so every node whose inputs are ready
can start: nothing one rank waits on can be stuck behind a node of its own. The collective
nodes of a graph therefore run as the data dependencies allow, and independent ones are in
flight together (the engine fuses those that arrive in one cycle).

The gradients of Min/Max/Product reductions (which need the inputs' winners and ties) still
run as ``tf.py_function`` nodes calling the eager functions, and those do hold an
inter-op thread while they wait. If such nodes could run in any order, rank 0 might fill its
threads waiting on A and B while rank 1 waits on C and D, and neither would ever submit what
the other waits for; and one waiting on a kernel's result elsewhere could hold the thread that
kernel needs here. So each py_function collective has a control dependency on every collective
node traced before it in the same graph (kernels included): when it runs, everything traced
earlier has completed on this rank, hence was submitted on every rank, and at most one of them
waits at a time. Tracing order agrees with the data dependencies, so this adds no cycle.
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


def kernel_node(outputs: Sequence[tf.Tensor]) -> None:
    """Takes a collective kernel node (found through its outputs) out of tf.function's
    program-order chaining of stateful ops, so it runs as soon as its inputs are ready (and
    still runs when nothing uses its outputs; Note [Collective ops are stateful] in
    csrc/tensorflow/collective_kernel.h), and records it for the next py_function collective
    of the graph to wait for (Note [Collectives inside tf.function])."""
    if not outputs:
        return
    op = outputs[0].op
    graph = tf.compat.v1.get_default_graph()
    manager = getattr(graph, "experimental_acd_manager", None)
    if manager is not None:
        manager.run_independently(op)
    pending = getattr(graph, "_dist_sync_kernels_since", [])
    pending.append(op)
    graph._dist_sync_kernels_since = pending


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
    before = ([previous] if previous is not None else []) + \
        getattr(graph, "_dist_sync_kernels_since", [])
    with tf.control_dependencies(before):
        outputs = tf.py_function(body, list(inputs), list(out_dtypes))
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    # The node itself, found through its first output (Note [Collectives inside tf.function]).
    graph._dist_sync_last_collective = outputs[0].op if outputs else None
    graph._dist_sync_kernels_since = []
    outputs = list(outputs)
    if out_shapes is not None:
        for out, shape in zip(outputs, out_shapes):
            if shape is not None:
                out.set_shape(shape)
    return outputs
