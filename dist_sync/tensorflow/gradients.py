"""Averaging gradients over ranks: what DistributedGradientTape and the Keras
DistributedOptimizer share, and the tape itself.

Eagerly, all dense gradients of one call are handed to the engine before any is awaited (one
grouped allreduce per group), so the engine negotiates them together and fuses them into as few
ring passes as its fusion buffer allows. In graph mode each gradient gets its own asynchronous
DistSyncAllreduce node (one per group when ``groups`` is given): TensorFlow starts it as soon as
backprop has produced that gradient, so reduction overlaps the rest of the backward pass, and the
engine fuses the gradients that reach it within one cycle.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from .. import _builders
from .._process_sets import ProcessSet, global_process_set, included
from .._reduce_op import Average, ReduceOp, Sum
from .._validation import scale_args
from ._adapter import TENSORFLOW
from ._eager import wait
from ._graph import op_name, run
from .compression import Compression, Compressor
from .mpi_ops import allreduce, graph_allreduce, members_of, resolve_op, size_op


def _group_indices(count: int, groups: Any, variables: Optional[Sequence[Any]]) -> List[List[int]]:
    """Positions 0..count-1 split into groups: one group (None), ``groups`` nearly equal groups
    (int), or the given lists of variables (the rest in one more group)."""
    if groups is None or groups == 0:
        return [list(range(count))] if count else []
    if isinstance(groups, int) and not isinstance(groups, bool):
        if groups < 0:
            raise ValueError(f"groups must be a positive int or a list of lists of variables, "
                             f"got {groups}")
        n = min(groups, count)
        return [list(range(count))[g::n] for g in range(n)] if n else []
    if not isinstance(groups, (list, tuple)) or variables is None:
        raise TypeError("groups must be an int or a list of lists of tf.Variable")
    position = {id(v): i for i, v in enumerate(variables)}
    taken: List[List[int]] = []
    seen = set()
    for g, group in enumerate(groups):
        indices = []
        for v in group:
            if id(v) not in position:
                raise ValueError(f"groups[{g}] holds {getattr(v, 'name', v)!r}, which is not "
                                 f"one of the variables being reduced")
            indices.append(position[id(v)])
        seen.update(indices)
        taken.append(indices)
    rest = [i for i in range(count) if i not in seen]
    return [g for g in taken + [rest] if g]


def _reduce_groups(values: Sequence[Any], groups: List[List[int]], op: ReduceOp,
                   name: Optional[str], pre: float, post: float,
                   process_set: Any) -> List[Any]:
    handles = [_builders.grouped_allreduce(TENSORFLOW, [values[i] for i in group], op,
                                           f"{name}.{g}" if name is not None else None, pre,
                                           post, in_place=False, what="allreduce gradients",
                                           process_set=process_set)
               for g, group in enumerate(groups)]
    results: List[Any] = [None] * len(values)
    for group, handle in zip(groups, handles):
        for i, reduced in zip(group, wait(handle)):
            results[i] = reduced
    return results


def reduce_gradients(grads: Sequence[Any], *, compression: type[Compressor] = Compression.none,
                     sparse_as_dense: bool = False, op: Optional[ReduceOp] = None,
                     gradient_predivide_factor: float = 1.0, groups: Any = None,
                     variables: Optional[Sequence[Any]] = None,
                     name: Optional[str] = None,
                     process_set: ProcessSet = global_process_set) -> List[Any]:
    """Every rank's gradients (of ``process_set``) reduced with ``op`` (Average by default);
    None stays None.

    ``gradient_predivide_factor`` f splits Average's division: gradients are multiplied by 1/f
    before the sum and by f/size after it. ``tf.IndexedSlices`` are allgathered (or made dense
    first with ``sparse_as_dense``). ``op=Adasum`` combines the gradients with Adasum. A rank
    outside ``process_set`` gets its own gradients back, as in Horovod."""
    op = resolve_op(op, None)
    if not included(process_set, "allreduce gradients"):
        return list(grads)
    members_of(process_set, "allreduce gradients")
    if not isinstance(gradient_predivide_factor, (int, float)) or \
            not gradient_predivide_factor > 0:
        raise ValueError(f"gradient_predivide_factor must be a positive number, got "
                         f"{gradient_predivide_factor!r}")
    if gradient_predivide_factor != 1.0 and int(op) != int(Average):
        raise ValueError("gradient_predivide_factor needs op=Average")
    average = int(op) == int(Average)
    # Average as a Sum scaled on both sides, so gradient_predivide_factor can split it.
    engine = Sum if average else op

    def scales() -> Tuple[float, float]:
        # Called when the reduction runs (inside a tf.function too): the set's size then, not
        # when the function was traced (an elastic reset changes it).
        if not average:
            return 1.0, 1.0
        return scale_args(1.0 / gradient_predivide_factor,
                          gradient_predivide_factor / members_of(process_set, "allreduce").size)
    results: List[Any] = [None] * len(grads)
    dense: List[int] = []
    for i, grad in enumerate(grads):
        if grad is None:
            continue
        if isinstance(grad, tf.IndexedSlices):
            if sparse_as_dense:
                grads = list(grads)
                grads[i] = tf.convert_to_tensor(grad)
            else:
                results[i] = allreduce(grad, op=op, process_set=process_set)
                continue
        dense.append(i)
    if not dense:
        return results
    compressed, contexts = zip(*[compression.compress(tf.convert_to_tensor(grads[i]))
                                 for i in dense])
    dense_variables = [variables[i] for i in dense] if variables is not None else None
    name = op_name("Gradients", name)
    if not tf.executing_eagerly() and (groups is None or groups == 0):
        # One kernel per gradient: each runs as soon as backprop has produced its input, so the
        # reduction of the last layers overlaps the backward pass of the first; the engine
        # still fuses whatever arrives within a cycle.
        group_list = [[i] for i in range(len(dense))]
    else:
        group_list = _group_indices(len(dense), groups, dense_variables)
    if not tf.executing_eagerly():
        # Average as the engine's own (it divides by the set's size when the op runs, so a
        # graph traced before an elastic reset stays right), with the predivision around it.
        engine_op = op if not average else Average
        pre, post = (1.0 / gradient_predivide_factor, float(gradient_predivide_factor)) \
            if average else (1.0, 1.0)
        reduced = [None] * len(compressed)
        for g, group in enumerate(group_list):
            outputs = graph_allreduce([compressed[i] for i in group], engine_op,
                                      f"{name}.{g}", pre, post, process_set)
            for i, value in zip(group, outputs):
                reduced[i] = value
        for i, value, context in zip(dense, reduced, contexts):
            results[i] = compression.decompress(value, context)
        return results
    reduced = run(lambda *vs: _reduce_groups(vs, group_list, engine, name, *scales(),
                                             process_set),
                  list(compressed), [c.dtype for c in compressed], [c.shape for c in compressed])
    for i, value, context in zip(dense, reduced, contexts):
        results[i] = compression.decompress(value, context)
    return results


class DistributedGradientTape:
    """A ``tf.GradientTape`` whose ``gradient()`` returns gradients averaged over all ranks
    (Horovod's ``DistributedGradientTape``). Wrap the tape after recording::

        with tf.GradientTape() as tape:
            loss = ...
        tape = hvd.DistributedGradientTape(tape)
        grads = tape.gradient(loss, model.trainable_variables)

    ``compression``: Compression.none/fp16/bf16 for the wire. ``sparse_as_dense``: reduce
    tf.IndexedSlices as dense tensors instead of allgathering them. ``op``: Average (default),
    Sum, ... ``gradient_predivide_factor``: see :func:`reduce_gradients`. ``groups``: an int
    (that many allreduce groups) or lists of variables reduced together. ``process_set``: the
    ranks that average (on a rank outside it, ``gradient()`` returns the local gradients).
    Variables passed to :meth:`register_local_source` (model-parallel parts) keep this rank's
    gradient, divided by the set's size when ``scale_local_gradients`` (as Horovod does, so a
    learning rate scaled by the number of ranks suits them too). Other attributes are the
    wrapped tape's.
    """

    def __init__(self, gradtape: tf.GradientTape, device_dense: str = "",
                 device_sparse: str = "", compression: type[Compressor] = Compression.none,
                 sparse_as_dense: bool = False, op: Optional[ReduceOp] = None,
                 gradient_predivide_factor: float = 1.0, num_groups: int = 0,
                 groups: Any = None, process_set: ProcessSet = global_process_set,
                 scale_local_gradients: bool = True) -> None:
        if not isinstance(gradtape, tf.GradientTape):
            raise TypeError(f"DistributedGradientTape wraps a tf.GradientTape, got "
                            f"{type(gradtape).__name__}")
        resolve_op(op, None)
        included(process_set, "DistributedGradientTape")
        self._tape = gradtape
        self._process_set = process_set
        self._scale_local = bool(scale_local_gradients)
        self._local_sources: Dict[int, Any] = {}  # id -> the variable (kept alive: ids stay unique)
        self._options: Dict[str, Any] = dict(
            compression=compression, sparse_as_dense=sparse_as_dense, op=op,
            gradient_predivide_factor=gradient_predivide_factor,
            groups=groups if groups is not None else (num_groups or None),
            process_set=process_set)

    def __enter__(self) -> "DistributedGradientTape":
        self._tape.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._tape.__exit__(*exc)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._tape, attribute)

    def register_local_source(self, source: Any) -> None:
        """Marks ``source`` (a variable) as this rank's own: its gradient is not reduced."""
        self._local_sources[id(source)] = source

    def gradient(self, target: Any, sources: Any, output_gradients: Any = None,
                 **kwargs: Any) -> Any:
        """The tape's gradients of ``target`` with respect to ``sources``, reduced over ranks
        (same structure as ``sources``)."""
        grads = self._tape.gradient(target, sources, output_gradients, **kwargs)
        reduced = reduce_shared_gradients(
            tf.nest.flatten(grads, expand_composites=False), tf.nest.flatten(sources),
            self._local_sources, self._scale_local, self._options, "DistributedGradientTape")
        return tf.nest.pack_sequence_as(grads, reduced)


