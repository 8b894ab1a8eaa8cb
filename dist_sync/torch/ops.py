"""Collective operations on torch tensors, without autograd.

These are the building blocks: ``*_async`` forms return a :class:`dist_sync.Handle` whose
:func:`synchronize` gives the result tensor; in-place forms end in ``_``. The synchronous,
autograd-aware ``allreduce``/``allgather``/``broadcast``/``alltoall``/``reducescatter`` live in
:mod:`dist_sync.torch.functions`. Signatures follow ``horovod.torch`` (without ``process_set``).

Out-of-place operations accept any tensor layout (a non-contiguous input is copied once); in-place
ones need a contiguous tensor and say so otherwise. Tensors stay alive until their handle is
synchronized (the engine never owns user memory).
"""
from __future__ import annotations

import warnings
from typing import Any, List, Optional, Sequence, Tuple

import torch

from .. import _core
from .._engine import (ALLGATHER, ALLREDUCE, ALLTOALL, BARRIER, BROADCAST, JOIN, REDUCESCATTER,
                       Handle, check_name, submit, synchronize)
from ..ops import (Average, Max, Min, Product, ReduceOp, Sum, _check_root, _check_splits,
                   _scale_args, engine_op)
from . import _tensor


class _AdasumOp:
    """Horovod's Adasum reduction, which dist_sync does not implement. It exists so scripts that
    merely mention ``hvd.Adasum`` import; passing it to an operation raises
    NotImplementedError."""

    def __repr__(self) -> str:
        return "dist_sync.torch.Adasum"


Adasum = _AdasumOp()


def resolve_op(op: Any, average: Optional[bool]) -> ReduceOp:
    """The reduction for Horovod's (op, deprecated average) pair; ``op=None`` means Average."""
    if op is Adasum:
        raise NotImplementedError("Adasum is not implemented in dist_sync; use op=Average (the "
                                  "default) or Sum")
    if op is not None and average is not None:
        raise ValueError("The op parameter supersedes average; please provide only one of them")
    if average is not None:
        warnings.warn("The average parameter is deprecated; use op=Average or op=Sum",
                      DeprecationWarning, stacklevel=3)
        return Average if average else Sum
    if op is None:
        return Average
    engine_op(op)  # validates
    return ReduceOp(int(op))


def _finish_inplace(tensors: Sequence[torch.Tensor]):
    def finish(raw: Any):
        for tensor in tensors:
            _tensor.mark_written(tensor)
        return tensors[0] if len(tensors) == 1 else list(tensors)
    return finish


# --- allreduce -------------------------------------------------------------------------------

def _allreduce(source: torch.Tensor, target: torch.Tensor, op: ReduceOp, name: Optional[str],
               prescale_factor: float, postscale_factor: float, finish) -> Handle:
    reduce_op = engine_op(op)
    pre, post = _scale_args(prescale_factor, postscale_factor)
    check_name(name)
    return _tensor.submit(ALLREDUCE, name, "allreduce", [_tensor.Entry(name or "", source, target)],
                          (source, target), finish, reduce_op=reduce_op,
                          prescale=pre, postscale=post)


