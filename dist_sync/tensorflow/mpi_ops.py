"""Collective operations on TensorFlow tensors, with ``horovod.tensorflow``'s names and
signatures. They work eagerly and inside ``tf.function`` (Note [Collectives inside
tf.function] in _graph.py: there each is a compiled asynchronous op, _kernels.py) and are
differentiable (gradients in _eager.py). Results are new
tensors on every rank; ``tf.Variable`` inputs are read. ``device_dense``/``device_sparse``
arguments are accepted and ignored (dist_sync works on CPU tensors). ``process_set`` limits an
operation to the ranks of a :class:`ProcessSet` (the global set by default); ranks outside it
must not call it.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from .. import _builders, _core
from .._process_sets import ProcessSet, global_process_set, process_set_by_id, resolve
from .._reduce_op import Adasum, Average, Max, Min, Product, ReduceOp, Sum, engine_op
from .._reduce_op import resolve_op as _resolve_op
from .._validation import check_root, check_splits, scale_args
from . import _eager, _kernels
from ._adapter import MOVABLE, dtype_code
from ._eager import EXTREMA
from ._graph import kernel_node, op_name, run, sub_name
from .compression import Compression, Compressor


def resolve_op(op: Any, average: Optional[bool]) -> ReduceOp:
    """The reduction for Horovod's (op, deprecated average) pair; ``op=None`` means Average."""
    return _resolve_op(op, average, stacklevel=4)


