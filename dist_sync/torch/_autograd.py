"""The autograd Functions behind dist_sync.torch's synchronous collectives (allreduce,
grouped_allreduce, allgather, broadcast, alltoall, reducescatter in mpi_ops.py).

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

from .. import _builders, _core
from .._reduce_op import Adasum, Average, Max, Min, Product, ReduceOp, Sum
from .._process_sets import resolve
from .._session import Handle, synchronize
from ._adapter import TORCH

_EXTREMA = (int(Min), int(Max), int(Product))


def _allreduce(tensor: torch.Tensor, name: Optional[str], op: ReduceOp, pre: float = 1.0,
               post: float = 1.0, *, ps: Any = None) -> Handle:
    return _builders.allreduce(TORCH, tensor, op, name, pre, post, in_place=False,
                               what="allreduce", process_set=ps)


def _grouped_async(tensors: List[torch.Tensor], name: Optional[str], op: ReduceOp,
                   pre: float = 1.0, post: float = 1.0, in_place: bool = False, *,
                   ps: Any = None) -> Handle:
    return _builders.grouped_allreduce(TORCH, tensors, op, name, pre, post, in_place=in_place,
                                       what="grouped_allreduce_" if in_place else
                                       "grouped_allreduce", process_set=ps)


def _allgather(tensor: torch.Tensor, name: Optional[str], *, ps: Any = None) -> Handle:
    return _builders.allgather(TORCH, tensor, name, what="allgather", process_set=ps)


def _alltoall(tensor: torch.Tensor, splits: Any, name: Optional[str], *, ps: Any = None) -> Handle:
    return _builders.alltoall(TORCH, tensor, splits, name, what="alltoall", process_set=ps)


def _reducescatter(tensor: torch.Tensor, name: Optional[str], op: ReduceOp, pre: float = 1.0,
                   post: float = 1.0, *, ps: Any = None) -> Handle:
    return _builders.reducescatter(TORCH, tensor, op, name, pre, post, what="reducescatter",
                                   process_set=ps)


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
                    summed: Sequence[torch.Tensor], scale: float, name: Optional[str],
                    ps: Any = None) -> List[torch.Tensor]:
    """Input gradients for Min/Max/Product given each tensor's pre-scaled input, unscaled
    reduced value (full size) and the sum over ranks of the output gradient."""
    if int(op) in (int(Min), int(Max)):
        masks = [(z == m).to(z.dtype) for z, m in zip(inputs, results)]
        counts = synchronize(_grouped_async(masks, _sub_name(name, "ties"), Sum, ps=ps))
        return [_scaled(s * mask / count.clamp_min(1), scale)
                for s, mask, count in zip(summed, masks, counts)]
    # Product: d(prod_s z_s)/d z_r = product of the other ranks' z. Count zeros and multiply the
    # non-zeros separately so a zero input still gets the exact product of the others.
    zeros = [(z == 0).to(z.dtype) for z in inputs]
    nonzero = [torch.where(z == 0, torch.ones_like(z), z) for z in inputs]
    zero_handle = _grouped_async(zeros, _sub_name(name, "zeros"), Sum, in_place=True, ps=ps)
    product_handle = _grouped_async(nonzero, _sub_name(name, "nonzero"), Product,
                                    in_place=True, ps=ps)
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
                       name: Optional[str], pre: float, post: float, ps: Any) -> torch.Tensor:
    """Forward of allreduce/reducescatter. Min, Max and Product keep the (prescaled) input and the
    unscaled result for their exact backward, so the scales are applied here, not in the engine."""
    ctx.op, ctx.name, ctx.pre, ctx.post, ctx.ps = op, name, pre, post, ps
    if _exact_backward(op, tensor):
        z = _scaled(tensor.detach(), pre)
        reduced = synchronize(start(z, name, op, ps=ps))
        ctx.save_for_backward(z, reduced)
        return _scaled(reduced, post) if post != 1.0 else reduced.clone()
    return synchronize(start(tensor, name, op, pre, post, ps=ps))


# --- allreduce -------------------------------------------------------------------------------

class _Allreduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, op: ReduceOp, name: Optional[str], pre: float,
                post: float, ps: Any = None) -> torch.Tensor:
        return _reduction_forward(ctx, _allreduce, tensor, op, name, pre, post, ps)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        name = _sub_name(ctx.name, "backward")
        if int(ctx.op) == int(Adasum):
            raise RuntimeError("allreduce(op=Adasum) has no gradient in dist_sync: Adasum "
                               "combines gradients, it is not a function to differentiate "
                               "(Horovod applies Adasum to the gradient, which is not its "
                               "derivative); reduce with Sum or Average inside the model")
        if int(ctx.op) in _EXTREMA:
            z, reduced = ctx.saved_tensors
            summed = synchronize(_allreduce(grad, name, Sum, ps=ctx.ps))
            result = _extremum_grads(ctx.op, [z], [reduced], [summed], ctx.pre * ctx.post,
                                     ctx.name, ctx.ps)[0]
        else:
            result = synchronize(_allreduce(grad, name, ctx.op, ctx.pre, ctx.post, ps=ctx.ps))
        return result, None, None, None, None, None




# --- grouped allreduce -----------------------------------------------------------------------

def _grouped(tensors: List[torch.Tensor], name: Optional[str], op: ReduceOp, pre: float = 1.0,
             post: float = 1.0, *, ps: Any = None) -> List[torch.Tensor]:
    return synchronize(_grouped_async(tensors, name, op, pre, post, ps=ps))


class _GroupedAllreduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, op: ReduceOp, name: Optional[str], pre: float, post: float, ps: Any,
                *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        ctx.op, ctx.name, ctx.pre, ctx.post, ctx.ps = op, name, pre, post, ps
        ctx.floating = [t.is_floating_point() for t in tensors]
        if int(op) not in _EXTREMA:
            outputs = _grouped(list(tensors), name, op, pre, post, ps=ps)
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
                handles.append(_grouped_async([inputs[i] for i in float_index],
                                              _sub_name(name, "float"), op, ps=ps))
            handles.append(_grouped_async([inputs[i] for i in int_index], _sub_name(name, "int"),
                                          op, pre, post, ps=ps))
            parts = [synchronize(h) for h in handles]
            reduced: List[Optional[torch.Tensor]] = [None] * len(tensors)
            for index_list, part in zip([float_index, int_index] if float_index else [int_index],
                                        parts):
                for i, value in zip(index_list, part):
                    reduced[i] = value
        else:
            reduced = _grouped(inputs, name, op, ps=ps)
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
            return (None, None, None, None, None, *none)
        float_grads = [grads[i] for i in index]
        name = _sub_name(ctx.name, "backward")
        if int(ctx.op) in _EXTREMA:
            saved = ctx.saved_tensors
            inputs, reduced = saved[:len(index)], saved[len(index):]
            summed = _grouped(float_grads, name, Sum, ps=ctx.ps)
            results = _extremum_grads(ctx.op, inputs, reduced, summed, ctx.pre * ctx.post,
                                      ctx.name, ctx.ps)
        else:
            results = _grouped(float_grads, name, ctx.op, ctx.pre, ctx.post, ps=ctx.ps)
        out = none
        for i, value in zip(index, results):
            out[i] = value
        return (None, None, None, None, None, *out)




# --- allgather -------------------------------------------------------------------------------

class _Allgather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, name: Optional[str],
                ps: Any = None) -> torch.Tensor:
        ctx.shape, ctx.name, ctx.ps = tensor.shape, name, ps
        gathered, ctx.counts = synchronize(_builders.allgather(TORCH, tensor, name,
                                                               what="allgather", with_rows=True,
                                                               process_set=ps))
        return gathered

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        rows = ctx.shape[0] if len(ctx.shape) > 0 else 1
        counts = ctx.counts  # every rank's row count, from the forward's negotiation
        # Rank p holds every rank's gradient of the rows p contributed: send them back with an
        # alltoall (each rank gets size() copies of its own rows) and sum, instead of an
        # allreduce of the whole gathered tensor.
        received, _ = synchronize(_alltoall(grad, counts, _sub_name(ctx.name, "backward"),
                                            ps=ctx.ps))
        summed = received.reshape(len(counts), rows, *grad.shape[1:]).sum(0)
        return summed.reshape(ctx.shape), None, None




# --- broadcast -------------------------------------------------------------------------------

class _Broadcast(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, root_rank: int,
                name: Optional[str], ps: Any = None) -> torch.Tensor:
        ctx.root, ctx.name, ctx.ps = root_rank, name, ps
        return synchronize(_builders.broadcast(TORCH, tensor, root_rank, name, in_place=False,
                                               what="broadcast", process_set=ps))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        summed = synchronize(_allreduce(grad, _sub_name(ctx.name, "backward"), Sum, ps=ctx.ps))
        if _core.rank() != ctx.root:
            summed.zero_()
        return summed, None, None, None




# --- alltoall --------------------------------------------------------------------------------

class _Alltoall(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, splits: Any,
                name: Optional[str], ps: Any = None) -> Tuple[torch.Tensor, torch.Tensor]:
        ctx.name, ctx.ps = name, ps
        output, received = synchronize(_alltoall(tensor, splits, name, ps=ps))
        ctx.received = received.tolist()
        ctx.mark_non_differentiable(received)
        return output, received

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor, _unused: Any) -> Tuple[Any, ...]:
        # Each rank sends the gradient of what it received back to where it came from.
        returned, _ = synchronize(_alltoall(grad, ctx.received, _sub_name(ctx.name, "backward"),
                                            ps=ctx.ps))
        return returned, None, None, None




# --- reducescatter ---------------------------------------------------------------------------

class _Reducescatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, op: ReduceOp, name: Optional[str], pre: float,
                post: float, ps: Any = None) -> torch.Tensor:
        return _reduction_forward(ctx, _reducescatter, tensor, op, name, pre, post, ps)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        # Every rank's gradient of its own rows, concatenated: the summed output gradient of
        # the full reduction.
        summed = synchronize(_allgather(grad, _sub_name(ctx.name, "backward"), ps=ctx.ps))
        if int(ctx.op) in _EXTREMA:
            z, piece = ctx.saved_tensors
            full = synchronize(_allgather(piece, _sub_name(ctx.name, "result"), ps=ctx.ps))
            result = _extremum_grads(ctx.op, [z], [full], [summed], ctx.pre * ctx.post,
                                     ctx.name, ctx.ps)[0]
        else:
            size = resolve(ctx.ps, "reducescatter").size
            scale = ctx.pre * ctx.post / (size if int(ctx.op) == int(Average) else 1)
            result = _scaled(summed, scale)
        return result, None, None, None, None, None




# --- grouped allgather and reducescatter -------------------------------------------------------

class _GroupedAllgather(torch.autograd.Function):
    """Every tensor's gradient as :class:`_Allgather`'s, the alltoalls of all tensors in flight
    together."""

    @staticmethod
    def forward(ctx: Any, name: Optional[str], ps: Any, *tensors: torch.Tensor
                ) -> Tuple[torch.Tensor, ...]:
        ctx.shapes, ctx.name, ctx.ps = [t.shape for t in tensors], name, ps
        gathered, ctx.counts = synchronize(_builders.grouped_allgather(
            TORCH, list(tensors), name, what="grouped_allgather", process_set=ps, with_rows=True))
        for value in gathered:
            if not value.is_floating_point():
                ctx.mark_non_differentiable(value)
        return tuple(gathered)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor) -> Tuple[Any, ...]:
        handles = [_alltoall(grad.contiguous(), counts,
                             _sub_name(ctx.name, f"backward.{i}"), ps=ctx.ps)
                   for i, (grad, counts) in enumerate(zip(grads, ctx.counts))]
        out = []
        for shape, counts, grad, handle in zip(ctx.shapes, ctx.counts, grads, handles):
            rows = shape[0] if len(shape) > 0 else 1
            received, _ = synchronize(handle)
            summed = received.reshape(len(counts), rows, *grad.shape[1:]).sum(0)
            out.append(summed.reshape(shape))
        return (None, None, *out)


class _GroupedReducescatter(torch.autograd.Function):
    """Sum and Average only (the public function sends Min/Max/Product through
    :class:`_Reducescatter`, whose backward needs the winners): every tensor's gradient as
    :class:`_Reducescatter`'s, gathered in one grouped allgather."""

    @staticmethod
    def forward(ctx: Any, op: ReduceOp, name: Optional[str], pre: float, post: float, ps: Any,
                *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        ctx.op, ctx.name, ctx.pre, ctx.post, ctx.ps = op, name, pre, post, ps
        pieces = synchronize(_builders.grouped_reducescatter(
            TORCH, list(tensors), op, name, pre, post, what="grouped_reducescatter",
            process_set=ps))
        for value in pieces:
            if not value.is_floating_point():
                ctx.mark_non_differentiable(value)
        return tuple(pieces)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor) -> Tuple[Any, ...]:
        summed = synchronize(_builders.grouped_allgather(
            TORCH, [g.contiguous() for g in grads], _sub_name(ctx.name, "backward"),
            what="grouped_reducescatter", process_set=ctx.ps))
        size = resolve(ctx.ps, "grouped_reducescatter").size
        scale = ctx.pre * ctx.post / (size if int(ctx.op) == int(Average) else 1)
        return (None, None, None, None, None, *[_scaled(s, scale) for s in summed])
