"""The collectives of dist_sync.tensorflow on numpy views of eager tensors, forward and backward
(Note [Collectives inside tf.function] in _graph.py runs them in graph mode).

Gradients follow Note [Gradient convention] in dist_sync/torch/_autograd.py: every backward is the
exact gradient of the sum of all ranks' losses. Min/Max route the summed gradient to the ranks
holding the extremum (split evenly between ties); Product multiplies it by the product of the
other ranks' inputs (exact with zeros).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from .. import _builders, _core
from .._process_sets import resolve
from .._reduce_op import Average, Max, Min, Product, ReduceOp, Sum
from .._session import DistSyncError, Handle, synchronize
from ._adapter import TENSORFLOW as TF
from ._graph import sub_name

EXTREMA = (int(Min), int(Max), int(Product))


class FailedPreconditionError(tf.errors.FailedPreconditionError, DistSyncError):
    """The ranks disagree on a collective (dtype, shape, op, scale factors or root differ),
    found when it was negotiated; raised on every rank with the same message naming the
    tensor, the values and the ranks. Both the ``tf.errors.FailedPreconditionError`` that
    Horovod's TensorFlow binding raises (and that a graph reports) and the ``DistSyncError`` of
    dist_sync's other front ends."""

    def __init__(self, message: str) -> None:
        super().__init__(None, None, message)


def wait(handle: Handle) -> Any:
    """``synchronize(handle)``, a mismatch between ranks raised as
    :class:`FailedPreconditionError`."""
    try:
        return synchronize(handle)
    except DistSyncError as error:
        if getattr(error, "kind", None) == "mismatch":
            raise FailedPreconditionError(str(error)) from None
        raise


def allreduce(x: np.ndarray, op: ReduceOp, name: Optional[str], pre: float = 1.0,
              post: float = 1.0, process_set: Any = None) -> np.ndarray:
    return wait(_builders.allreduce(TF, x, op, name, pre, post, in_place=False,
                                           what="allreduce", process_set=process_set))


def grouped_allreduce(xs: Sequence[np.ndarray], op: ReduceOp, name: Optional[str],
                      pre: float = 1.0, post: float = 1.0,
                      process_set: Any = None) -> List[np.ndarray]:
    return wait(_builders.grouped_allreduce(TF, list(xs), op, name, pre, post,
                                                   in_place=False, what="grouped_allreduce",
                                                   process_set=process_set))


def broadcast(x: np.ndarray, root: int, name: Optional[str],
              process_set: Any = None) -> np.ndarray:
    return wait(_builders.broadcast(TF, x, root, name, in_place=False, what="broadcast",
                                           process_set=process_set))