def reduce_shared_gradients(grads: Sequence[Any], variables: Sequence[Any],
                            local_sources: Dict[int, Any], scale_local: bool,
                            options: Dict[str, Any], what: str) -> List[Any]:
    """:func:`reduce_gradients` of every gradient but those of ``local_sources`` (ids of
    variables), which keep this rank's value, divided by the set's size with ``scale_local``
    (Horovod's rule, so a learning rate scaled by the number of ranks suits them too)."""
    local = {i for i, v in enumerate(variables) if id(v) in local_sources}
    shared = [None if i in local else g for i, g in enumerate(grads)]
    reduced = reduce_gradients(shared, variables=variables, **options)
    if local:
        process_set = options["process_set"]
        size = size_op(members_of(process_set, what).id) \
            if scale_local and included(process_set, what) else None
        for i in local:
            reduced[i] = _divided(grads[i], size)
    return reduced


def local_variables_of(local_layers: Any, what: str) -> List[Any]:
    """The trainable variables of ``local_layers`` (a Keras layer or a collection of them)."""
    import keras

    if local_layers is None:
        return []
    layers = [local_layers] if isinstance(local_layers, keras.layers.Layer) else list(local_layers)
    for i, layer in enumerate(layers):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"{what}: local_layers must be Keras layers, got "
                             f"{type(layer).__name__} at index {i}")
    return [variable for layer in layers for variable in layer.trainable_weights]


