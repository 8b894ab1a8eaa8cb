"""Collective operations on numpy arrays.

Every operation has a synchronous form and an ``*_async`` form returning a Handle; in-place
forms end in ``_``. The synchronous forms are the async ones followed by :func:`synchronize`.
Out-of-place operations accept any layout (a non-contiguous input is copied once); in-place ones
need a C-contiguous, aligned, writable array.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import _builders
from ._numpy import NUMPY
from ._reduce_op import Adasum, Average, Max, Min, Product, ReduceOp, Sum
from ._process_sets import ProcessSet, global_process_set
from ._session import Handle, synchronize

# --- allreduce -------------------------------------------------------------------------------


def allreduce_async(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
                    prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                    process_set: ProcessSet = global_process_set) -> Handle:
    """Starts reducing ``array`` across ranks into a new array; returns a Handle."""
    return _builders.allreduce(NUMPY, array, op, name, prescale_factor, postscale_factor,
                               in_place=False, what="allreduce", process_set=process_set)


def allreduce_async_(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
                     prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                     process_set: ProcessSet = global_process_set) -> Handle:
    """Starts reducing ``array`` across ranks in place; returns a Handle."""
    return _builders.allreduce(NUMPY, array, op, name, prescale_factor, postscale_factor,
                               in_place=True, what="allreduce_", process_set=process_set)


def allreduce(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
              prescale_factor: float = 1.0, postscale_factor: float = 1.0,
              process_set: ProcessSet = global_process_set) -> np.ndarray:
    """Returns the reduction of ``array`` over all ranks (identical bits on every rank).

    ``op`` is Average (default), Sum, Adasum, Min, Max or Product. Integer Average truncates
    toward zero. Adasum (adaptive summation of gradients) needs floating arrays and a
    power-of-two number of ranks.
    ``prescale_factor`` multiplies each rank's input, ``postscale_factor`` the result.
    """
    return synchronize(allreduce_async(array, op, name, prescale_factor, postscale_factor,
                                       process_set=process_set))


def allreduce_(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
               prescale_factor: float = 1.0, postscale_factor: float = 1.0,
               process_set: ProcessSet = global_process_set) -> np.ndarray:
    """In-place :func:`allreduce`; returns ``array``."""
    return synchronize(allreduce_async_(array, op, name, prescale_factor, postscale_factor,
                                        process_set=process_set))


# --- grouped allreduce -----------------------------------------------------------------------

def grouped_allreduce_async(arrays: Sequence[np.ndarray], op: ReduceOp = Average,
                            name: Optional[str] = None, prescale_factor: float = 1.0,
                            postscale_factor: float = 1.0,
                            process_set: ProcessSet = global_process_set) -> Handle:
    """Starts reducing a list of arrays as one unit (negotiated and fused together)."""
    return _builders.grouped_allreduce(NUMPY, arrays, op, name, prescale_factor,
                                       postscale_factor, in_place=False,
                                       what="grouped_allreduce", process_set=process_set)


def grouped_allreduce_async_(arrays: Sequence[np.ndarray], op: ReduceOp = Average,
                             name: Optional[str] = None, prescale_factor: float = 1.0,
                             postscale_factor: float = 1.0,
                             process_set: ProcessSet = global_process_set) -> Handle:
    """In-place :func:`grouped_allreduce_async`."""
    return _builders.grouped_allreduce(NUMPY, arrays, op, name, prescale_factor,
                                       postscale_factor, in_place=True,
                                       what="grouped_allreduce_", process_set=process_set)


def grouped_allreduce(arrays: Sequence[np.ndarray], op: ReduceOp = Average,
                      name: Optional[str] = None, prescale_factor: float = 1.0,
                      postscale_factor: float = 1.0,
                      process_set: ProcessSet = global_process_set) -> List[np.ndarray]:
    """Reduces a list of arrays as one unit; returns the list of results."""
    return synchronize(grouped_allreduce_async(arrays, op, name, prescale_factor, postscale_factor,
                                               process_set=process_set))


def grouped_allreduce_(arrays: Sequence[np.ndarray], op: ReduceOp = Average,
                       name: Optional[str] = None, prescale_factor: float = 1.0,
                       postscale_factor: float = 1.0,
                       process_set: ProcessSet = global_process_set) -> List[np.ndarray]:
    """In-place :func:`grouped_allreduce`."""
    return synchronize(grouped_allreduce_async_(arrays, op, name, prescale_factor, postscale_factor,
                                                process_set=process_set))


# --- broadcast -------------------------------------------------------------------------------

def broadcast_async(array: np.ndarray, root_rank: int, name: Optional[str] = None,
                    process_set: ProcessSet = global_process_set) -> Handle:
    """Starts broadcasting ``array`` from ``root_rank`` into a new array on every rank."""
    return _builders.broadcast(NUMPY, array, root_rank, name, in_place=False, what="broadcast",
                               process_set=process_set)


def broadcast_async_(array: np.ndarray, root_rank: int, name: Optional[str] = None,
                     process_set: ProcessSet = global_process_set) -> Handle:
    """Starts broadcasting ``array`` from ``root_rank`` in place."""
    return _builders.broadcast(NUMPY, array, root_rank, name, in_place=True, what="broadcast_",
                               process_set=process_set)


def broadcast(array: np.ndarray, root_rank: int, name: Optional[str] = None,
              process_set: ProcessSet = global_process_set) -> np.ndarray:
    """Returns ``root_rank``'s ``array`` on every rank (shapes and dtypes must match)."""
    return synchronize(broadcast_async(array, root_rank, name, process_set=process_set))


