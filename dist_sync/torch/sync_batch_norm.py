"""Batch normalization with statistics over the whole global batch (all ranks together).

Note [SyncBatchNorm statistics]
Each rank computes its sample count n_r, per-channel mean m_r and sum of squared deviations
M2_r; one allgather shares them, and every rank combines them in float64 with Chan's parallel
formula (mean = sum n_r m_r / n; M2 = sum M2_r + sum n_r (m_r - mean)^2). Unlike the textbook
E[x^2] - E[x]^2 this does not cancel catastrophically, ranks may hold different batch sizes, and
every rank gets bit-identical statistics. The backward pass needs the global sums of the
output gradient and of gradient * x_hat per channel: one allreduce. Gradients follow
dist_sync.torch.functions' Note [Gradient convention] (the gradient of the sum of the ranks'
losses); weight and bias gradients are local, and DistributedOptimizer averages them.
"""
from __future__ import annotations

import itertools
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

from .. import _session
from .._process_sets import ProcessSet, global_process_set, resolve
from .._reduce_op import Sum
from .._session import synchronize
from . import mpi_ops as ops

_instances = itertools.count()


def _channel_shape(x: torch.Tensor) -> List[int]:
    return [1, x.shape[1]] + [1] * (x.dim() - 2)


class _SyncBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: Optional[torch.Tensor],
                bias: Optional[torch.Tensor], running_mean: Optional[torch.Tensor],
                running_var: Optional[torch.Tensor], eps: float, momentum: float,
                name: str, process_set: Any = None) -> torch.Tensor:
        channels = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        xc = x.detach().to(compute)
        local_count = x.numel() // channels if channels else 0
        if local_count > 0:
            var, mean = torch.var_mean(xc, dim=dims, correction=0)
            m2 = var * local_count
        else:
            mean = torch.zeros(channels, dtype=compute, device=x.device)
            m2 = torch.zeros(channels, dtype=compute, device=x.device)
        mine = torch.cat([torch.tensor([float(local_count)], dtype=torch.float64, device=x.device),
                          mean.to(torch.float64), m2.to(torch.float64)]).reshape(1, -1)
        gathered = synchronize(ops.allgather_async(mine, name=f"{name}.stats",
                                                   process_set=process_set))
        counts = gathered[:, :1]
        total = float(counts.sum())
        if total <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got "
                             f"{int(total)} across all ranks (input size {list(x.shape)} here)")
        means = gathered[:, 1:1 + channels]
        global_mean = (counts * means).sum(0) / total
        global_m2 = gathered[:, 1 + channels:].sum(0) + (counts * (means - global_mean) ** 2).sum(0)
        biased_var = global_m2 / total
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(
                    global_mean.to(running_mean.dtype), alpha=momentum)
        if running_var is not None:
            with torch.no_grad():
                running_var.mul_(1 - momentum).add_(
                    (global_m2 / (total - 1)).to(running_var.dtype), alpha=momentum)
        mean_c = global_mean.to(compute)
        invstd = torch.rsqrt(biased_var + eps).to(compute)
        shape = _channel_shape(x)
        y = (xc - mean_c.view(shape)) * invstd.view(shape)
        if weight is not None:
            y = y * weight.detach().to(compute).view(shape)
        if bias is not None:
            y = y + bias.detach().to(compute).view(shape)
        ctx.save_for_backward(x, weight, mean_c, invstd)
        ctx.total, ctx.name, ctx.has_bias = total, name, bias is not None
        ctx.process_set = process_set
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        compute = mean.dtype
        dims = [0] + list(range(2, x.dim()))
        shape = _channel_shape(x)
        g = grad.to(compute)
        x_hat = (x.to(compute) - mean.view(shape)) * invstd.view(shape)
        sum_g = g.sum(dims)
        sum_g_xhat = (g * x_hat).sum(dims)
        channels = sum_g.numel()
        sums = torch.cat([sum_g, sum_g_xhat])
        ops.allreduce_(sums, op=Sum, name=f"{ctx.name}.grad",
                       process_set=ctx.process_set)
        mean_g = (sums[:channels] / ctx.total).view(shape)
        mean_g_xhat = (sums[channels:] / ctx.total).view(shape)
        scale = invstd if weight is None else invstd * weight.to(compute)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = ((g - mean_g - x_hat * mean_g_xhat) * scale.view(shape)).to(x.dtype)
        grad_weight = sum_g_xhat.to(weight.dtype) if weight is not None and \
            ctx.needs_input_grad[1] else None
        grad_bias = sum_g.to(weight.dtype if weight is not None else compute) if \
            ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training-mode statistics cover the global batch (every rank's samples),
    matching a single-process BatchNorm over the concatenated batch (Note [SyncBatchNorm
    statistics]). Works for any input of shape (N, C, ...); ranks may hold different batch
    sizes. In eval mode, or when dist_sync is not initialized or runs one rank, it is plain
    BatchNorm; so is it when dist_sync was never initialized in this process (after init(), a
    stopped engine raises rather than silently using local statistics).

    Every rank must run the same SyncBatchNorm layers in the same order (each training forward
    is a collective; with ``process_set``, among that set's ranks, whose batches it then
    covers). Layers are named by construction order, so build models in the same order
    on every rank.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device: Any = None,
                 dtype: Any = None, process_set: ProcessSet = global_process_set) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self._ds_name = f"SyncBatchNorm.{next(_instances)}"
        self._ds_process_set = process_set

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        running_mean = self.running_mean if track else None
        running_var = self.running_var if track else None
        # Plain BatchNorm when dist_sync was never started in this process (a model used
        # outside a distributed job); once started, a stopped engine raises instead of
        # silently normalizing over the local batch only.
        if not use_batch_stats or _session._init_pid is None or \
                resolve(self._ds_process_set, "SyncBatchNorm").size == 1:
            return F.batch_norm(input, running_mean, running_var, self.weight, self.bias,
                                use_batch_stats, factor, self.eps)
        return _SyncBatchNormFunction.apply(input, self.weight, self.bias, running_mean,
                                            running_var, self.eps, factor, self._ds_name,
                                            self._ds_process_set)

    @classmethod
    def convert_sync_batchnorm(cls, module: torch.nn.Module) -> torch.nn.Module:
        """Returns ``module`` with every BatchNorm layer replaced by a SyncBatchNorm carrying
        the same parameters and running statistics."""
        converted = module
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            converted = cls(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
            if module.affine:
                with torch.no_grad():
                    converted.weight = module.weight
                    converted.bias = module.bias
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
            converted.train(module.training)
        for child_name, child in module.named_children():
            converted.add_module(child_name, cls.convert_sync_batchnorm(child))
        return converted


__all__ = ["SyncBatchNorm"]
