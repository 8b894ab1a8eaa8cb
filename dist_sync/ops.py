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
from ._reduce_op import Average, Max, Min, Product, ReduceOp, Sum
from ._session import Handle, synchronize

# --- allreduce -------------------------------------------------------------------------------


def allreduce_async(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
                    prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> Handle:
    """Starts reducing ``array`` across ranks into a new array; returns a Handle."""
    return _builders.allreduce(NUMPY, array, op, name, prescale_factor, postscale_factor,
                               in_place=False, what="allreduce")


def allreduce_async_(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
                     prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> Handle:
    """Starts reducing ``array`` across ranks in place; returns a Handle."""
    return _builders.allreduce(NUMPY, array, op, name, prescale_factor, postscale_factor,
                               in_place=True, what="allreduce_")


def allreduce(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
              prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> np.ndarray:
    """Returns the reduction of ``array`` over all ranks (identical bits on every rank).

    ``op`` is Average (default), Sum, Min, Max or Product. Integer Average truncates toward zero.
    ``prescale_factor`` multiplies each rank's input, ``postscale_factor`` the result.
    """
    return synchronize(allreduce_async(array, op, name, prescale_factor, postscale_factor))


def allreduce_(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
               prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> np.ndarray:
    """In-place :func:`allreduce`; returns ``array``."""
    return synchronize(allreduce_async_(array, op, name, prescale_factor, postscale_factor))


# --- grouped allreduce -----------------------------------------------------------------------

def grouped_allreduce_async(arrays: Sequence[np.ndarray], op: ReduceOp = Average,
                            name: Optional[str] = None, prescale_factor: float = 1.0,
                            postscale_factor: float = 1.0) -> Handle:
    """Starts reducing a list of arrays as one unit (negotiated and fused together)."""
    return _builders.grouped_allreduce(NUMPY, arrays, op, name, prescale_factor,
                                       postscale_factor, in_place=False,
                                       what="grouped_allreduce")


def grouped_allreduce_async_(arrays: Sequence[np.ndarray], op: ReduceOp = Average,
                             name: Optional[str] = None, prescale_factor: float = 1.0,
                             postscale_factor: float = 1.0) -> Handle:
    """In-place :func:`grouped_allreduce_async`."""
    return _builders.grouped_allreduce(NUMPY, arrays, op, name, prescale_factor,
                                       postscale_factor, in_place=True,
                                       what="grouped_allreduce_")


def grouped_allreduce(arrays: Sequence[np.ndarray], op: ReduceOp = Average,
                      name: Optional[str] = None, prescale_factor: float = 1.0,
                      postscale_factor: float = 1.0) -> List[np.ndarray]:
    """Reduces a list of arrays as one unit; returns the list of results."""
    return synchronize(grouped_allreduce_async(arrays, op, name, prescale_factor, postscale_factor))


def grouped_allreduce_(arrays: Sequence[np.ndarray], op: ReduceOp = Average,
                       name: Optional[str] = None, prescale_factor: float = 1.0,
                       postscale_factor: float = 1.0) -> List[np.ndarray]:
    """In-place :func:`grouped_allreduce`."""
    return synchronize(grouped_allreduce_async_(arrays, op, name, prescale_factor, postscale_factor))


# --- broadcast -------------------------------------------------------------------------------

def broadcast_async(array: np.ndarray, root_rank: int, name: Optional[str] = None) -> Handle:
    """Starts broadcasting ``array`` from ``root_rank`` into a new array on every rank."""
    return _builders.broadcast(NUMPY, array, root_rank, name, in_place=False, what="broadcast")


def broadcast_async_(array: np.ndarray, root_rank: int, name: Optional[str] = None) -> Handle:
    """Starts broadcasting ``array`` from ``root_rank`` in place."""
    return _builders.broadcast(NUMPY, array, root_rank, name, in_place=True, what="broadcast_")


def broadcast(array: np.ndarray, root_rank: int, name: Optional[str] = None) -> np.ndarray:
    """Returns ``root_rank``'s ``array`` on every rank (shapes and dtypes must match)."""
    return synchronize(broadcast_async(array, root_rank, name))


def broadcast_(array: np.ndarray, root_rank: int, name: Optional[str] = None) -> np.ndarray:
    """In-place :func:`broadcast`; returns ``array``."""
    return synchronize(broadcast_async_(array, root_rank, name))


# --- allgather -------------------------------------------------------------------------------

def allgather_async(array: np.ndarray, name: Optional[str] = None) -> Handle:
    """Starts concatenating every rank's ``array`` along the first dimension (which may differ
    between ranks; a 0-d array counts as one row)."""
    return _builders.allgather(NUMPY, array, name, what="allgather")


def allgather(array: np.ndarray, name: Optional[str] = None) -> np.ndarray:
    """Every rank's ``array`` concatenated along the first dimension, in rank order."""
    return synchronize(allgather_async(array, name))


# --- alltoall --------------------------------------------------------------------------------

def alltoall_async(array: np.ndarray, splits: Optional[Sequence[int]] = None,
                   name: Optional[str] = None) -> Handle:
    """Starts an alltoall: rows ``[sum(splits[:p]), sum(splits[:p+1]))`` go to rank p. Without
    splits the first dimension is divided evenly. The result is (received array, received
    splits)."""
    return _builders.alltoall(NUMPY, array, splits, name, what="alltoall")


def alltoall(array: np.ndarray, splits: Optional[Sequence[int]] = None,
             name: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Exchanges slices of ``array`` between all ranks; returns (received, received_splits)."""
    return synchronize(alltoall_async(array, splits, name))


# --- reducescatter ---------------------------------------------------------------------------

def reducescatter_async(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
                        prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> Handle:
    """Starts reducing ``array`` across ranks and scattering the result along the first
    dimension: rank r receives rows [start_r, end_r), the first ``rows % size`` ranks one row
    more than the others."""
    return _builders.reducescatter(NUMPY, array, op, name, prescale_factor, postscale_factor,
                                   what="reducescatter")


def reducescatter(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
                  prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> np.ndarray:
    """This rank's rows of the reduction of ``array`` over all ranks."""
    return synchronize(reducescatter_async(array, op, name, prescale_factor, postscale_factor))


# --- barrier and join ------------------------------------------------------------------------

def barrier() -> None:
    """Returns once every rank has called barrier()."""
    _builders.barrier()


def join() -> int:
    """Declares that this rank has no more data. Until every rank has joined, the other ranks'
    allreduces keep working with this rank contributing zeros (Average still divides by the
    full size). Returns the rank that joined last."""
    return _builders.join()


__all__ = [
    "Average", "Sum", "Min", "Max", "Product", "ReduceOp", "allreduce", "allreduce_",
    "allreduce_async", "allreduce_async_", "grouped_allreduce", "grouped_allreduce_",
    "grouped_allreduce_async", "grouped_allreduce_async_", "broadcast", "broadcast_",
    "broadcast_async", "broadcast_async_", "allgather", "allgather_async", "alltoall",
    "alltoall_async", "reducescatter", "reducescatter_async", "barrier", "join",
]
