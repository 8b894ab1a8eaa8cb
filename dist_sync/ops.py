"""Collective operations on numpy arrays.

Every operation has a synchronous form and an ``*_async`` form returning a Handle; in-place
forms end in ``_``. The synchronous forms are the async ones followed by :func:`synchronize`.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from . import _dtypes
from ._engine import (ALLGATHER, ALLREDUCE, ALLTOALL, BARRIER, BROADCAST, JOIN, REDUCESCATTER,
                      Handle, check_name, submit, synchronize)


class ReduceOp(int):
    """A reduction: Average, Sum, Min, Max or Product, numbered as the engine's
    (dist_sync._core.ReduceOp, Horovod's numbers)."""

    def __repr__(self) -> str:
        return f"dist_sync.{_core.ReduceOp(int(self)).name.capitalize()}"


Average = ReduceOp(_core.ReduceOp.AVERAGE)
Sum = ReduceOp(_core.ReduceOp.SUM)
Min = ReduceOp(_core.ReduceOp.MIN)
Max = ReduceOp(_core.ReduceOp.MAX)
Product = ReduceOp(_core.ReduceOp.PRODUCT)
_USER_OPS = (Average, Sum, Min, Max, Product)


def engine_op(op: Any) -> "_core.ReduceOp":
    """The engine's reduce op for a user-facing op; ValueError if unknown."""
    if isinstance(op, bool) or not isinstance(op, (int, np.integer)) or int(op) not in _USER_OPS:
        raise ValueError(f"op must be one of dist_sync.Average, Sum, Min, Max, Product; got {op!r}")
    return _core.ReduceOp(int(op))


def _require_array(value: Any, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{what} expects a numpy.ndarray, got {type(value).__name__} "
                        f"(convert with numpy.asarray)")
    return value


def _contiguous_input(array: np.ndarray) -> np.ndarray:
    """Out-of-place ops accept any layout: a non-contiguous or misaligned input is copied."""
    if array.flags.c_contiguous and array.flags.aligned:
        return array
    return np.ascontiguousarray(array)


def _require_inplace(array: np.ndarray, what: str) -> None:
    if not (array.flags.c_contiguous and array.flags.aligned):
        raise ValueError(f"{what} works in place and needs a C-contiguous, aligned array; got "
                         f"strides {array.strides} for shape {array.shape} (use the out-of-place "
                         f"form, or numpy.ascontiguousarray first)")
    if not array.flags.writeable:
        raise ValueError(f"{what} works in place but the array is read-only")


def _spec(name: str, source: np.ndarray, target: Optional[np.ndarray]) -> tuple:
    # The engine reads the arrays' data pointers itself: numpy's ``.ctypes.data`` costs ~1 us,
    # a fifth of a whole submission (Note [Submission cost] in csrc/python/operations.cc).
    return (name, source, target if target is not None else 0, _dtypes.code_of(source.dtype),
            source.shape)


def _from_buffer(raw: Any, dtype: np.dtype) -> np.ndarray:
    buffer, shape = raw[0], raw[1]
    return np.frombuffer(buffer, dtype=np.uint8).view(dtype).reshape(shape)


def _scale_args(prescale_factor: float, postscale_factor: float) -> Tuple[float, float]:
    for label, value in (("prescale_factor", prescale_factor), ("postscale_factor", postscale_factor)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"{label} must be a number, got {type(value).__name__}")
    return float(prescale_factor), float(postscale_factor)


# --- allreduce -------------------------------------------------------------------------------

def allreduce_async(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
                    prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> Handle:
    """Starts reducing ``array`` across ranks into a new array; returns a Handle."""
    array = _contiguous_input(_require_array(array, "allreduce"))
    output = np.empty_like(array)
    return _allreduce(array, output, op, name, prescale_factor, postscale_factor)


def allreduce_async_(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
                     prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> Handle:
    """Starts reducing ``array`` across ranks in place; returns a Handle."""
    _require_array(array, "allreduce_")
    _require_inplace(array, "allreduce_")
    return _allreduce(array, array, op, name, prescale_factor, postscale_factor)


def _allreduce(source: np.ndarray, target: np.ndarray, op: ReduceOp, name: Optional[str],
               prescale_factor: float, postscale_factor: float) -> Handle:
    reduce_op = engine_op(op)
    pre, post = _scale_args(prescale_factor, postscale_factor)
    check_name(name)
    tensor_name = name if name is not None else ""
    return submit(ALLREDUCE, name, [_spec(tensor_name, source, target)], (source, target),
                  lambda raw: target, reduce_op=reduce_op, prescale=pre, postscale=post)


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

def _grouped(arrays: Sequence[np.ndarray], in_place: bool, op: ReduceOp, name: Optional[str],
             prescale_factor: float, postscale_factor: float) -> Handle:
    if not isinstance(arrays, (list, tuple)) or not arrays:
        raise TypeError("grouped_allreduce expects a non-empty list of numpy arrays")
    reduce_op = engine_op(op)
    pre, post = _scale_args(prescale_factor, postscale_factor)
    check_name(name)
    sources, targets, specs = [], [], []
    for index, array in enumerate(arrays):
        _require_array(array, f"grouped_allreduce (item {index})")
        if in_place:
            _require_inplace(array, f"grouped_allreduce_ (item {index})")
            source = target = array
        else:
            source = _contiguous_input(array)
            target = np.empty_like(source)
        sources.append(source)
        targets.append(target)
        specs.append(_spec(f"{name or 'group'}.{index}", source, target))
    return submit(ALLREDUCE, name, specs, (sources, targets), lambda raw: list(targets),
                  reduce_op=reduce_op, prescale=pre, postscale=post)


def grouped_allreduce_async(arrays: Sequence[np.ndarray], op: ReduceOp = Average,
                            name: Optional[str] = None, prescale_factor: float = 1.0,
                            postscale_factor: float = 1.0) -> Handle:
    """Starts reducing a list of arrays as one unit (negotiated and fused together)."""
    return _grouped(arrays, False, op, name, prescale_factor, postscale_factor)


def grouped_allreduce_async_(arrays: Sequence[np.ndarray], op: ReduceOp = Average,
                             name: Optional[str] = None, prescale_factor: float = 1.0,
                             postscale_factor: float = 1.0) -> Handle:
    """In-place :func:`grouped_allreduce_async`."""
    return _grouped(arrays, True, op, name, prescale_factor, postscale_factor)


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

def _check_root(root_rank: Any) -> int:
    if isinstance(root_rank, bool) or not isinstance(root_rank, (int, np.integer)):
        raise TypeError(f"root_rank must be an int, got {type(root_rank).__name__}")
    size = _core.size()
    if not 0 <= int(root_rank) < size:
        raise ValueError(f"root_rank {int(root_rank)} does not exist: ranks are 0..{size - 1}")
    return int(root_rank)


def broadcast_async(array: np.ndarray, root_rank: int, name: Optional[str] = None) -> Handle:
    """Starts broadcasting ``array`` from ``root_rank`` into a new array on every rank."""
    array = _contiguous_input(_require_array(array, "broadcast"))
    root = _check_root(root_rank)
    output = np.empty_like(array)
    return submit(BROADCAST, name, [_spec(name or "", array, output)], (array, output),
                  lambda raw: output, root=root)


def broadcast_async_(array: np.ndarray, root_rank: int, name: Optional[str] = None) -> Handle:
    """Starts broadcasting ``array`` from ``root_rank`` in place."""
    _require_array(array, "broadcast_")
    _require_inplace(array, "broadcast_")
    root = _check_root(root_rank)
    return submit(BROADCAST, name, [_spec(name or "", array, array)], array, lambda raw: array,
                  root=root)


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
    array = _contiguous_input(_require_array(array, "allgather"))
    if array.ndim == 0:
        array = array.reshape(1)
    dtype = array.dtype
    return submit(ALLGATHER, name, [_spec(name or "", array, None)], array,
                  lambda raw: _from_buffer(raw, dtype))


def allgather(array: np.ndarray, name: Optional[str] = None) -> np.ndarray:
    """Every rank's ``array`` concatenated along the first dimension, in rank order."""
    return synchronize(allgather_async(array, name))


# --- alltoall --------------------------------------------------------------------------------

def _check_splits(splits: Any, rows: int, size: int) -> List[int]:
    if splits is None:
        if rows % size != 0:
            raise ValueError(f"alltoall without splits needs the first dimension ({rows}) to be "
                             f"divisible by the number of ranks ({size}); pass splits=")
        return [rows // size] * size
    if isinstance(splits, np.ndarray):
        splits = splits.tolist()
    try:
        items = list(splits)
    except TypeError:
        raise TypeError(f"splits must be a sequence of ints, got {splits!r}") from None
    # int() would truncate 1.5 to 1 and could make wrong splits add up: only integers pass.
    if isinstance(splits, (str, bytes)) or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in items):
        raise TypeError(f"splits must be a sequence of ints, got {splits!r}")
    values = [int(s) for s in items]
    if len(values) != size:
        raise ValueError(f"splits has {len(values)} entries but there are {size} ranks")
    if any(v < 0 for v in values):
        raise ValueError(f"splits must be non-negative, got {values}")
    if sum(values) != rows:
        raise ValueError(f"splits {values} sum to {sum(values)} but the first dimension is {rows}")
    return values


def alltoall_async(array: np.ndarray, splits: Optional[Sequence[int]] = None,
                   name: Optional[str] = None) -> Handle:
    """Starts an alltoall: rows ``[sum(splits[:p]), sum(splits[:p+1]))`` go to rank p. Without
    splits the first dimension is divided evenly. The result is (received array, received
    splits)."""
    array = _contiguous_input(_require_array(array, "alltoall"))
    if array.ndim == 0:
        raise ValueError("alltoall needs an array with at least one dimension")
    values = _check_splits(splits, array.shape[0], _core.size())
    dtype = array.dtype
    return submit(ALLTOALL, name, [_spec(name or "", array, None)], array,
                  lambda raw: (_from_buffer(raw, dtype), np.asarray(raw[2], dtype=np.int64)),
                  splits=values)


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
    array = _contiguous_input(_require_array(array, "reducescatter"))
    if array.ndim == 0:
        raise ValueError("reducescatter needs an array with at least one dimension")
    reduce_op = engine_op(op)
    pre, post = _scale_args(prescale_factor, postscale_factor)
    dtype = array.dtype
    return submit(REDUCESCATTER, name, [_spec(name or "", array, None)], array,
                  lambda raw: _from_buffer(raw, dtype), reduce_op=reduce_op, prescale=pre,
                  postscale=post)


def reducescatter(array: np.ndarray, op: ReduceOp = Average, name: Optional[str] = None,
                  prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> np.ndarray:
    """This rank's rows of the reduction of ``array`` over all ranks."""
    return synchronize(reducescatter_async(array, op, name, prescale_factor, postscale_factor))


# --- barrier and join ------------------------------------------------------------------------

def barrier() -> None:
    """Returns once every rank has called barrier()."""
    synchronize(submit(BARRIER, None, [], None, lambda raw: None))


def join() -> int:
    """Declares that this rank has no more data. Until every rank has joined, the other ranks'
    allreduces keep working with this rank contributing zeros (Average still divides by the
    full size). Returns the rank that joined last."""
    return synchronize(submit(JOIN, "join", [], None, lambda raw: int(raw[3])))
