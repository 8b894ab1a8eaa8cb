"""dist_sync for PyTorch: a drop-in for ``horovod.torch``.

Change ``import horovod.torch as hvd`` to ``import dist_sync.torch as hvd`` and launch with
``mpirun -np N python train.py``. Tensors may be on the CPU or on a CUDA device (staged through
pinned host memory, Note [Host staging] in _staging.py; one rank per GPU: README, "GPUs").
Differences from Horovod are listed in the docstrings of the modules that
implement them (mpi_ops, functions, optimizer) and in docs/torch.md. Elastic training (``hvd.elastic``, :mod:`dist_sync.torch.elastic`) survives
lost ranks under ``mpirun --with-ft ulfm``.

Huge pages: Open MPI's single-copy transport is about twice as fast on 2 MiB transparent huge
pages. PyTorch uses them for CPU allocations of 2 MiB and more when the environment variable
``THP_MEM_ALLOC_ENABLE=1`` is set before torch is imported; the examples set it.
"""
from __future__ import annotations

import torch

from .._build_info import (ccl_built, ddl_built, gloo_built, gloo_enabled, mpi_built,
                           mpi_enabled, nccl_built, rocm_built)
from .._session import (DistSyncError, Handle, cross_rank, cross_size, init, is_homogeneous,
                        is_initialized, local_rank, local_size, mpi_threads_supported, poll,
                        rank, shutdown, size, start_timeline, stop_timeline, synchronize)
from .averaging import PeriodicModelAverager, average_parameters
from .._process_sets import (ProcessSet, add_process_set, global_process_set,
                                               process_set_by_id, process_sets, remove_process_set)
from .compression import Compression, Compressor
from .functions import (allgather_object, broadcast_object, broadcast_optimizer_state,
                        broadcast_parameters)
from .mpi_ops import (Adasum, Average, Max, Min, Product, ReduceOp, Sum, allgather,
                      allgather_async, allreduce, allreduce_, allreduce_async, allreduce_async_,
                      alltoall, alltoall_async, barrier, broadcast, broadcast_, broadcast_async,
                      broadcast_async_, grouped_allreduce, grouped_allreduce_,
                      grouped_allgather, grouped_allgather_async, grouped_allreduce_async,
                      grouped_allreduce_async_, grouped_reducescatter, grouped_reducescatter_async,
                      join, reducescatter, reducescatter_async, sparse_allreduce_async)
from . import elastic
from .elastic import HorovodInternalError, HostsUpdatedInterrupt
from .optimizer import DistributedOptimizer
from .sampler import DistributedSampler
from .sync_batch_norm import SyncBatchNorm


def cuda_built() -> bool:
    """True if this torch is built with CUDA, so dist_sync accepts CUDA tensors (staged through
    host memory; dist_sync itself needs no CUDA build). Horovod answers whether it was built with
    CUDA support."""
    return bool(torch.backends.cuda.is_built())


# The spelling of Horovod's Adasum user guide (``op=hvd.AdaSum``), so its examples run as written.
AdaSum = Adasum


__all__ = [
    "ProcessSet", "global_process_set", "add_process_set", "remove_process_set",
    "process_set_by_id", "process_sets",
    "DistSyncError", "Handle", "init", "shutdown", "is_initialized", "rank", "size",
    "local_rank", "local_size", "cross_rank", "cross_size", "is_homogeneous",
    "mpi_threads_supported", "mpi_enabled", "mpi_built", "gloo_enabled", "gloo_built",
    "nccl_built", "ddl_built", "ccl_built", "cuda_built", "rocm_built", "start_timeline",
    "stop_timeline", "Average", "Sum", "Min", "Max", "Product", "Adasum", "AdaSum", "ReduceOp",
    "allreduce", "allreduce_async", "allreduce_", "allreduce_async_", "grouped_allreduce",
    "grouped_allreduce_async", "grouped_allreduce_", "grouped_allreduce_async_", "allgather",
    "allgather_async", "broadcast", "broadcast_async", "broadcast_", "broadcast_async_",
    "alltoall", "alltoall_async", "reducescatter", "reducescatter_async", "poll",
    "synchronize", "join", "barrier", "Compression", "Compressor", "DistributedOptimizer",
    "broadcast_parameters", "broadcast_optimizer_state", "broadcast_object",
    "allgather_object", "DistributedSampler", "average_parameters", "PeriodicModelAverager",
    "SyncBatchNorm", "grouped_allgather", "grouped_allgather_async", "grouped_reducescatter",
    "grouped_reducescatter_async", "sparse_allreduce_async", "elastic", "HorovodInternalError",
    "HostsUpdatedInterrupt",
]
