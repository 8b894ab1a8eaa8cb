"""Autograd-aware collectives: allreduce, grouped_allreduce, allgather, broadcast, alltoall and
reducescatter on torch tensors.

Note [Gradient convention]
Every backward computes the exact gradient of the *sum of all ranks' losses*: on rank r the
input gradient is d(sum_s L_s)/d(x_r), where L_s is rank s's loss and each rank passes the
gradient of its own loss into backward. This is also what DistributedOptimizer needs: it averages
parameter gradients over ranks, which turns the sum into the mean loss that a single process
over the concatenated batch would see. Consequences:

- allreduce(Sum) backward is allreduce(Sum) of the gradients; Average divides by size();
  prescale/postscale multiply the gradient as they multiply the value.
- allreduce(Min/Max) routes the summed gradient to the rank(s) holding the extremum, split
  evenly between ties (as torch.amax does); Product multiplies by the product of the other
  ranks' inputs (exact when inputs are zero). Horovod's backward for these ops allreduces the
  gradient with the same op, which is not a gradient at all; dist_sync fixes that.
- allgather backward sums every rank's gradient of this rank's rows, and broadcast backward
  sums every rank's gradient into the root (zeros elsewhere). Some Horovod versions average
  instead, which is 1/size() of the gradient above; this is torch.distributed.nn's convention.
- For floating Min/Max/Product the forward applies prescale_factor/postscale_factor in torch
  (in the tensor's dtype) around an unscaled reduction, so the backward knows exactly which
  inputs won; for float16/bfloat16 this can differ from the engine's float32 scaling in the last
  bit.

Backward passes are first-order (``once_differentiable``): a double backward raises.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch.autograd.function import once_differentiable

from .. import _core
from .._engine import synchronize
from ..ops import ReduceOp, _check_root
from . import _tensor, ops
from .compression import Compression, Compressor
from .ops import Average, Max, Min, Product, Sum, resolve_op

_EXTREMA = (int(Min), int(Max), int(Product))


def _exact_backward(op: ReduceOp, tensor: torch.Tensor) -> bool:
    """True when the forward must keep its (pre-scaled) inputs and unscaled result: floating
    Min/Max/Product (Note [Gradient convention])."""
    return int(op) in _EXTREMA and tensor.is_floating_point()


def _scaled(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    return tensor if factor == 1.0 else tensor * factor


def _sub_name(name: Optional[str], suffix: str) -> Optional[str]:
    """Names the collectives of a backward pass after the forward's name (cacheable), or leaves
    them unnamed when the forward was."""
    return None if name is None else f"{name}.{suffix}"


def _extremum_grads(op: ReduceOp, inputs: Sequence[torch.Tensor], results: Sequence[torch.Tensor],
                    summed: Sequence[torch.Tensor], scale: float, name: Optional[str]
                    ) -> List[torch.Tensor]:
    """Input gradients for Min/Max/Product given each tensor's pre-scaled input, unscaled
    reduced value (full size) and the sum over ranks of the output gradient."""
    if int(op) in (int(Min), int(Max)):
        masks = [(z == m).to(z.dtype) for z, m in zip(inputs, results)]
        counts = synchronize(ops.grouped_allreduce_async(masks, op=Sum,
                                                         name=_sub_name(name, "ties")))
        return [_scaled(s * mask / count.clamp_min(1), scale)
                for s, mask, count in zip(summed, masks, counts)]
    # Product: d(prod_s z_s)/d z_r = product of the other ranks' z. Count zeros and multiply the
    # non-zeros separately so a zero input still gets the exact product of the others.
    zeros = [(z == 0).to(z.dtype) for z in inputs]
    nonzero = [torch.where(z == 0, torch.ones_like(z), z) for z in inputs]
    zero_handle = ops.grouped_allreduce_async_(zeros, op=Sum, name=_sub_name(name, "zeros"))
    product_handle = ops.grouped_allreduce_async_(nonzero, op=Product,
                                                  name=_sub_name(name, "nonzero"))
    zero_counts = synchronize(zero_handle)
    products = synchronize(product_handle)
    grads = []
    for z, s, count, product in zip(inputs, summed, zero_counts, products):
        mine_zero = z == 0
        safe_z = torch.where(mine_zero, torch.ones_like(z), z)
        others = torch.where(mine_zero,
                             torch.where(count == 1, product, torch.zeros_like(z)),
                             torch.where(count == 0, product / safe_z, torch.zeros_like(z)))
        grads.append(_scaled(s * others, scale))
    return grads


def _reduction_forward(ctx: Any, start: Callable[..., Any], tensor: torch.Tensor, op: ReduceOp,
                       name: Optional[str], pre: float, post: float) -> torch.Tensor:
    """Forward of allreduce/reducescatter. Min, Max and Product keep the (prescaled) input and the
    unscaled result for their exact backward, so the scales are applied here, not in the engine."""
    ctx.op, ctx.name, ctx.pre, ctx.post = op, name, pre, post
    if _exact_backward(op, tensor):
        z = _scaled(tensor.detach(), pre)
        reduced = synchronize(start(z, name=name, op=op))
        ctx.save_for_backward(z, reduced)
        return _scaled(reduced, post) if post != 1.0 else reduced.clone()
    return synchronize(start(tensor, name=name, op=op, prescale_factor=pre, postscale_factor=post))


# --- allreduce -------------------------------------------------------------------------------

class _Allreduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, op: ReduceOp, name: Optional[str], pre: float,
                post: float) -> torch.Tensor:
        return _reduction_forward(ctx, ops.allreduce_async, tensor, op, name, pre, post)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        name = _sub_name(ctx.name, "backward")
        if int(ctx.op) in _EXTREMA:
            z, reduced = ctx.saved_tensors
            summed = synchronize(ops.allreduce_async(grad, name=name, op=Sum))
            result = _extremum_grads(ctx.op, [z], [reduced], [summed], ctx.pre * ctx.post,
                                     ctx.name)[0]
        else:
            result = synchronize(ops.allreduce_async(grad, name=name, op=ctx.op,
                                                     prescale_factor=ctx.pre,
                                                     postscale_factor=ctx.post))
        return result, None, None, None, None


def allreduce(tensor: torch.Tensor, average: Optional[bool] = None, name: Optional[str] = None,
              compression: type[Compressor] = Compression.none, op: Optional[ReduceOp] = None,
              prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> torch.Tensor:
    """Returns the reduction of ``tensor`` over all ranks (bit-identical on every rank).

    ``op``: Average (default), Sum, Min, Max or Product. ``compression`` casts the tensor for
    the wire (see :class:`Compression`). Differentiable: the gradient follows
    Note [Gradient convention] in this module.
    """
    op = resolve_op(op, average)
    ops._scale_args(prescale_factor, postscale_factor)
    compressed, context = compression.compress(tensor)
    reduced = _Allreduce.apply(compressed, op, name, float(prescale_factor),
                               float(postscale_factor))
    return compression.decompress(reduced, context)


# --- grouped allreduce -----------------------------------------------------------------------

def _grouped(tensors: List[torch.Tensor], name: Optional[str], op: ReduceOp, pre: float = 1.0,
             post: float = 1.0) -> List[torch.Tensor]:
    return synchronize(ops.grouped_allreduce_async(tensors, name=name, op=op,
                                                   prescale_factor=pre, postscale_factor=post))


class _GroupedAllreduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, op: ReduceOp, name: Optional[str], pre: float, post: float,
                *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        ctx.op, ctx.name, ctx.pre, ctx.post = op, name, pre, post
        ctx.floating = [t.is_floating_point() for t in tensors]
        if int(op) not in _EXTREMA:
            outputs = _grouped(list(tensors), name, op, pre, post)
            for value, floating in zip(outputs, ctx.floating):
                if not floating:
                    ctx.mark_non_differentiable(value)
            return tuple(outputs)
        # Floating tensors: scaled in torch around an unscaled reduction (so backward can find
        # the winners); integer tensors keep the engine's integer scaling, in a second group
        # only when scaling is actually requested.
        inputs = [_scaled(t.detach(), pre) if f else t.detach()
                  for t, f in zip(tensors, ctx.floating)]
        scaled_ints = (pre != 1.0 or post != 1.0) and not all(ctx.floating)
        if scaled_ints:
            float_index = [i for i, f in enumerate(ctx.floating) if f]
            int_index = [i for i, f in enumerate(ctx.floating) if not f]
            handles = []
            if float_index:
                handles.append(ops.grouped_allreduce_async(
                    [inputs[i] for i in float_index], name=_sub_name(name, "float"), op=op))
            handles.append(ops.grouped_allreduce_async(
                [inputs[i] for i in int_index], name=_sub_name(name, "int"), op=op,
                prescale_factor=pre, postscale_factor=post))
            parts = [synchronize(h) for h in handles]
            reduced: List[Optional[torch.Tensor]] = [None] * len(tensors)
            for index_list, part in zip([float_index, int_index] if float_index else [int_index],
                                        parts):
                for i, value in zip(index_list, part):
                    reduced[i] = value
        else:
            reduced = _grouped(inputs, name, op)
        ctx.save_for_backward(*[v for v, f in zip(inputs, ctx.floating) if f],
                              *[v for v, f in zip(reduced, ctx.floating) if f])
        outputs = []
        for value, floating in zip(reduced, ctx.floating):
            outputs.append(_scaled(value, post) if floating and post != 1.0 else value)
        for value, floating in zip(outputs, ctx.floating):
            if not floating:
                ctx.mark_non_differentiable(value)
        return tuple(outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor) -> Tuple[Any, ...]:
        index = [i for i, f in enumerate(ctx.floating) if f]
        none: List[Any] = [None] * len(grads)
        if not index:
            return (None, None, None, None, *none)
        float_grads = [grads[i] for i in index]
        name = _sub_name(ctx.name, "backward")
        if int(ctx.op) in _EXTREMA:
            saved = ctx.saved_tensors
            inputs, reduced = saved[:len(index)], saved[len(index):]
            summed = _grouped(float_grads, name, Sum)
            results = _extremum_grads(ctx.op, inputs, reduced, summed, ctx.pre * ctx.post,
                                      ctx.name)
        else:
            results = _grouped(float_grads, name, ctx.op, ctx.pre, ctx.post)
        out = none
        for i, value in zip(index, results):
            out[i] = value
        return (None, None, None, None, *out)


def grouped_allreduce(tensors: Sequence[torch.Tensor], average: Optional[bool] = None,
                      name: Optional[str] = None,
                      compression: type[Compressor] = Compression.none,
                      op: Optional[ReduceOp] = None, prescale_factor: float = 1.0,
                      postscale_factor: float = 1.0) -> List[torch.Tensor]:
    """Reduces a list of tensors as one unit (negotiated and fused together); returns the list
    of results. Differentiable like :func:`allreduce`."""
    op = resolve_op(op, average)
    ops._scale_args(prescale_factor, postscale_factor)
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError("grouped_allreduce expects a non-empty list of tensors")
    compressed, contexts = zip(*[compression.compress(t) for t in tensors])
    reduced = _GroupedAllreduce.apply(op, name, float(prescale_factor), float(postscale_factor),
                                      *compressed)
    return [compression.decompress(r, c) for r, c in zip(reduced, contexts)]


# --- allgather -------------------------------------------------------------------------------

class _Allgather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, name: Optional[str]) -> torch.Tensor:
        ctx.shape, ctx.name = tensor.shape, name
        gathered, ctx.counts = synchronize(ops._allgather(tensor, name, with_rows=True))
        return gathered

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        rows = ctx.shape[0] if len(ctx.shape) > 0 else 1
        counts = ctx.counts  # every rank's row count, from the forward's negotiation
        # Rank p holds every rank's gradient of the rows p contributed: send them back with an
        # alltoall (each rank gets size() copies of its own rows) and sum, instead of an
        # allreduce of the whole gathered tensor.
        received, _ = synchronize(ops.alltoall_async(grad, splits=counts,
                                                     name=_sub_name(ctx.name, "backward")))
        summed = received.reshape(len(counts), rows, *grad.shape[1:]).sum(0)
        return summed.reshape(ctx.shape), None


def allgather(tensor: torch.Tensor, name: Optional[str] = None) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along the first dimension, in rank order (first
    dimensions may differ between ranks; a 0-d tensor counts as one row). Differentiable."""
    _tensor.require_tensor(tensor, "allgather")  # forward reads .shape before the op checks
    return _Allgather.apply(tensor, name)