class InvalidArgumentError(tf.errors.InvalidArgumentError, ValueError):
    """An argument a collective refuses at the call: a process set this rank may not use (not a
    member, removed, never registered), a root outside the set, alltoall splits that do not fit.
    Both a ``tf.errors.InvalidArgumentError`` (what Horovod's TensorFlow binding raises) and a
    ``ValueError`` (what dist_sync's other front ends raise)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, None, message)


def members_of(process_set: Any, what: str, root: Optional[int] = None) -> Any:
    """The resolved process set of a collective (and that ``root`` is in it), misuse raised as
    :class:`InvalidArgumentError`."""
    try:
        resolved = resolve(process_set, what)
        if root is not None:
            resolved.position(root, what)
    except ValueError as error:
        raise InvalidArgumentError(str(error)) from None
    return resolved


def _no_adasum_gradient(name: Optional[str]) -> None:
    # The same rule as dist_sync.torch (docs/torch.md, "Adasum").
    raise RuntimeError(f"allreduce(op=Adasum) of {name or 'a tensor'} has no gradient in "
                       f"dist_sync: Adasum combines gradients, it is not a function of the model "
                       f"to differentiate; reduce gradients with "
                       f"DistributedGradientTape(op=Adasum) or the Keras "
                       f"DistributedOptimizer(op=Adasum) instead")


def _tensor(value: Any, what: str, moving: bool = False) -> tf.Tensor:
    """``value`` as a dense tf.Tensor of a dtype the engine has (variables are read); with
    ``moving`` (broadcast, allgather, alltoall) bool, uint16, uint32 and uint64 too."""
    if isinstance(value, tf.IndexedSlices):
        raise TypeError(f"{what} expects a dense tensor, got tf.IndexedSlices")
    if isinstance(value, (tf.Tensor, tf.Variable, np.ndarray)):
        tensor = tf.convert_to_tensor(value)
    else:
        raise TypeError(f"{what} expects a tf.Tensor or tf.Variable, got {type(value).__name__}")
    if not (moving and tensor.dtype in MOVABLE):
        dtype_code(tensor.dtype, what)
    return tensor


def _differentiable(tensor: tf.Tensor) -> bool:
    return tensor.dtype.is_floating


def graph_allreduce(tensors: Sequence[tf.Tensor], op: ReduceOp, name: str, pre: Any, post: Any,
                    process_set: Any, tensor_names: Optional[Sequence[str]] = None
                    ) -> List[tf.Tensor]:
    """One DistSyncAllreduce node (graph mode): ``tensors`` reduced as one unit, each tensor
    named as the eager builders name it (the operation's name alone, or ``name.i`` in a
    group)."""
    if tensor_names is None:
        tensor_names = [f"{name}.{i}" for i in range(len(tensors))]
    outputs = _kernels.allreduce(tensors, name, tensor_names, int(engine_op(op)), pre, post,
                                 members_of(process_set, "allreduce").id)
    kernel_node(outputs)
    for out, tensor in zip(outputs, tensors):
        out.set_shape(tensor.shape)
    return outputs


@tf.RegisterGradient("DistSyncAllreduce")
def _allreduce_node_grad(op: tf.Operation, *grads: Optional[tf.Tensor]) -> List[Any]:
    """The gradient of a DistSyncAllreduce node made without tf.custom_gradient (the reduced
    gradients of DistributedGradientTape and the Keras optimizer, differentiated again): Sum
    and Average reductions are their own gradient (Note [Gradient convention] in
    dist_sync/torch/_autograd.py), with the same scale factors. The public collectives carry
    their own gradients (tf.custom_gradient), which cover every op."""
    count = len(op.outputs)
    reduce_op = op.get_attr("reduce_op")
    if reduce_op not in (int(engine_op(Sum)), int(engine_op(Average))):
        raise NotImplementedError(f"the reduced gradients of op {_core.ReduceOp(reduce_op).name} "
                                  f"have no gradient; reduce with Average or Sum to "
                                  f"differentiate them again")
    name = op.get_attr("tensor_name").decode()
    names = [f"{n.decode()}.grad" for n in op.get_attr("tensor_names")]
    dys = [g if g is not None else tf.zeros_like(o) for g, o in zip(grads, op.outputs)]
    reduced = _kernels.allreduce(dys, f"{name}.grad", names, reduce_op, op.inputs[count],
                                 op.inputs[count + 1], op.get_attr("process_set"))
    kernel_node(reduced)
    return reduced + [None, None]


# --- allreduce -------------------------------------------------------------------------------

def _allreduce(tensor: tf.Tensor, op: ReduceOp, name: Optional[str], pre: float,
               post: float, process_set: Any) -> tf.Tensor:
    name = op_name("Allreduce", name)

    def forward(x: tf.Tensor) -> tf.Tensor:
        if not tf.executing_eagerly():
            return graph_allreduce([x], op, name, pre, post, process_set, [name])[0]
        return run(lambda v: [_eager.allreduce(v, op, name, pre, post, process_set)], [x],
                   [x.dtype], [x.shape])[0]
    if not _differentiable(tensor):
        return forward(tensor)

    @tf.custom_gradient
    def differentiable(x: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> tf.Tensor:
            if int(op) == int(Adasum):
                _no_adasum_gradient(name)
            if not tf.executing_eagerly() and int(op) not in EXTREMA:
                grad_name = sub_name(name, "grad")
                return graph_allreduce([tf.convert_to_tensor(dy)], op, grad_name, pre, post,
                                       process_set, [grad_name])[0]
            return run(lambda v, d: [_eager.allreduce_grad(v, d, op, name, pre, post,
                                                           process_set)],
                       [x, tf.convert_to_tensor(dy)], [x.dtype], [x.shape])[0]
        return forward(x), grad
    return differentiable(tensor)


def allreduce(tensor: Any, average: Optional[bool] = None, device_dense: str = "",
              device_sparse: str = "", compression: type[Compressor] = Compression.none,
              op: Optional[ReduceOp] = None, prescale_factor: float = 1.0,
              postscale_factor: float = 1.0, name: Optional[str] = None,
              process_set: ProcessSet = global_process_set,
              ignore_name_scope: bool = False) -> Any:
    """The reduction of ``tensor`` over the ranks of ``process_set`` (bit-identical on each).

    ``op``: Average (default), Sum, Adasum (floating tensors, a power-of-two number of ranks; no
    gradient), Min, Max or Product; integer Average truncates toward zero.
    ``prescale_factor`` multiplies each rank's input, ``postscale_factor`` the result.
    ``compression`` casts the tensor for the wire. A ``tf.IndexedSlices`` is allgathered (values
    and indices; Average divides the values by size()), as Horovod does; only Average and Sum
    apply to it. Differentiable; works eagerly and inside tf.function.
    """
    op = resolve_op(op, average)
    pre, post = scale_args(prescale_factor, postscale_factor)
    members = members_of(process_set, "allreduce")
    if isinstance(tensor, tf.IndexedSlices):
        if int(op) not in (int(Average), int(Sum)):
            raise NotImplementedError("allreduce of tf.IndexedSlices supports op=Average and Sum "
                                      "(the slices are allgathered)")
        if pre != 1.0 or post != 1.0:
            raise NotImplementedError("allreduce of tf.IndexedSlices takes no prescale_factor or "
                                      "postscale_factor")
        base = op_name("AllreduceSparse", name)
        values = allgather(tensor.values, name=f"{base}.values" if base else None,
                           process_set=process_set)
        indices = allgather(tensor.indices, name=f"{base}.indices" if base else None,
                            process_set=process_set)
        if int(op) == int(Average):
            values = values / tf.cast(size_op(members.id), values.dtype)
        return tf.IndexedSlices(values, indices, dense_shape=tensor.dense_shape)
    tensor = _tensor(tensor, "allreduce")
    compressed, context = compression.compress(tensor)
    return compression.decompress(_allreduce(compressed, op, name, pre, post, process_set),
                                  context)


def grouped_allreduce(tensors: Sequence[Any], average: Optional[bool] = None,
                      device_dense: str = "", device_sparse: str = "",
                      compression: type[Compressor] = Compression.none,
                      op: Optional[ReduceOp] = None, prescale_factor: float = 1.0,
                      postscale_factor: float = 1.0,
                      process_set: ProcessSet = global_process_set,
                      ignore_name_scope: bool = False,
                      name: Optional[str] = None) -> List[tf.Tensor]:
    """Reduces a list of tensors as one unit (negotiated and fused together); returns the list
    of results. ``tf.IndexedSlices`` in the list are allgathered one by one as :func:`allreduce`
    does (op Average or Sum only), the dense tensors reduced as one unit. Differentiable like
    :func:`allreduce`."""
    op = resolve_op(op, average)
    pre, post = scale_args(prescale_factor, postscale_factor)
    members_of(process_set, "grouped_allreduce")
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError("grouped_allreduce expects a non-empty list of tensors")
    sparse = [i for i, t in enumerate(tensors) if isinstance(t, tf.IndexedSlices)]
    if sparse:
        if int(op) not in (int(Average), int(Sum)):
            raise NotImplementedError("grouped_allreduce of tf.IndexedSlices supports op=Average "
                                      "and Sum (the slices are allgathered)")
        base = op_name("GroupedAllreduce", name)
        results: List[Any] = list(tensors)
        for i in sparse:
            results[i] = allreduce(tensors[i], op=op, prescale_factor=prescale_factor,
                                   postscale_factor=postscale_factor,
                                   name=f"{base}.sparse.{i}" if base else None,
                                   process_set=process_set)
        dense = [i for i in range(len(tensors)) if i not in sparse]
        if dense:
            reduced = grouped_allreduce([tensors[i] for i in dense], compression=compression,
                                        op=op, prescale_factor=prescale_factor,
                                        postscale_factor=postscale_factor,
                                        process_set=process_set,
                                        name=f"{base}.dense" if base else None)
            for i, value in zip(dense, reduced):
                results[i] = value
        return results
    items = [_tensor(t, f"grouped_allreduce (item {i})") for i, t in enumerate(tensors)]
    compressed, contexts = zip(*[compression.compress(t) for t in items])
    reduced = _grouped(list(compressed), op, op_name("GroupedAllreduce", name), pre, post,
                       process_set)
    return [compression.decompress(r, c) for r, c in zip(reduced, contexts)]


def _grouped(tensors: List[tf.Tensor], op: ReduceOp, name: Optional[str], pre: float,
             post: float, process_set: Any) -> List[tf.Tensor]:
    dtypes = [t.dtype for t in tensors]
    shapes = [t.shape for t in tensors]

    def forward(*xs: tf.Tensor) -> List[tf.Tensor]:
        if not tf.executing_eagerly():
            return graph_allreduce(xs, op, name, pre, post, process_set)
        return run(lambda *vs: _eager.grouped_allreduce(vs, op, name, pre, post, process_set),
                   xs, dtypes, shapes)
    floating = [i for i, t in enumerate(tensors) if _differentiable(t)]
    if not floating:
        return forward(*tensors)

    @tf.custom_gradient
    def differentiable(*xs: tf.Tensor) -> Any:
        def grad(*dys: tf.Tensor) -> List[Optional[tf.Tensor]]:
            if int(op) == int(Adasum):
                _no_adasum_gradient(name)
            count = len(floating)
            if not tf.executing_eagerly() and int(op) not in EXTREMA:
                grads = graph_allreduce([tf.convert_to_tensor(dys[i]) for i in floating], op,
                                        sub_name(name, "grad"), pre, post, process_set)
            else:
                inputs = [xs[i] for i in floating] + \
                    [tf.convert_to_tensor(dys[i]) for i in floating]
                grads = run(lambda *vs: _eager.grouped_allreduce_grad(
                                vs[:count], vs[count:], op, name, pre, post, process_set),
                            inputs, [dtypes[i] for i in floating],
                            [shapes[i] for i in floating])
            result: List[Optional[tf.Tensor]] = [None] * len(xs)
            for i, g in zip(floating, grads):
                result[i] = g
            return result
        return forward(*xs), grad
    return differentiable(*tensors)


# --- broadcast -------------------------------------------------------------------------------

def broadcast(tensor: Any, root_rank: int, name: Optional[str] = None,
              ignore_name_scope: bool = False,
              process_set: ProcessSet = global_process_set) -> tf.Tensor:
    """``root_rank``'s ``tensor`` on every rank (of ``process_set``; ``root_rank`` is a global
    rank in it), as a new tensor. Differentiable: the root receives the sum of every rank's
    gradient, other ranks zeros."""
    tensor = _tensor(tensor, "broadcast", moving=True)
    root = check_root(root_rank)
    members = members_of(process_set, "broadcast", root)
    name = op_name("Broadcast", name)

    def forward(x: tf.Tensor) -> tf.Tensor:
        if not tf.executing_eagerly():
            out = _kernels.broadcast(x, name, members.position(root, "broadcast"), members.id)
            kernel_node([out])
            out.set_shape(x.shape)
            return out
        return run(lambda v: [_eager.broadcast(v, root, name, process_set)], [x], [x.dtype],
                   [x.shape])[0]
    if not _differentiable(tensor):
        return forward(tensor)

    @tf.custom_gradient
    def differentiable(x: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> tf.Tensor:
            dy = tf.convert_to_tensor(dy)
            if not tf.executing_eagerly():
                # Every rank's gradient summed into the root, zeros elsewhere. The root is
                # decided when the graph is built, as for the forward node.
                summed = graph_allreduce([dy], Sum, sub_name(name, "grad"), 1.0, 1.0,
                                         process_set, [sub_name(name, "grad")])[0]
                return summed if _core.rank() == root else tf.zeros_like(summed)
            return run(lambda d: [_eager.broadcast_grad(d, root, name, process_set)],
                       [dy], [x.dtype], [x.shape])[0]
        return forward(x), grad
    return differentiable(tensor)


# --- allgather -------------------------------------------------------------------------------

def allgather(tensor: Any, name: Optional[str] = None, ignore_name_scope: bool = False,
              process_set: ProcessSet = global_process_set) -> Any:
    """Every rank's ``tensor`` (of ``process_set``) concatenated along the first dimension, in
    rank order (first dimensions may differ between ranks; a scalar counts as one row). A
    tf.IndexedSlices gathers its values and indices. Differentiable."""
    members = members_of(process_set, "allgather")
    if isinstance(tensor, tf.IndexedSlices):
        base = op_name("AllgatherSparse", name)
        values = allgather(tensor.values, name=f"{base}.values" if base else None,
                           process_set=process_set)
        indices = allgather(tensor.indices, name=f"{base}.indices" if base else None,
                            process_set=process_set)
        return tf.IndexedSlices(values, indices, dense_shape=tensor.dense_shape)
    tensor = _tensor(tensor, "allgather", moving=True)
    name = op_name("Allgather", name)
    shape = tensor.shape
    out_shape = tf.TensorShape([None]) + (shape[1:] if shape.rank else [])

    def forward(x: tf.Tensor) -> List[tf.Tensor]:
        if not tf.executing_eagerly():
            gathered, rows = _kernels.allgather(x, name, members.id)
            kernel_node([gathered])
            gathered.set_shape(out_shape)
            rows.set_shape([members.size])
            return [gathered, rows]
        return run(lambda v: _eager.allgather(v, name, process_set), [x], [x.dtype, tf.int32],
                   [out_shape, [members.size]])
    if not _differentiable(tensor):
        return forward(tensor)[0]

    @tf.custom_gradient
    def differentiable(x: tf.Tensor) -> Any:
        gathered, rows = forward(x)
        x_shape = tf.shape(x)

        def grad(dy: tf.Tensor) -> tf.Tensor:
            dy = tf.convert_to_tensor(dy)
            if not tf.executing_eagerly():
                # Every rank's gradient of this rank's rows comes back (an alltoall with the
                # forward's row counts as splits) and is summed, in float64 as eagerly.
                received, _ = _kernels.alltoall(dy, rows, sub_name(name, "grad"), members.id)
                kernel_node([received])
                mine = tf.reduce_prod(x_shape[:1])  # a scalar is one row
                blocks = tf.reshape(tf.cast(received, tf.float64),
                                    tf.concat([[members.size, mine], tf.shape(dy)[1:]], 0))
                return tf.cast(tf.reshape(tf.reduce_sum(blocks, axis=0), x_shape), x.dtype)
            return run(lambda d, r, s: [_eager.allgather_grad(tuple(int(v) for v in s), d, r,
                                                               name, process_set)],
                       [dy, rows, x_shape], [x.dtype], [x.shape])[0]
        return gathered, grad
    return differentiable(tensor)


# --- alltoall --------------------------------------------------------------------------------

def alltoall(tensor: Any, splits: Optional[Any] = None, name: Optional[str] = None,
             ignore_name_scope: bool = False,
             process_set: ProcessSet = global_process_set) -> Any:
    """Exchanges slices of ``tensor``: rows ``[sum(splits[:p]), sum(splits[:p+1]))`` go to rank
    p (without splits the first dimension is divided evenly). Returns, as Horovod's TensorFlow
    binding does, the received tensor, and with ``splits`` the pair ``(received tensor, rows
    received from each rank as int32)``. With a ``process_set``, p counts the set's ranks in
    order. Differentiable."""
    members = members_of(process_set, "alltoall")
    tensor = _tensor(tensor, "alltoall", moving=True)
    name = op_name("Alltoall", name)
    if splits is not None and not tf.executing_eagerly() and isinstance(splits, tf.Tensor):
        split_input = tf.cast(splits, tf.int64)
    else:
        if tensor.shape.rank == 0:
            raise ValueError("alltoall needs a tensor with at least one dimension")
        if isinstance(splits, (tf.Tensor, tf.Variable)):
            if splits.dtype.is_floating:
                raise TypeError(f"splits must hold integers, got a {splits.dtype.name} tensor")
            splits = [int(v) for v in np.asarray(splits).reshape(-1)]
        if tensor.shape[0] is not None:
            try:
                check_splits(splits, int(tensor.shape[0]), members.size)
            except ValueError as error:
                raise InvalidArgumentError(str(error)) from None
        split_input = tf.constant(splits if splits is not None else [], dtype=tf.int64)
    out_shape = tf.TensorShape([None]) + tensor.shape[1:]

    def eager(v: np.ndarray, s: np.ndarray) -> Any:
        return _eager.alltoall(v, [int(x) for x in s] if s.size else None, name, process_set)

    def forward(x: tf.Tensor) -> List[tf.Tensor]:
        if not tf.executing_eagerly():
            received, rows = _kernels.alltoall(x, split_input, name, members.id)
            kernel_node([received])
            received.set_shape(out_shape)
            rows.set_shape([members.size])
            return [received, rows]
        return run(eager, [x, split_input], [x.dtype, tf.int32], [out_shape, [members.size]])
    if not _differentiable(tensor):
        received, rows = forward(tensor)
        return (received, rows) if splits is not None else received

    @tf.custom_gradient
    def differentiable(x: tf.Tensor) -> Any:
        received, rows = forward(x)

        def grad(dy: tf.Tensor, _unused: Any = None) -> tf.Tensor:
            dy = tf.convert_to_tensor(dy)
            if not tf.executing_eagerly():
                # Each gradient row goes back to the rank its row came from.
                returned, _ = _kernels.alltoall(dy, rows, sub_name(name, "grad"), members.id)
                kernel_node([returned])
                returned.set_shape(x.shape)
                return returned
            return run(lambda d, r: [_eager.alltoall_grad(d, r, name, process_set)],
                       [dy, rows], [x.dtype], [x.shape])[0]
        return (received, rows), grad
    received, rows = differentiable(tensor)
    return (received, rows) if splits is not None else received


# --- reducescatter ---------------------------------------------------------------------------

def reducescatter(tensor: Any, device_dense: str = "",
                  compression: type[Compressor] = Compression.none, op: ReduceOp = Average,
                  name: Optional[str] = None, process_set: ProcessSet = global_process_set,
                  ignore_name_scope: bool = False, prescale_factor: float = 1.0,
                  postscale_factor: float = 1.0) -> tf.Tensor:
    """This rank's rows of the reduction of ``tensor`` over the ranks of ``process_set``: the
    r-th rank of the set gets rows ``[start_r, end_r)``, the first ``rows % size`` ranks one
    row more. Differentiable."""
    op = resolve_op(op, None)
    pre, post = scale_args(prescale_factor, postscale_factor)
    members = members_of(process_set, "reducescatter")
    tensor = _tensor(tensor, "reducescatter")
    if tensor.shape.rank == 0:
        raise ValueError("reducescatter needs a tensor with at least one dimension")
    compressed, context = compression.compress(tensor)
    name = op_name("Reducescatter", name)
    out_shape = tf.TensorShape([None]) + compressed.shape[1:]
    if compressed.shape[0] is not None:
        rows = _builders.reducescatter_rows(int(compressed.shape[0]), members.size)
        out_shape = tf.TensorShape([rows[members.rank]]) + compressed.shape[1:]

    def forward(x: tf.Tensor) -> tf.Tensor:
        if not tf.executing_eagerly():
            out = _kernels.reducescatter(x, name, int(engine_op(op)), pre, post, members.id)
            kernel_node([out])
            out.set_shape(out_shape)
            return out
        return run(lambda v: [_eager.reducescatter(v, op, name, pre, post, process_set)], [x],
                   [x.dtype], [out_shape])[0]
    if not _differentiable(compressed):
        return compression.decompress(forward(compressed), context)

    @tf.custom_gradient
    def differentiable(x: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> tf.Tensor:
            dy = tf.convert_to_tensor(dy)
            if not tf.executing_eagerly() and int(op) not in EXTREMA:
                # Every rank's rows of the gradient gathered, scaled as the forward scaled.
                gathered, _ = _kernels.allgather(dy, sub_name(name, "grad"), members.id)
                kernel_node([gathered])
                scale = _eager.reducescatter_grad_scale(op, pre, post, members.size)
                summed = tf.cast(tf.reshape(gathered, tf.shape(x)), tf.float64) * scale
                return tf.cast(summed, x.dtype)
            return run(lambda v, d: [_eager.reducescatter_grad(v, d, op, name, pre, post,
                                                               process_set)],
                       [x, dy], [x.dtype], [x.shape])[0]
        return forward(x), grad
    return compression.decompress(differentiable(compressed), context)


# --- grouped forms ---------------------------------------------------------------------------

def grouped_allgather(tensors: Sequence[Any], name: Optional[str] = None,
                      ignore_name_scope: bool = False,
                      process_set: ProcessSet = global_process_set) -> List[tf.Tensor]:
    """:func:`allgather` of each tensor of a list (differentiable)."""
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError("grouped_allgather expects a non-empty list of tensors")
    base = op_name("GroupedAllgather", name)
    return [allgather(t, name=f"{base}.{i}" if base else None, process_set=process_set)
            for i, t in enumerate(tensors)]


def grouped_reducescatter(tensors: Sequence[Any], device_dense: str = "",
                          compression: type[Compressor] = Compression.none,
                          op: ReduceOp = Average,
                          process_set: ProcessSet = global_process_set,
                          prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                          name: Optional[str] = None,
                          ignore_name_scope: bool = False) -> List[tf.Tensor]:
    """:func:`reducescatter` of each tensor of a list (differentiable)."""
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError("grouped_reducescatter expects a non-empty list of tensors")
    base = op_name("GroupedReducescatter", name)
    return [reducescatter(t, compression=compression, op=op,
                          name=f"{base}.{i}" if base else None, process_set=process_set,
                          prescale_factor=prescale_factor, postscale_factor=postscale_factor)
            for i, t in enumerate(tensors)]


# --- barrier, join, topology as tensors ------------------------------------------------------

def barrier(process_set: ProcessSet = global_process_set) -> None:
    """Returns once every rank (of ``process_set``) has called barrier() (eager only)."""
    _builders.barrier(process_set)


def join() -> int:
    """Declares that this rank has no more data and waits until every rank has joined; until
    then the other ranks' allreduces go on with this rank contributing zeros. Returns the rank
    that joined last (eager only)."""
    return _builders.join()


def _current(value: Callable[[], int]) -> tf.Tensor:
    """``value()`` as an int32 tensor, read when the op runs rather than when a tf.function is
    traced: a graph traced before an elastic reset sees the ranks after it."""
    if tf.executing_eagerly():
        return tf.constant(value(), dtype=tf.int32)
    result = tf.py_function(lambda: np.int32(value()), [], tf.int32)
    result.set_shape([])
    return result


def size_op(process_set_id: int = 0, name: Optional[str] = None) -> tf.Tensor:
    """The size of process set ``process_set_id`` (0: all ranks) as an int32 tensor."""
    process_set_by_id(process_set_id)  # an unknown id raises here, at the call
    return _current(lambda: process_set_by_id(process_set_id).size())


def process_set_included_op(process_set_id: int = 0, name: Optional[str] = None) -> tf.Tensor:
    """1 if this rank is in process set ``process_set_id``, else 0, as an int32 tensor."""
    process_set_by_id(process_set_id)
    return _current(lambda: int(process_set_by_id(process_set_id).included()))


def rank_op(name: Optional[str] = None) -> tf.Tensor:
    """rank() as an int32 tensor."""
    return _current(_core.rank)


def local_size_op(name: Optional[str] = None) -> tf.Tensor:
    """local_size() as an int32 tensor."""
    return _current(_core.local_size)


def local_rank_op(name: Optional[str] = None) -> tf.Tensor:
    """local_rank() as an int32 tensor."""
    return _current(_core.local_rank)


__all__ = [
    "Adasum", "Average", "Sum", "Min", "Max", "Product", "ReduceOp", "allreduce",
    "grouped_allreduce", "grouped_allgather", "grouped_reducescatter", "broadcast", "allgather",
    "alltoall", "reducescatter", "barrier", "join", "size_op", "process_set_included_op",
    "rank_op", "local_size_op", "local_rank_op", "resolve_op", "InvalidArgumentError",
    "members_of",
]