def allgather(x: np.ndarray, name: Optional[str],
              process_set: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """(gathered, rows from each rank as int32)."""
    gathered, rows = wait(_builders.allgather(TF, x, name, what="allgather",
                                                     with_rows=True, process_set=process_set))
    return gathered, np.asarray(rows, dtype=np.int32)


def alltoall(x: np.ndarray, splits: Any, name: Optional[str],
             process_set: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """(received, rows received from each rank as int32)."""
    return wait(_builders.alltoall(TF, x, splits, name, what="alltoall",
                                          process_set=process_set))


def reducescatter(x: np.ndarray, op: ReduceOp, name: Optional[str], pre: float = 1.0,
                  post: float = 1.0, process_set: Any = None) -> np.ndarray:
    return wait(_builders.reducescatter(TF, x, op, name, pre, post,
                                               what="reducescatter", process_set=process_set))


# --- backward --------------------------------------------------------------------------------

def _in_dtype(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values.astype(like.dtype))


def extremum_grad(x: np.ndarray, summed: np.ndarray, op: ReduceOp, pre: float, post: float,
                  name: Optional[str], process_set: Any = None) -> np.ndarray:
    """The input gradient of a Min/Max/Product reduction (scaled by pre and post), given the
    output gradient summed over the ranks of ``process_set``."""
    summed64 = summed.astype(np.float64)
    if int(op) == int(Product):
        members = resolve(process_set, "allreduce")
        gathered, _ = allgather(x.reshape((1,) + x.shape), sub_name(name, "grad.inputs"),
                                process_set)
        others = np.delete(gathered.astype(np.float64), members.rank, axis=0).prod(axis=0)
        return _in_dtype(summed64 * post * pre ** members.size * others, x)
    winner = allreduce(x, op, sub_name(name, "grad.winner"), process_set=process_set)
    mask = (x == winner).astype(np.float64)
    count = allreduce(mask, Sum, sub_name(name, "grad.ties"), process_set=process_set)
    return _in_dtype(summed64 * (pre * post) * mask / count, x)


def allreduce_grad(x: np.ndarray, dy: np.ndarray, op: ReduceOp, name: Optional[str],
                   pre: float, post: float, process_set: Any = None) -> np.ndarray:
    if int(op) in EXTREMA:
        summed = allreduce(dy, Sum, sub_name(name, "grad"), process_set=process_set)
        return extremum_grad(x, summed, op, pre, post, name, process_set)
    return allreduce(dy, op, sub_name(name, "grad"), pre, post, process_set)


def grouped_allreduce_grad(xs: Sequence[np.ndarray], dys: Sequence[np.ndarray], op: ReduceOp,
                           name: Optional[str], pre: float, post: float,
                           process_set: Any = None) -> List[np.ndarray]:
    if int(op) in EXTREMA:
        summed = grouped_allreduce(dys, Sum, sub_name(name, "grad"), process_set=process_set)
        return [extremum_grad(x, s, op, pre, post, sub_name(name, str(i)), process_set)
                for i, (x, s) in enumerate(zip(xs, summed))]
    return grouped_allreduce(dys, op, sub_name(name, "grad"), pre, post, process_set)


def broadcast_grad(dy: np.ndarray, root: int, name: Optional[str],
                   process_set: Any = None) -> np.ndarray:
    """``root`` is a global rank."""
    summed = allreduce(dy, Sum, sub_name(name, "grad"), process_set=process_set)
    return summed if _core.rank() == root else np.zeros_like(summed)


def allgather_grad(x_shape: Tuple[int, ...], dy: np.ndarray, rows: np.ndarray,
                   name: Optional[str], process_set: Any = None) -> np.ndarray:
    """Every rank's gradient of this rank's rows, summed: sent back with an alltoall."""
    received, _ = alltoall(dy, [int(r) for r in rows], sub_name(name, "grad"), process_set)
    mine = x_shape[0] if len(x_shape) else 1
    summed = received.reshape((len(rows), mine) + dy.shape[1:]).astype(np.float64).sum(axis=0)
    return _in_dtype(summed.reshape(x_shape), dy)


def alltoall_grad(dy: np.ndarray, received: np.ndarray, name: Optional[str],
                  process_set: Any = None) -> np.ndarray:
    returned, _ = alltoall(dy, [int(r) for r in received], sub_name(name, "grad"), process_set)
    return returned


def reducescatter_grad(x: np.ndarray, dy: np.ndarray, op: ReduceOp, name: Optional[str],
                       pre: float, post: float, process_set: Any = None) -> np.ndarray:
    summed, _ = allgather(dy, sub_name(name, "grad"), process_set)
    summed = summed.reshape(x.shape)
    if int(op) in EXTREMA:
        return extremum_grad(x, summed, op, pre, post, name, process_set)
    scale = reducescatter_grad_scale(op, pre, post, resolve(process_set, "reducescatter").size)
    return _in_dtype(summed.astype(np.float64) * scale, x)


def reducescatter_grad_scale(op: ReduceOp, pre: float, post: float, size: int) -> float:
    """What a Sum or Average reducescatter's gathered output gradient is multiplied by: the
    forward's scale factors, and 1/size for Average."""
    return pre * post / (size if int(op) == int(Average) else 1)
