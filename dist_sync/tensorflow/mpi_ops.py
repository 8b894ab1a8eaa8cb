"""Collective operations on TensorFlow tensors, with ``horovod.tensorflow``'s names and
signatures. They work eagerly and inside ``tf.function`` (Note [Collectives inside
tf.function] in _graph.py) and are differentiable (gradients in _eager.py). Results are new
tensors on every rank; ``tf.Variable`` inputs are read. ``device_dense``/``device_sparse``
arguments are accepted and ignored (dist_sync works on CPU tensors); ``process_set`` arguments
are not provided.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from .. import _builders, _core
from .._reduce_op import Average, Max, Min, Product, ReduceOp, Sum
from .._reduce_op import resolve_op as _resolve_op
from .._validation import check_root, check_splits, scale_args
from . import _eager
from ._adapter import MOVABLE, dtype_code
from ._graph import op_name, run
from .compression import Compression, Compressor


class _AdasumOp:
    """Horovod's Adasum reduction, which dist_sync does not implement: it exists so scripts that
    mention ``hvd.Adasum`` import; passing it to an operation raises NotImplementedError."""

    def __repr__(self) -> str:
        return "dist_sync.tensorflow.Adasum"


Adasum = _AdasumOp()


def resolve_op(op: Any, average: Optional[bool]) -> ReduceOp:
    """The reduction for Horovod's (op, deprecated average) pair; ``op=None`` means Average."""
    if op is Adasum:
        raise NotImplementedError("Adasum is not implemented in dist_sync; use op=Average (the "
                                  "default) or Sum")
    return _resolve_op(op, average, stacklevel=4)


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


# --- allreduce -------------------------------------------------------------------------------

