"""dist_sync for PyTorch: a drop-in for ``horovod.torch``.

Change ``import horovod.torch as hvd`` to ``import dist_sync.torch as hvd`` and launch with
``mpirun -np N python train.py``. Tensors may be on the CPU or on a CUDA device (staged through
pinned host memory, Note [Host staging] in _staging.py; one rank per GPU: README, "GPUs").
Differences from Horovod are listed in the docstrings of the modules that
implement them (functions, optimizer, state) and in docs/torch.md; ``process_set`` arguments,
elastic training and Adasum are not provided.

Huge pages: Open MPI's single-copy transport is about twice as fast on 2 MiB transparent huge
pages. PyTorch uses them for CPU allocations of 2 MiB and more when the environment variable
``THP_MEM_ALLOC_ENABLE=1`` is set before torch is imported; the examples set it.
"""
from __future__ import annotations

import torch

from .. import (DistSyncError, Handle, cross_rank, cross_size, init, is_homogeneous,
                is_initialized, local_rank, local_size, poll, rank, shutdown, size,
                start_timeline, stop_timeline, synchronize)
from .. import _core
from .averaging import PeriodicModelAverager, average_parameters
from .compression import Compression, Compressor
from .functions import (allgather, allreduce, alltoall, broadcast, grouped_allreduce,
                        reducescatter)
from .ops import (Adasum, Average, Max, Min, Product, ReduceOp, Sum, allgather_async,
                  allreduce_, allreduce_async, allreduce_async_, alltoall_async, barrier,
                  broadcast_, broadcast_async, broadcast_async_, grouped_allreduce_,
                  grouped_allreduce_async, grouped_allreduce_async_, join,
                  reducescatter_async)
from .optimizer import DistributedOptimizer
from .sampler import DistributedSampler
from .state import (allgather_object, broadcast_object, broadcast_optimizer_state,
                    broadcast_parameters)
from .sync_batch_norm import SyncBatchNorm


def mpi_threads_supported() -> bool:
    """True if the MPI library runs with MPI_THREAD_MULTIPLE (dist_sync itself needs only
    MPI_THREAD_SERIALIZED: one engine thread talks to MPI). Needs init()."""
    _core.rank()  # raises DistSyncError unless initialized
    return _core.mpi_thread_level() == 3


def mpi_enabled() -> bool:
    """True: dist_sync always runs over MPI."""
    return True


def mpi_built() -> bool:
    """True: dist_sync is built against MPI."""
    return True


def gloo_enabled() -> bool:
    """False: dist_sync has no Gloo controller."""
    return False


def gloo_built() -> bool:
    """False: dist_sync has no Gloo controller."""
    return False


def nccl_built() -> int:
    """0: dist_sync is not built with NCCL (Horovod returns the NCCL version, or 0)."""
    return 0


def ddl_built() -> bool:
    """False: no IBM DDL support."""
    return False


def ccl_built() -> bool:
    """False: no oneCCL support."""
    return False


def cuda_built() -> bool:
    """True if this torch is built with CUDA, so dist_sync accepts CUDA tensors (staged through
    host memory; dist_sync itself needs no CUDA build). Horovod answers whether it was built with
    CUDA support."""
    return bool(torch.backends.cuda.is_built())


def rocm_built() -> bool:
    """False: no ROCm support."""
    return False


__all__ = [
    "DistSyncError", "Handle", "init", "shutdown", "is_initialized", "rank", "size",
    "local_rank", "local_size", "cross_rank", "cross_size", "is_homogeneous",
    "mpi_threads_supported", "mpi_enabled", "mpi_built", "gloo_enabled", "gloo_built",
    "nccl_built", "ddl_built", "ccl_built", "cuda_built", "rocm_built", "start_timeline",
    "stop_timeline", "Average", "Sum", "Min", "Max", "Product", "Adasum", "ReduceOp",
    "allreduce", "allreduce_async", "allreduce_", "allreduce_async_", "grouped_allreduce",
    "grouped_allreduce_async", "grouped_allreduce_", "grouped_allreduce_async_", "allgather",
    "allgather_async", "broadcast", "broadcast_async", "broadcast_", "broadcast_async_",
    "alltoall", "alltoall_async", "reducescatter", "reducescatter_async", "poll",
    "synchronize", "join", "barrier", "Compression", "Compressor", "DistributedOptimizer",
    "broadcast_parameters", "broadcast_optimizer_state", "broadcast_object",
    "allgather_object", "DistributedSampler", "average_parameters", "PeriodicModelAverager",
    "SyncBatchNorm",
]
