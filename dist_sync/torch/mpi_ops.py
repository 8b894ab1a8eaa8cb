"""Collective operations on torch tensors, with ``horovod.torch``'s names and signatures.

``*_async`` forms return a :class:`dist_sync.Handle` whose :func:`synchronize` gives the result
tensor; in-place forms end in ``_`` and are not tracked by autograd (as in Horovod). The
synchronous ``allreduce``/``grouped_allreduce``/``allgather``/``broadcast``/``alltoall``/
``reducescatter`` are autograd-aware: their gradients follow Note [Gradient convention] in
_autograd.py. Out-of-place operations accept any tensor layout (a non-contiguous input is copied
once); in-place ones need a contiguous tensor and say so otherwise. Tensors stay alive until
their operation completes (the engine never owns user memory). Every operation takes
``process_set=`` (default: all ranks; see dist_sync/_process_sets.py).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch

from .. import _builders
from .._reduce_op import Adasum, Average, Max, Min, Product, ReduceOp, Sum, resolve_op
from .._process_sets import ProcessSet, global_process_set, resolve
from .._session import Handle, synchronize
from .._validation import check_root, scale_args
from ._adapter import TORCH
from ._autograd import (_Allgather, _Allreduce, _Alltoall, _Broadcast, _GroupedAllgather,
                        _GroupedAllreduce, _GroupedReducescatter, _Reducescatter)
from .compression import Compression, Compressor


# --- allreduce -------------------------------------------------------------------------------

def allreduce_async(tensor: torch.Tensor, average: Optional[bool] = None,
                    name: Optional[str] = None, op: Optional[ReduceOp] = None,
                    prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                    process_set: ProcessSet = global_process_set) -> Handle:
    """Starts reducing ``tensor`` over all ranks into a new tensor; returns a Handle whose
    :func:`synchronize` gives the result. ``tensor`` is not modified.

    ``op`` is Average (default), Sum, Min, Max or Product; integer Average truncates toward zero.
    ``prescale_factor`` multiplies each rank's input, ``postscale_factor`` the result. Ops with the
    same ``name`` must have the same dtype and shape on every rank; unnamed ops are matched by
    the order of unnamed calls.
    """
    return _builders.allreduce(TORCH, tensor, resolve_op(op, average), name, prescale_factor,
                               postscale_factor, in_place=False, what="allreduce",
                               process_set=process_set)


def allreduce_async_(tensor: torch.Tensor, average: Optional[bool] = None,
                     name: Optional[str] = None, op: Optional[ReduceOp] = None,
                     prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                     process_set: ProcessSet = global_process_set) -> Handle:
    """Starts reducing ``tensor`` over all ranks in place (``tensor`` must be contiguous)."""
    return _builders.allreduce(TORCH, tensor, resolve_op(op, average), name, prescale_factor,
                               postscale_factor, in_place=True, what="allreduce_",
                               process_set=process_set)


def allreduce_(tensor: torch.Tensor, average: Optional[bool] = None, name: Optional[str] = None,
               op: Optional[ReduceOp] = None, prescale_factor: float = 1.0,
               postscale_factor: float = 1.0,
               process_set: ProcessSet = global_process_set) -> torch.Tensor:
    """In-place allreduce; returns ``tensor`` (not tracked by autograd, like Horovod's)."""
    return synchronize(allreduce_async_(tensor, average, name, op, prescale_factor,
                                        postscale_factor, process_set=process_set))


def allreduce(tensor: torch.Tensor, average: Optional[bool] = None, name: Optional[str] = None,
              compression: type[Compressor] = Compression.none, op: Optional[ReduceOp] = None,
              prescale_factor: float = 1.0, postscale_factor: float = 1.0,
              process_set: ProcessSet = global_process_set) -> torch.Tensor:
    """Returns the reduction of ``tensor`` over all ranks (bit-identical on every rank).

    ``op``: Average (default), Sum, Min, Max or Product. ``compression`` casts the tensor for
    the wire (see :class:`Compression`). Differentiable (Note [Gradient convention]).
    """
    op = resolve_op(op, average)
    scale_args(prescale_factor, postscale_factor)
    compressed, context = compression.compress(tensor)
    reduced = _Allreduce.apply(compressed, op, name, float(prescale_factor),
                               float(postscale_factor), process_set)
    return compression.decompress(reduced, context)


# --- grouped allreduce -----------------------------------------------------------------------

def grouped_allreduce_async(tensors: Sequence[torch.Tensor], average: Optional[bool] = None,
                            name: Optional[str] = None, op: Optional[ReduceOp] = None,
                            prescale_factor: float = 1.0,
                            postscale_factor: float = 1.0,
                            process_set: ProcessSet = global_process_set) -> Handle:
    """Starts reducing a list of tensors as one unit (negotiated and fused together); the
    handle's result is the list of reduced tensors."""
    return _builders.grouped_allreduce(TORCH, tensors, resolve_op(op, average), name,
                                       prescale_factor, postscale_factor, in_place=False,
                                       what="grouped_allreduce", process_set=process_set)


def grouped_allreduce_async_(tensors: Sequence[torch.Tensor], average: Optional[bool] = None,
                             name: Optional[str] = None, op: Optional[ReduceOp] = None,
                             prescale_factor: float = 1.0,
                             postscale_factor: float = 1.0,
                             process_set: ProcessSet = global_process_set) -> Handle:
    """In-place :func:`grouped_allreduce_async` (every tensor must be contiguous)."""
    return _builders.grouped_allreduce(TORCH, tensors, resolve_op(op, average), name,
                                       prescale_factor, postscale_factor, in_place=True,
                                       what="grouped_allreduce_", process_set=process_set)


def grouped_allreduce_(tensors: Sequence[torch.Tensor], average: Optional[bool] = None,
                       name: Optional[str] = None, op: Optional[ReduceOp] = None,
                       prescale_factor: float = 1.0,
                       postscale_factor: float = 1.0,
                       process_set: ProcessSet = global_process_set) -> List[torch.Tensor]:
    """In-place grouped allreduce; returns the list of (now reduced) tensors."""
    return synchronize(grouped_allreduce_async_(tensors, average, name, op, prescale_factor,
                                                postscale_factor, process_set=process_set))


def grouped_allreduce(tensors: Sequence[torch.Tensor], average: Optional[bool] = None,
                      name: Optional[str] = None,
                      compression: type[Compressor] = Compression.none,
                      op: Optional[ReduceOp] = None, prescale_factor: float = 1.0,
                      postscale_factor: float = 1.0,
                      process_set: ProcessSet = global_process_set) -> List[torch.Tensor]:
    """Reduces a list of tensors as one unit (negotiated and fused together); returns the list
    of results. Differentiable like :func:`allreduce`."""
    op = resolve_op(op, average)
    scale_args(prescale_factor, postscale_factor)
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError("grouped_allreduce expects a non-empty list of tensors")
    compressed, contexts = zip(*[compression.compress(t) for t in tensors])
    reduced = _GroupedAllreduce.apply(op, name, float(prescale_factor), float(postscale_factor),
                                      process_set, *compressed)
    return [compression.decompress(r, c) for r, c in zip(reduced, contexts)]


# --- broadcast -------------------------------------------------------------------------------

def broadcast_async(tensor: torch.Tensor, root_rank: int, name: Optional[str] = None,
                    process_set: ProcessSet = global_process_set) -> Handle:
    """Starts broadcasting ``root_rank``'s ``tensor`` into a new tensor on every rank."""
    return _builders.broadcast(TORCH, tensor, root_rank, name, in_place=False, what="broadcast",
                               process_set=process_set)


def broadcast_async_(tensor: torch.Tensor, root_rank: int, name: Optional[str] = None,
                     process_set: ProcessSet = global_process_set) -> Handle:
    """Starts broadcasting ``root_rank``'s ``tensor`` in place (``tensor`` must be contiguous)."""
    return _builders.broadcast(TORCH, tensor, root_rank, name, in_place=True, what="broadcast_",
                               process_set=process_set)


def broadcast_(tensor: torch.Tensor, root_rank: int, name: Optional[str] = None,
               process_set: ProcessSet = global_process_set) -> torch.Tensor:
    """In-place broadcast; returns ``tensor``."""
    return synchronize(broadcast_async_(tensor, root_rank, name, process_set=process_set))


def broadcast(tensor: torch.Tensor, root_rank: int, name: Optional[str] = None,
              process_set: ProcessSet = global_process_set) -> torch.Tensor:
    """``root_rank``'s ``tensor`` on every rank, as a new tensor. Differentiable: the root
    receives the sum of every rank's gradient, other ranks zeros."""
    return _Broadcast.apply(tensor, check_root(root_rank), name, process_set)


# --- allgather -------------------------------------------------------------------------------

def allgather_async(tensor: torch.Tensor, name: Optional[str] = None,
                    process_set: ProcessSet = global_process_set) -> Handle:
    """Starts concatenating every rank's ``tensor`` along the first dimension (which may differ
    between ranks; a 0-d tensor counts as one row)."""
    return _builders.allgather(TORCH, tensor, name, what="allgather", process_set=process_set)


def allgather(tensor: torch.Tensor, name: Optional[str] = None,
              process_set: ProcessSet = global_process_set) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along the first dimension, in rank order (first
    dimensions may differ between ranks; a 0-d tensor counts as one row). Differentiable."""
    TORCH.check(tensor, "allgather")  # forward reads .shape before the op checks
    return _Allgather.apply(tensor, name, process_set)


# --- alltoall --------------------------------------------------------------------------------

def alltoall_async(tensor: torch.Tensor, splits: Optional[Any] = None,
                   name: Optional[str] = None,
                   process_set: ProcessSet = global_process_set) -> Handle:
    """Starts an alltoall: rows ``[sum(splits[:p]), sum(splits[:p+1]))`` of ``tensor`` go to
    rank p; without splits the first dimension is divided evenly. The handle's result is
    ``(received tensor, received splits as an int32 tensor)``."""
    return _builders.alltoall(TORCH, tensor, splits, name, what="alltoall", process_set=process_set)


def alltoall(tensor: torch.Tensor, splits: Optional[Any] = None, name: Optional[str] = None,
             process_set: ProcessSet = global_process_set) -> Any:
    """Exchanges slices of ``tensor`` between ranks: rows ``[sum(splits[:p]), sum(splits[:p+1]))``
    go to rank p (without splits the first dimension is divided evenly).

    Returns the received tensor (rows from rank 0 first) and, when ``splits`` is given, also
    the int32 tensor of rows received from each rank, as Horovod does. Differentiable.
    """
    output, received = _Alltoall.apply(tensor, splits, name, process_set)
    return output if splits is None else (output, received)


# --- reducescatter ---------------------------------------------------------------------------

def reducescatter_async(tensor: torch.Tensor, name: Optional[str] = None,
                        op: ReduceOp = Average, prescale_factor: float = 1.0,
                        postscale_factor: float = 1.0,
                        process_set: ProcessSet = global_process_set) -> Handle:
    """Starts reducing ``tensor`` over all ranks and scattering the result along the first
    dimension: rank r receives rows ``[start_r, end_r)``, the first ``rows % size`` ranks one row
    more than the others (Horovod's split)."""
    return _builders.reducescatter(TORCH, tensor, resolve_op(op, None), name, prescale_factor,
                                   postscale_factor, what="reducescatter", process_set=process_set)


def reducescatter(tensor: torch.Tensor, name: Optional[str] = None,
                  compression: type[Compressor] = Compression.none, op: ReduceOp = Average,
                  prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                  process_set: ProcessSet = global_process_set) -> torch.Tensor:
    """This rank's rows of the reduction of ``tensor`` over all ranks: rank r gets rows
    ``[start_r, end_r)``, the first ``rows % size`` ranks one row more. Differentiable."""
    op = resolve_op(op, None)
    scale_args(prescale_factor, postscale_factor)
    compressed, context = compression.compress(tensor)
    piece = _Reducescatter.apply(compressed, op, name, float(prescale_factor),
                                 float(postscale_factor), process_set)
    return compression.decompress(piece, context)


# --- grouped allgather and reducescatter --------------------------------------------------------

def grouped_allgather_async(tensors: Sequence[torch.Tensor], name: Optional[str] = None,
                            process_set: ProcessSet = global_process_set) -> Handle:
    """Starts an allgather of each tensor, negotiated as one unit; the handle's result is the
    list of gathered tensors."""
    return _builders.grouped_allgather(TORCH, tensors, name, what="grouped_allgather",
                                       process_set=process_set)


def grouped_allgather(tensors: Sequence[torch.Tensor], name: Optional[str] = None,
                      process_set: ProcessSet = global_process_set) -> List[torch.Tensor]:
    """:func:`allgather` of each tensor, negotiated as one unit; returns the list of results.
    Differentiable like :func:`allgather`."""
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError("grouped_allgather expects a non-empty list of tensors")
    for i, tensor in enumerate(tensors):
        TORCH.check(tensor, f"grouped_allgather (item {i})")
    return list(_GroupedAllgather.apply(name, process_set, *tensors))


def grouped_reducescatter_async(tensors: Sequence[torch.Tensor], name: Optional[str] = None,
                                op: ReduceOp = Average, prescale_factor: float = 1.0,
                                postscale_factor: float = 1.0,
                                process_set: ProcessSet = global_process_set) -> Handle:
    """Starts a reducescatter of each tensor, negotiated as one unit; the handle's result is the
    list of this rank's pieces."""
    return _builders.grouped_reducescatter(TORCH, tensors, resolve_op(op, None), name,
                                           prescale_factor, postscale_factor,
                                           what="grouped_reducescatter", process_set=process_set)


def grouped_reducescatter(tensors: Sequence[torch.Tensor], name: Optional[str] = None,
                          compression: type[Compressor] = Compression.none,
                          op: ReduceOp = Average, prescale_factor: float = 1.0,
                          postscale_factor: float = 1.0,
                          process_set: ProcessSet = global_process_set) -> List[torch.Tensor]:
    """:func:`reducescatter` of each tensor, negotiated as one unit; returns this rank's pieces.
    Differentiable like :func:`reducescatter` (Min, Max and Product run one reducescatter per
    tensor, whose backward needs each tensor's winners)."""
    op = resolve_op(op, None)
    scale_args(prescale_factor, postscale_factor)
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError("grouped_reducescatter expects a non-empty list of tensors")
    if int(op) in (int(Min), int(Max), int(Product)):
        return [reducescatter(t, None if name is None else f"{name}.{i}", compression, op,
                              prescale_factor, postscale_factor, process_set)
                for i, t in enumerate(tensors)]
    compressed, contexts = zip(*[compression.compress(t) for t in tensors])
    pieces = _GroupedReducescatter.apply(op, name, float(prescale_factor),
                                         float(postscale_factor), process_set, *compressed)
    return [compression.decompress(p, c) for p, c in zip(pieces, contexts)]


# --- sparse allreduce ------------------------------------------------------------------------

def sparse_allreduce_async(tensor: torch.Tensor, name: str, op: ReduceOp,
                           process_set: ProcessSet = global_process_set) -> Any:
    """Horovod's sparse allreduce: allgathers the indices and values of a sparse COO
    ``tensor`` (Sum or Average; the same dense shape on every rank) and returns a function
    that waits for both and returns the reduced sparse tensor (duplicate indices are not
    summed until it is coalesced), as Horovod's does."""
    if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.sparse_coo:
        got = tensor.layout if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise TypeError(f"sparse_allreduce_async expects a sparse COO tensor, got {got}")
    op = resolve_op(op, None)
    if int(op) not in (int(Average), int(Sum)):
        raise ValueError(f"sparse_allreduce_async supports Average and Sum, got {op!r}")
    indices_handle = allgather_async(tensor._indices().t().contiguous(), name=f"{name}.indices",
                                     process_set=process_set)
    values_handle = allgather_async(tensor._values().contiguous(), name=f"{name}.values",
                                    process_set=process_set)
    members = resolve(process_set, "sparse_allreduce_async").size
    shape = tensor.shape

    def handle() -> torch.Tensor:
        values = synchronize(values_handle)
        indices = synchronize(indices_handle)
        if int(op) == int(Average):
            values = values / members
        return torch.sparse_coo_tensor(indices.t(), values, shape, check_invariants=False)
    return handle


# --- barrier and join ------------------------------------------------------------------------

def barrier(process_set: ProcessSet = global_process_set) -> None:
    """Returns once every rank has called barrier()."""
    _builders.barrier(process_set)


def join(device: int = -1) -> int:
    """Declares that this rank has no more data and waits until every rank has joined.

    Until then, the other ranks' allreduces keep working with this rank contributing zeros
    (Average still divides by the full size), so ranks with uneven amounts of data can finish
    their loops. Returns the rank that joined last. ``device`` exists for Horovod compatibility;
    only -1 (CPU) is meaningful today.
    """
    if isinstance(device, bool) or not isinstance(device, int):
        raise TypeError(f"device must be an int, got {type(device).__name__}")
    return _builders.join()


__all__ = [
    "Adasum", "Average", "Sum", "Min", "Max", "Product", "ReduceOp", "allreduce",
    "allreduce_async", "allreduce_async_", "allreduce_", "grouped_allreduce",
    "grouped_allreduce_async", "grouped_allreduce_async_", "grouped_allreduce_", "broadcast",
    "broadcast_async", "broadcast_async_", "broadcast_", "allgather", "allgather_async",
    "alltoall", "alltoall_async", "reducescatter", "reducescatter_async", "barrier", "join",
    "resolve_op", "grouped_allgather", "grouped_allgather_async", "grouped_reducescatter",
    "grouped_reducescatter_async", "sparse_allreduce_async",
]
