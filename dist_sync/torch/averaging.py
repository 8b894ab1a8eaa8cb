"""Model averaging: all ranks replace their parameters by the mean over ranks.

Used for local SGD (each rank trains on its own for a few steps, then the models are averaged)
and to re-synchronise models that drifted apart.
"""
from __future__ import annotations

from typing import Iterable, List, Union

import torch

from .._reduce_op import Average
from .._session import synchronize
from .mpi_ops import broadcast_async_, grouped_allreduce_async_

Params = Union[torch.nn.Module, Iterable[torch.Tensor], Iterable[dict]]


def _tensors(params: Params) -> List[torch.Tensor]:
    if isinstance(params, torch.nn.Module):
        found = list(params.parameters()) + list(params.buffers())
    elif isinstance(params, torch.Tensor):
        found = [params]
    else:
        found = []
        for item in params:
            if isinstance(item, dict) and "params" in item:  # an optimizer param group
                found.extend(item["params"])
            elif isinstance(item, torch.Tensor):
                found.append(item)
            else:
                raise TypeError(f"average_parameters expects a module, tensors or param groups, "
                                f"found {type(item).__name__}")
    unique, seen = [], set()
    for tensor in found:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            unique.append(tensor)
    return unique


def average_parameters(params: Params, root_rank: int = 0) -> None:
    """Replaces every floating tensor of ``params`` by its mean over all ranks, in place (the
    result is bit-identical on every rank), and overwrites every other tensor (such as
    BatchNorm's ``num_batches_tracked``) with ``root_rank``'s value.

    ``params``: a module (parameters and buffers), an iterable of tensors, or optimizer param
    groups. Every rank must pass the same structure. Collective.
    """
    tensors = _tensors(params)
    floating = [t for t in tensors if t.is_floating_point()]
    others = [t for t in tensors if not t.is_floating_point()]
    handles = []
    if floating:
        sends = [t.detach() if t.is_contiguous() else t.detach().contiguous() for t in floating]
        handles.append(("average", floating, sends,
                        grouped_allreduce_async_(sends, op=Average)))
    for tensor in others:
        send = tensor.detach() if tensor.is_contiguous() else tensor.detach().contiguous()
        handles.append(("broadcast", [tensor], [send], broadcast_async_(send, root_rank)))
    for _, targets, sends, handle in handles:
        synchronize(handle)
        with torch.no_grad():
            for target, send in zip(targets, sends):
                if send.data_ptr() != target.data_ptr():
                    target.copy_(send)


class PeriodicModelAverager:
    """Local SGD: average the model every ``period`` optimizer steps, after ``warmup_steps``
    steps of ordinary data-parallel training (same semantics as
    ``torch.distributed.algorithms.model_averaging.averagers.PeriodicModelAverager``).

    Call :meth:`average_parameters` after every ``optimizer.step()``. Call number ``i`` (from 0)
    averages when ``i >= warmup_steps`` and ``(i - warmup_steps) % period == 0``. Optimizer state
    (momentum) stays local. During warm-up, wrap the optimizer in DistributedOptimizer or the
    ranks drift apart; afterwards use the plain optimizer.
    """

    def __init__(self, period: int, warmup_steps: int = 0) -> None:
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"period must be a positive integer, got {period!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        self.period = period
        self.warmup_steps = warmup_steps
        self.step = 0

    def average_parameters(self, params: Params) -> bool:
        """Averages ``params`` over ranks if this step is an averaging step; returns whether it
        did. Collective on averaging steps."""
        due = self.step >= self.warmup_steps and (self.step - self.warmup_steps) % self.period == 0
        if due:
            average_parameters(params)
        self.step += 1
        return due


__all__ = ["average_parameters", "PeriodicModelAverager"]