def _allreduce(tensor: tf.Tensor, op: ReduceOp, name: Optional[str], pre: float,
               post: float) -> tf.Tensor:
    name = op_name("Allreduce", name)

    def forward(x: tf.Tensor) -> tf.Tensor:
        return run(lambda v: [_eager.allreduce(v, op, name, pre, post)], [x], [x.dtype],
                   [x.shape])[0]
    if not _differentiable(tensor):
        return forward(tensor)

    @tf.custom_gradient
    def differentiable(x: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> tf.Tensor:
            return run(lambda v, d: [_eager.allreduce_grad(v, d, op, name, pre, post)],
                       [x, tf.convert_to_tensor(dy)], [x.dtype], [x.shape])[0]
        return forward(x), grad
    return differentiable(tensor)


def allreduce(tensor: Any, average: Optional[bool] = None, device_dense: str = "",
              device_sparse: str = "", compression: type[Compressor] = Compression.none,
              op: Optional[ReduceOp] = None, prescale_factor: float = 1.0,
              postscale_factor: float = 1.0, name: Optional[str] = None,
              ignore_name_scope: bool = False) -> Any:
    """The reduction of ``tensor`` over all ranks (bit-identical on every rank).

    ``op``: Average (default), Sum, Min, Max or Product; integer Average truncates toward zero.
    ``prescale_factor`` multiplies each rank's input, ``postscale_factor`` the result.
    ``compression`` casts the tensor for the wire. A ``tf.IndexedSlices`` is allgathered (values
    and indices; Average divides the values by size()), as Horovod does; only Average and Sum
    apply to it. Differentiable; works eagerly and inside tf.function.
    """
    op = resolve_op(op, average)
    pre, post = scale_args(prescale_factor, postscale_factor)
    if isinstance(tensor, tf.IndexedSlices):
        if int(op) not in (int(Average), int(Sum)):
            raise NotImplementedError("allreduce of tf.IndexedSlices supports op=Average and Sum "
                                      "(the slices are allgathered)")
        if pre != 1.0 or post != 1.0:
            raise NotImplementedError("allreduce of tf.IndexedSlices takes no prescale_factor or "
                                      "postscale_factor")
        base = op_name("AllreduceSparse", name)
        values = allgather(tensor.values, name=f"{base}.values" if base else None)
        indices = allgather(tensor.indices, name=f"{base}.indices" if base else None)
        if int(op) == int(Average):
            values = values / tf.cast(_core.size(), values.dtype)
        return tf.IndexedSlices(values, indices, dense_shape=tensor.dense_shape)
    tensor = _tensor(tensor, "allreduce")
    compressed, context = compression.compress(tensor)
    return compression.decompress(_allreduce(compressed, op, name, pre, post), context)


def grouped_allreduce(tensors: Sequence[Any], average: Optional[bool] = None,
                      device_dense: str = "", device_sparse: str = "",
                      compression: type[Compressor] = Compression.none,
                      op: Optional[ReduceOp] = None, prescale_factor: float = 1.0,
                      postscale_factor: float = 1.0, name: Optional[str] = None,
                      ignore_name_scope: bool = False) -> List[tf.Tensor]:
    """Reduces a list of tensors as one unit (negotiated and fused together); returns the list
    of results. Differentiable like :func:`allreduce`."""
    op = resolve_op(op, average)
    pre, post = scale_args(prescale_factor, postscale_factor)
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError("grouped_allreduce expects a non-empty list of tensors")
    items = [_tensor(t, f"grouped_allreduce (item {i})") for i, t in enumerate(tensors)]
    compressed, contexts = zip(*[compression.compress(t) for t in items])
    reduced = _grouped(list(compressed), op, op_name("GroupedAllreduce", name), pre, post)
    return [compression.decompress(r, c) for r, c in zip(reduced, contexts)]


def _grouped(tensors: List[tf.Tensor], op: ReduceOp, name: Optional[str], pre: float,
             post: float) -> List[tf.Tensor]:
    dtypes = [t.dtype for t in tensors]
    shapes = [t.shape for t in tensors]

    def forward(*xs: tf.Tensor) -> List[tf.Tensor]:
        return run(lambda *vs: _eager.grouped_allreduce(vs, op, name, pre, post), xs, dtypes,
                   shapes)
    floating = [i for i, t in enumerate(tensors) if _differentiable(t)]
    if not floating:
        return forward(*tensors)

    @tf.custom_gradient
    def differentiable(*xs: tf.Tensor) -> Any:
        def grad(*dys: tf.Tensor) -> List[Optional[tf.Tensor]]:
            count = len(floating)
            inputs = [xs[i] for i in floating] + [tf.convert_to_tensor(dys[i]) for i in floating]
            grads = run(lambda *vs: _eager.grouped_allreduce_grad(vs[:count], vs[count:], op,
                                                                  name, pre, post),
                        inputs, [dtypes[i] for i in floating], [shapes[i] for i in floating])
            result: List[Optional[tf.Tensor]] = [None] * len(xs)
            for i, g in zip(floating, grads):
                result[i] = g
            return result
        return forward(*xs), grad
    return differentiable(*tensors)


# --- broadcast -------------------------------------------------------------------------------

def broadcast(tensor: Any, root_rank: int, name: Optional[str] = None,
              ignore_name_scope: bool = False) -> tf.Tensor:
    """``root_rank``'s ``tensor`` on every rank, as a new tensor. Differentiable: the root
    receives the sum of every rank's gradient, other ranks zeros."""
    tensor = _tensor(tensor, "broadcast", moving=True)
    root = check_root(root_rank)
    name = op_name("Broadcast", name)

    def forward(x: tf.Tensor) -> tf.Tensor:
        return run(lambda v: [_eager.broadcast(v, root, name)], [x], [x.dtype], [x.shape])[0]
    if not _differentiable(tensor):
        return forward(tensor)

    @tf.custom_gradient
    def differentiable(x: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> tf.Tensor:
            return run(lambda d: [_eager.broadcast_grad(d, root, name)],
                       [tf.convert_to_tensor(dy)], [x.dtype], [x.shape])[0]
        return forward(x), grad
    return differentiable(tensor)


# --- allgather -------------------------------------------------------------------------------

def allgather(tensor: Any, name: Optional[str] = None,
              ignore_name_scope: bool = False) -> Any:
    """Every rank's ``tensor`` concatenated along the first dimension, in rank order (first
    dimensions may differ between ranks; a scalar counts as one row). A tf.IndexedSlices
    gathers its values and indices. Differentiable."""
    if isinstance(tensor, tf.IndexedSlices):
        base = op_name("AllgatherSparse", name)
        values = allgather(tensor.values, name=f"{base}.values" if base else None)
        indices = allgather(tensor.indices, name=f"{base}.indices" if base else None)
        return tf.IndexedSlices(values, indices, dense_shape=tensor.dense_shape)
    tensor = _tensor(tensor, "allgather", moving=True)
    name = op_name("Allgather", name)
    shape = tensor.shape
    out_shape = tf.TensorShape([None]) + (shape[1:] if shape.rank else [])

    def forward(x: tf.Tensor) -> List[tf.Tensor]:
        return run(lambda v: _eager.allgather(v, name), [x], [x.dtype, tf.int32],
                   [out_shape, [_core.size()]])
    if not _differentiable(tensor):
        return forward(tensor)[0]

    @tf.custom_gradient
    def differentiable(x: tf.Tensor) -> Any:
        gathered, rows = forward(x)
        x_shape = tf.shape(x)

        def grad(dy: tf.Tensor) -> tf.Tensor:
            dy = tf.convert_to_tensor(dy)
            return run(lambda d, r, s: [_eager.allgather_grad(tuple(int(v) for v in s), d, r,
                                                               name)],
                       [dy, rows, x_shape], [x.dtype], [x.shape])[0]
        return gathered, grad
    return differentiable(tensor)


# --- alltoall --------------------------------------------------------------------------------

def alltoall(tensor: Any, splits: Optional[Any] = None, name: Optional[str] = None,
             ignore_name_scope: bool = False) -> Any:
    """Exchanges slices of ``tensor``: rows ``[sum(splits[:p]), sum(splits[:p+1]))`` go to rank
    p (without splits the first dimension is divided evenly). Returns ``(received tensor, rows
    received from each rank as int32)`` as Horovod's TensorFlow binding does. Differentiable."""
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
        if splits is not None and tensor.shape[0] is not None:
            check_splits(splits, int(tensor.shape[0]), _core.size())
        split_input = tf.constant(splits if splits is not None else [], dtype=tf.int64)
    out_shape = tf.TensorShape([None]) + tensor.shape[1:]

    def eager(v: np.ndarray, s: np.ndarray) -> Any:
        return _eager.alltoall(v, [int(x) for x in s] if s.size else None, name)

    def forward(x: tf.Tensor) -> List[tf.Tensor]:
        return run(eager, [x, split_input], [x.dtype, tf.int32], [out_shape, [_core.size()]])
    if not _differentiable(tensor):
        return tuple(forward(tensor))

    @tf.custom_gradient
    def differentiable(x: tf.Tensor) -> Any:
        received, rows = forward(x)

        def grad(dy: tf.Tensor, _unused: Any = None) -> tf.Tensor:
            return run(lambda d, r: [_eager.alltoall_grad(d, r, name)],
                       [tf.convert_to_tensor(dy), rows], [x.dtype], [x.shape])[0]
        return (received, rows), grad
    received, rows = differentiable(tensor)
    return received, rows


# --- reducescatter ---------------------------------------------------------------------------

def reducescatter(tensor: Any, device_dense: str = "",
                  compression: type[Compressor] = Compression.none, op: ReduceOp = Average,
                  name: Optional[str] = None, ignore_name_scope: bool = False,
                  prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> tf.Tensor:
    """This rank's rows of the reduction of ``tensor`` over all ranks: rank r gets rows
    ``[start_r, end_r)``, the first ``rows % size`` ranks one row more. Differentiable."""
    op = resolve_op(op, None)
    pre, post = scale_args(prescale_factor, postscale_factor)
    tensor = _tensor(tensor, "reducescatter")
    if tensor.shape.rank == 0:
        raise ValueError("reducescatter needs a tensor with at least one dimension")
    compressed, context = compression.compress(tensor)
    name = op_name("Reducescatter", name)
    out_shape = tf.TensorShape([None]) + compressed.shape[1:]
    if compressed.shape[0] is not None:
        rows = _builders.reducescatter_rows(int(compressed.shape[0]), _core.size())
        out_shape = tf.TensorShape([rows[_core.rank()]]) + compressed.shape[1:]

    def forward(x: tf.Tensor) -> tf.Tensor:
        return run(lambda v: [_eager.reducescatter(v, op, name, pre, post)], [x], [x.dtype],
                   [out_shape])[0]
    if not _differentiable(compressed):
        return compression.decompress(forward(compressed), context)

    @tf.custom_gradient
    def differentiable(x: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> tf.Tensor:
            return run(lambda v, d: [_eager.reducescatter_grad(v, d, op, name, pre, post)],
                       [x, tf.convert_to_tensor(dy)], [x.dtype], [x.shape])[0]
        return forward(x), grad
    return compression.decompress(differentiable(compressed), context)


# --- grouped forms ---------------------------------------------------------------------------

def grouped_allgather(tensors: Sequence[Any], name: Optional[str] = None,
                      ignore_name_scope: bool = False) -> List[tf.Tensor]:
    """:func:`allgather` of each tensor of a list (differentiable)."""
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError("grouped_allgather expects a non-empty list of tensors")
    base = op_name("GroupedAllgather", name)
    return [allgather(t, name=f"{base}.{i}" if base else None) for i, t in enumerate(tensors)]


def grouped_reducescatter(tensors: Sequence[Any], device_dense: str = "",
                          compression: type[Compressor] = Compression.none,
                          op: ReduceOp = Average, name: Optional[str] = None,
                          ignore_name_scope: bool = False, prescale_factor: float = 1.0,
                          postscale_factor: float = 1.0) -> List[tf.Tensor]:
    """:func:`reducescatter` of each tensor of a list (differentiable)."""
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError("grouped_reducescatter expects a non-empty list of tensors")
    base = op_name("GroupedReducescatter", name)
    return [reducescatter(t, compression=compression, op=op,
                          name=f"{base}.{i}" if base else None, prescale_factor=prescale_factor,
                          postscale_factor=postscale_factor) for i, t in enumerate(tensors)]


# --- barrier, join, topology as tensors ------------------------------------------------------

def barrier() -> None:
    """Returns once every rank has called barrier() (eager only)."""
    _builders.barrier()


def join() -> int:
    """Declares that this rank has no more data and waits until every rank has joined; until
    then the other ranks' allreduces go on with this rank contributing zeros. Returns the rank
    that joined last (eager only)."""
    return _builders.join()


def size_op(name: Optional[str] = None) -> tf.Tensor:
    """size() as an int32 tensor."""
    return tf.constant(_core.size(), dtype=tf.int32)


def rank_op(name: Optional[str] = None) -> tf.Tensor:
    """rank() as an int32 tensor."""
    return tf.constant(_core.rank(), dtype=tf.int32)


def local_size_op(name: Optional[str] = None) -> tf.Tensor:
    """local_size() as an int32 tensor."""
    return tf.constant(_core.local_size(), dtype=tf.int32)


def local_rank_op(name: Optional[str] = None) -> tf.Tensor:
    """local_rank() as an int32 tensor."""
    return tf.constant(_core.local_rank(), dtype=tf.int32)


__all__ = [
    "Adasum", "Average", "Sum", "Min", "Max", "Product", "ReduceOp", "allreduce",
    "grouped_allreduce", "grouped_allgather", "grouped_reducescatter", "broadcast", "allgather", "alltoall", "reducescatter", "barrier",
    "join", "size_op", "rank_op", "local_size_op", "local_rank_op", "resolve_op",
]