def PartialDistributedGradientTape(gradtape: tf.GradientTape, device_dense: str = "",
                                   device_sparse: str = "",
                                   compression: type[Compressor] = Compression.none,
                                   sparse_as_dense: bool = False, op: Optional[ReduceOp] = None,
                                   gradient_predivide_factor: float = 1.0, num_groups: int = 0,
                                   groups: Any = None,
                                   process_set: ProcessSet = global_process_set,
                                   local_layers: Any = None,
                                   scale_local_gradients: bool = True) -> DistributedGradientTape:
    """A :class:`DistributedGradientTape` whose ``local_layers`` (Keras layers: model-parallel
    parts each rank trains on its own) keep this rank's gradients, as if each of their
    trainable variables were passed to ``register_local_source``."""
    tape = DistributedGradientTape(gradtape, device_dense, device_sparse, compression,
                                   sparse_as_dense, op, gradient_predivide_factor, num_groups,
                                   groups, process_set, scale_local_gradients)
    for variable in local_variables_of(local_layers, "PartialDistributedGradientTape"):
        tape.register_local_source(variable)
    return tape


def _divided(grad: Any, size: Optional[tf.Tensor]) -> Any:
    """``grad`` / ``size`` (an int tensor, read when the graph runs); None: unchanged."""
    if grad is None or size is None:
        return grad
    if isinstance(grad, tf.IndexedSlices):
        values = grad.values / tf.cast(size, grad.values.dtype)
        return tf.IndexedSlices(values, grad.indices, grad.dense_shape)
    return grad / tf.cast(size, grad.dtype)