# --- broadcast -------------------------------------------------------------------------------

class _Broadcast(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, root_rank: int,
                name: Optional[str]) -> torch.Tensor:
        ctx.root, ctx.name = root_rank, name
        return synchronize(ops.broadcast_async(tensor, root_rank, name=name))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        summed = synchronize(ops.allreduce_async(grad, name=_sub_name(ctx.name, "backward"),
                                                 op=Sum))
        if _core.rank() != ctx.root:
            summed.zero_()
        return summed, None, None


def broadcast(tensor: torch.Tensor, root_rank: int, name: Optional[str] = None) -> torch.Tensor:
    """``root_rank``'s ``tensor`` on every rank, as a new tensor. Differentiable: the root
    receives the sum of every rank's gradient, other ranks zeros."""
    return _Broadcast.apply(tensor, _check_root(root_rank), name)


# --- alltoall --------------------------------------------------------------------------------

class _Alltoall(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, splits: Any,
                name: Optional[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        ctx.name = name
        output, received = synchronize(ops.alltoall_async(tensor, splits, name=name))
        ctx.received = received.tolist()
        ctx.mark_non_differentiable(received)
        return output, received

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor, _unused: Any) -> Tuple[Any, ...]:
        # Each rank sends the gradient of what it received back to where it came from.
        returned, _ = synchronize(ops.alltoall_async(grad, splits=ctx.received,
                                                     name=_sub_name(ctx.name, "backward")))
        return returned, None, None


def alltoall(tensor: torch.Tensor, splits: Optional[Any] = None, name: Optional[str] = None
             ) -> Any:
    """Exchanges slices of ``tensor`` between ranks: rows ``[sum(splits[:p]), sum(splits[:p+1]))``
    go to rank p (without splits the first dimension is divided evenly).

    Returns the received tensor (rows from rank 0 first) and, when ``splits`` is given, also
    the int32 tensor of rows received from each rank, as Horovod does. Differentiable.
    """
    output, received = _Alltoall.apply(tensor, splits, name)
    return output if splits is None else (output, received)


# --- reducescatter ---------------------------------------------------------------------------

class _Reducescatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, op: ReduceOp, name: Optional[str], pre: float,
                post: float) -> torch.Tensor:
        return _reduction_forward(ctx, ops.reducescatter_async, tensor, op, name, pre, post)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        # Every rank's gradient of its own rows, concatenated: the summed output gradient of
        # the full reduction.
        summed = synchronize(ops.allgather_async(grad, name=_sub_name(ctx.name, "backward")))
        if int(ctx.op) in _EXTREMA:
            z, piece = ctx.saved_tensors
            full = synchronize(ops.allgather_async(piece, name=_sub_name(ctx.name, "result")))
            result = _extremum_grads(ctx.op, [z], [full], [summed], ctx.pre * ctx.post,
                                     ctx.name)[0]
        else:
            scale = ctx.pre * ctx.post / (_core.size() if int(ctx.op) == int(Average) else 1)
            result = _scaled(summed, scale)
        return result, None, None, None, None


def reducescatter(tensor: torch.Tensor, name: Optional[str] = None,
                  compression: type[Compressor] = Compression.none, op: ReduceOp = Average,
                  prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> torch.Tensor:
    """This rank's rows of the reduction of ``tensor`` over all ranks: rank r gets rows
    ``[start_r, end_r)``, the first ``rows % size`` ranks one row more. Differentiable."""
    op = resolve_op(op, None)
    ops._scale_args(prescale_factor, postscale_factor)
    compressed, context = compression.compress(tensor)
    piece = _Reducescatter.apply(compressed, op, name, float(prescale_factor),
                                 float(postscale_factor))
    return compression.decompress(piece, context)


__all__ = ["allreduce", "grouped_allreduce", "allgather", "broadcast", "alltoall",
           "reducescatter"]