def broadcast_(array: np.ndarray, root_rank: int, name: Optional[str] = None,
               process_set: ProcessSet = global_process_set) -> np.ndarray:
    """In-place :func:`broadcast`; returns ``array``."""
    return synchronize(broadcast_async_(array, root_rank, name, process_set=process_set))


# --- allgather -------------------------------------------------------------------------------

def allgather_async(array: np.ndarray, name: Optional[str] = None,
                    process_set: ProcessSet = global_process_set) -> Handle:
    """Starts concatenating every rank's ``array`` along the first dimension (which may differ
    between ranks; a 0-d array counts as one row)."""
    return _builders.allgather(NUMPY, array, name, what="allgather", process_set=process_set)


def allgather(array: np.ndarray, name: Optional[str] = None,
              process_set: ProcessSet = global_process_set) -> np.ndarray:
    """Every rank's ``array`` concatenated along the first dimension, in rank order."""
    return synchronize(allgather_async(array, name, process_set=process_set))


# --- grouped allgather and reducescatter --------------------------------------------------------

def grouped_allgather_async(arrays: Sequence[np.ndarray], name: Optional[str] = None,
                            process_set: ProcessSet = global_process_set) -> Handle:
    """Starts an allgather of each array, negotiated as one unit; the result is the list of
    gathered arrays."""
    return _builders.grouped_allgather(NUMPY, arrays, name, what="grouped_allgather",
                                       process_set=process_set)


def grouped_allgather(arrays: Sequence[np.ndarray], name: Optional[str] = None,
                      process_set: ProcessSet = global_process_set) -> List[np.ndarray]:
    """:func:`allgather` of each array, negotiated as one unit; returns the list of results."""
    return synchronize(grouped_allgather_async(arrays, name, process_set=process_set))


def grouped_reducescatter_async(arrays: Sequence[np.ndarray], op: ReduceOp = Average,
                                name: Optional[str] = None, prescale_factor: float = 1.0,
                                postscale_factor: float = 1.0,
                                process_set: ProcessSet = global_process_set) -> Handle:
    """Starts a reducescatter of each array, negotiated as one unit; the result is the list of
    this rank's pieces."""
    return _builders.grouped_reducescatter(NUMPY, arrays, op, name, prescale_factor,
                                           postscale_factor, what="grouped_reducescatter",
                                           process_set=process_set)


def grouped_reducescatter(arrays: Sequence[np.ndarray], op: ReduceOp = Average,
                          name: Optional[str] = None, prescale_factor: float = 1.0,
                          postscale_factor: float = 1.0,
                          process_set: ProcessSet = global_process_set) -> List[np.ndarray]:
    """:func:`reducescatter` of each array, negotiated as one unit; returns this rank's
    pieces."""
    return synchronize(grouped_reducescatter_async(arrays, op, name, prescale_factor,
                                                   postscale_factor, process_set=process_set))


# --- alltoall --------------------------------------------------------------------------------

def alltoall_async(array: np.ndarray, splits: Optional[Sequence[int]] = None,
                   name: Optional[str] = None,
                   process_set: ProcessSet = global_process_set) -> Handle:
    """Starts an alltoall: rows ``[sum(splits[:p]), sum(splits[:p+1]))`` go to rank p. Without
    splits the first dimension is divided evenly. The result is (received array, received
    splits)."""
    return _builders.alltoall(NUMPY, array, splits, name, what="alltoall", process_set=process_set)


def alltoall(array: np.ndarray, splits: Optional[Sequence[int]] = None,
             name: Optional[str] = None,
             process_set: ProcessSet = global_process_set) -> Tuple[np.ndarray, np.ndarray]:
    """Exchanges slices of ``array`` between all ranks; returns (received, received_splits)."""
    return synchronize(alltoall_async(array, splits, name, process_set=process_set))


# --- reducescatter ---------------------------------------------------------------------------

def reducescatter_async(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
                        prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                        process_set: ProcessSet = global_process_set) -> Handle:
    """Starts reducing ``array`` across ranks and scattering the result along the first
    dimension: rank r receives rows [start_r, end_r), the first ``rows % size`` ranks one row
    more than the others."""
    return _builders.reducescatter(NUMPY, array, op, name, prescale_factor, postscale_factor,
                                   what="reducescatter", process_set=process_set)


def reducescatter(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
                  prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                  process_set: ProcessSet = global_process_set) -> np.ndarray:
    """This rank's rows of the reduction of ``array`` over all ranks."""
    return synchronize(reducescatter_async(array, op, name, prescale_factor, postscale_factor,
                                           process_set=process_set))


# --- barrier and join ------------------------------------------------------------------------

def barrier(process_set: ProcessSet = global_process_set) -> None:
    """Returns once every rank has called barrier()."""
    _builders.barrier(process_set)


def join() -> int:
    """Declares that this rank has no more data. Until every rank has joined, the other ranks'
    allreduces keep working with this rank contributing zeros (Average still divides by the
    full size). Returns the rank that joined last."""
    return _builders.join()


__all__ = [
    "Average", "Sum", "Adasum", "Min", "Max", "Product", "ReduceOp", "allreduce", "allreduce_",
    "allreduce_async", "allreduce_async_", "grouped_allreduce", "grouped_allreduce_",
    "grouped_allreduce_async", "grouped_allreduce_async_", "broadcast", "broadcast_",
    "broadcast_async", "broadcast_async_", "allgather", "allgather_async", "alltoall",
    "alltoall_async", "reducescatter", "reducescatter_async", "barrier", "join",
    "grouped_allgather", "grouped_allgather_async", "grouped_reducescatter",
    "grouped_reducescatter_async",
]