def allreduce_async(tensor: torch.Tensor, average: Optional[bool] = None,
                    name: Optional[str] = None, op: Optional[ReduceOp] = None,
                    prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> Handle:
    """Starts reducing ``tensor`` over all ranks into a new tensor; returns a Handle whose
    :func:`synchronize` gives the result. ``tensor`` is not modified.

    ``op`` is Average (default), Sum, Min, Max or Product; integer Average truncates toward zero.
    ``prescale_factor`` multiplies each rank's input, ``postscale_factor`` the result. Ops with the
    same ``name`` must have the same dtype and shape on every rank; unnamed ops are matched by
    the order of unnamed calls.
    """
    op = resolve_op(op, average)
    source = _tensor.contiguous_input(_tensor.require_tensor(tensor, "allreduce"), "allreduce")
    target = _tensor.new_output(source)
    return _allreduce(source, target, op, name, prescale_factor, postscale_factor,
                      lambda raw: target)


def allreduce_async_(tensor: torch.Tensor, average: Optional[bool] = None,
                     name: Optional[str] = None, op: Optional[ReduceOp] = None,
                     prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> Handle:
    """Starts reducing ``tensor`` over all ranks in place (``tensor`` must be contiguous)."""
    op = resolve_op(op, average)
    _tensor.require_tensor(tensor, "allreduce_")
    _tensor.require_inplace(tensor, "allreduce_")
    data = tensor.detach()
    return _allreduce(data, data, op, name, prescale_factor, postscale_factor,
                      _finish_inplace([tensor]))


def allreduce_(tensor: torch.Tensor, average: Optional[bool] = None, name: Optional[str] = None,
               op: Optional[ReduceOp] = None, prescale_factor: float = 1.0,
               postscale_factor: float = 1.0) -> torch.Tensor:
    """In-place allreduce; returns ``tensor`` (not tracked by autograd, like Horovod's)."""
    return synchronize(allreduce_async_(tensor, average, name, op, prescale_factor,
                                        postscale_factor))


# --- grouped allreduce -----------------------------------------------------------------------

def _grouped(tensors: Sequence[torch.Tensor], in_place: bool, op: ReduceOp, name: Optional[str],
             prescale_factor: float, postscale_factor: float) -> Handle:
    what = "grouped_allreduce_" if in_place else "grouped_allreduce"
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError(f"{what} expects a non-empty list of tensors")
    reduce_op = engine_op(op)
    pre, post = _scale_args(prescale_factor, postscale_factor)
    check_name(name)
    sources: List[torch.Tensor] = []
    targets: List[torch.Tensor] = []
    entries = []
    for index, tensor in enumerate(tensors):
        item = f"{what} (item {index})"
        _tensor.require_tensor(tensor, item)
        if in_place:
            _tensor.require_inplace(tensor, item)
            source = target = tensor.detach()
        else:
            source = _tensor.contiguous_input(tensor, item)
            target = _tensor.new_output(source)
        sources.append(source)
        targets.append(target)
        entries.append(_tensor.Entry(f"{name or 'group'}.{index}", source, target))
    if in_place:
        originals = list(tensors)

        def finish(raw: Any) -> List[torch.Tensor]:
            for tensor in originals:
                _tensor.mark_written(tensor)
            return originals
    else:
        def finish(raw: Any) -> List[torch.Tensor]:
            return list(targets)
    return _tensor.submit(ALLREDUCE, name, what, entries, (sources, targets), finish,
                          reduce_op=reduce_op, prescale=pre, postscale=post)


def grouped_allreduce_async(tensors: Sequence[torch.Tensor], average: Optional[bool] = None,
                            name: Optional[str] = None, op: Optional[ReduceOp] = None,
                            prescale_factor: float = 1.0,
                            postscale_factor: float = 1.0) -> Handle:
    """Starts reducing a list of tensors as one unit (negotiated and fused together); the
    handle's result is the list of reduced tensors."""
    return _grouped(tensors, False, resolve_op(op, average), name, prescale_factor,
                    postscale_factor)


def grouped_allreduce_async_(tensors: Sequence[torch.Tensor], average: Optional[bool] = None,
                             name: Optional[str] = None, op: Optional[ReduceOp] = None,
                             prescale_factor: float = 1.0,
                             postscale_factor: float = 1.0) -> Handle:
    """In-place :func:`grouped_allreduce_async` (every tensor must be contiguous)."""
    return _grouped(tensors, True, resolve_op(op, average), name, prescale_factor,
                    postscale_factor)


def grouped_allreduce_(tensors: Sequence[torch.Tensor], average: Optional[bool] = None,
                       name: Optional[str] = None, op: Optional[ReduceOp] = None,
                       prescale_factor: float = 1.0,
                       postscale_factor: float = 1.0) -> List[torch.Tensor]:
    """In-place grouped allreduce; returns the list of (now reduced) tensors."""
    return synchronize(grouped_allreduce_async_(tensors, average, name, op, prescale_factor,
                                                postscale_factor))


# --- broadcast -------------------------------------------------------------------------------

def broadcast_async(tensor: torch.Tensor, root_rank: int, name: Optional[str] = None) -> Handle:
    """Starts broadcasting ``root_rank``'s ``tensor`` into a new tensor on every rank."""
    source = _tensor.contiguous_input(_tensor.require_tensor(tensor, "broadcast"), "broadcast")
    root = _check_root(root_rank)
    target = _tensor.new_output(source)
    entry = _tensor.Entry(name or "", source, target, copy_in=_core.rank() == root)
    return _tensor.submit(BROADCAST, name, "broadcast", [entry], (source, target),
                          lambda raw: target, root=root)


def broadcast_async_(tensor: torch.Tensor, root_rank: int, name: Optional[str] = None) -> Handle:
    """Starts broadcasting ``root_rank``'s ``tensor`` in place (``tensor`` must be contiguous)."""
    _tensor.require_tensor(tensor, "broadcast_")
    _tensor.require_inplace(tensor, "broadcast_")
    root = _check_root(root_rank)
    data = tensor.detach()
    entry = _tensor.Entry(name or "", data, data, copy_in=_core.rank() == root)
    return _tensor.submit(BROADCAST, name, "broadcast_", [entry], data,
                          _finish_inplace([tensor]), root=root)


def broadcast_(tensor: torch.Tensor, root_rank: int, name: Optional[str] = None) -> torch.Tensor:
    """In-place broadcast; returns ``tensor``."""
    return synchronize(broadcast_async_(tensor, root_rank, name))


# --- allgather -------------------------------------------------------------------------------

def allgather_async(tensor: torch.Tensor, name: Optional[str] = None) -> Handle:
    """Starts concatenating every rank's ``tensor`` along the first dimension (which may differ
    between ranks; a 0-d tensor counts as one row)."""
    return _allgather(tensor, name, with_rows=False)


def _allgather(tensor: torch.Tensor, name: Optional[str], with_rows: bool) -> Handle:
    """allgather_async; with ``with_rows`` the result is (gathered, rows from each rank), the
    row counts negotiation found anyway (allgather's backward needs them)."""
    source = _tensor.contiguous_input(_tensor.require_tensor(tensor, "allgather"), "allgather")
    if source.dim() == 0:
        source = source.reshape(1)
    dtype = source.dtype

    def finish(raw: Any) -> Any:
        gathered = _tensor.from_buffer(raw, dtype, source)
        return (gathered, [int(rows) for rows in raw[2]]) if with_rows else gathered
    return _tensor.submit(ALLGATHER, name, "allgather", [_tensor.Entry(name or "", source)],
                          source, finish)


# --- alltoall --------------------------------------------------------------------------------

def _splits_list(splits: Any) -> Any:
    if isinstance(splits, torch.Tensor):
        if splits.is_floating_point():
            raise TypeError(f"splits must hold integers, got a {splits.dtype} tensor")
        return splits.tolist()
    return splits


def alltoall_async(tensor: torch.Tensor, splits: Optional[Any] = None,
                   name: Optional[str] = None) -> Handle:
    """Starts an alltoall: rows ``[sum(splits[:p]), sum(splits[:p+1]))`` of ``tensor`` go to
    rank p; without splits the first dimension is divided evenly. The handle's result is
    ``(received tensor, received splits as an int32 tensor)``."""
    source = _tensor.contiguous_input(_tensor.require_tensor(tensor, "alltoall"), "alltoall")
    if source.dim() == 0:
        raise ValueError("alltoall needs a tensor with at least one dimension")
    values = _check_splits(_splits_list(splits), source.shape[0], _core.size())
    dtype = source.dtype

    def finish(raw: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        return (_tensor.from_buffer(raw, dtype, source),
                torch.tensor(list(raw[2]), dtype=torch.int32))
    return _tensor.submit(ALLTOALL, name, "alltoall", [_tensor.Entry(name or "", source)],
                          source, finish, splits=values)


# --- reducescatter ---------------------------------------------------------------------------

def reducescatter_async(tensor: torch.Tensor, name: Optional[str] = None,
                        op: ReduceOp = Average, prescale_factor: float = 1.0,
                        postscale_factor: float = 1.0) -> Handle:
    """Starts reducing ``tensor`` over all ranks and scattering the result along the first
    dimension: rank r receives rows ``[start_r, end_r)``, the first ``rows % size`` ranks one row
    more than the others (Horovod's split)."""
    op = resolve_op(op, None)
    source = _tensor.contiguous_input(_tensor.require_tensor(tensor, "reducescatter"),
                                      "reducescatter")
    if source.dim() == 0:
        raise ValueError("reducescatter needs a tensor with at least one dimension")
    reduce_op = engine_op(op)
    pre, post = _scale_args(prescale_factor, postscale_factor)
    dtype = source.dtype
    return _tensor.submit(REDUCESCATTER, name, "reducescatter",
                          [_tensor.Entry(name or "", source)], source,
                          lambda raw: _tensor.from_buffer(raw, dtype, source),
                          reduce_op=reduce_op, prescale=pre, postscale=post)


def reducescatter_rows(rows: int, size: int) -> List[int]:
    """Rows each rank receives from reducescatter of a tensor with ``rows`` rows."""
    return [rows // size + (1 if r < rows % size else 0) for r in range(size)]


# --- barrier and join ------------------------------------------------------------------------

def barrier() -> None:
    """Returns once every rank has called barrier()."""
    synchronize(submit(BARRIER, None, [], None, lambda raw: None))


def join(device: int = -1) -> int:
    """Declares that this rank has no more data and waits until every rank has joined.

    Until then, the other ranks' allreduces keep working with this rank contributing zeros
    (Average still divides by the full size), so ranks with uneven amounts of data can finish
    their loops. Returns the rank that joined last. ``device`` exists for Horovod compatibility;
    only -1 (CPU) is meaningful today.
    """
    if isinstance(device, bool) or not isinstance(device, int):
        raise TypeError(f"device must be an int, got {type(device).__name__}")
    return synchronize(submit(JOIN, "join", [], None, lambda raw: int(raw[3])))


__all__ = [
    "Adasum", "Average", "Sum", "Min", "Max", "Product", "ReduceOp", "allreduce_async",
    "allreduce_async_", "allreduce_", "grouped_allreduce_async", "grouped_allreduce_async_",
    "grouped_allreduce_", "broadcast_async", "broadcast_async_", "broadcast_", "allgather_async",
    "alltoall_async", "reducescatter_async", "barrier", "join", "resolve_op",
]
