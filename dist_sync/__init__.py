"""dist_sync: Horovod-style data-parallel training over MPI, with a ring-allreduce engine in C++.

Framework-free API on numpy arrays; ``dist_sync.torch`` adds PyTorch tensors and the
DistributedOptimizer. Launch with ``mpirun -np N python train.py``.
"""
from __future__ import annotations

from . import _core
from ._engine import (DistSyncError, Handle, init, is_initialized, poll, shutdown,
                      synchronize)
from .objects import allgather_object, broadcast_object
from .ops import (Average, Max, Min, Product, ReduceOp, Sum, allgather, allgather_async,
                  allreduce, allreduce_, allreduce_async, allreduce_async_, alltoall,
                  alltoall_async, barrier, broadcast, broadcast_, broadcast_async,
                  broadcast_async_, grouped_allreduce, grouped_allreduce_,
                  grouped_allreduce_async, grouped_allreduce_async_, join, reducescatter,
                  reducescatter_async)

__version__ = "0.1.0"


def rank() -> int:
    """This process's rank, 0..size()-1."""
    return _core.rank()


def size() -> int:
    """The number of ranks."""
    return _core.size()


def local_rank() -> int:
    """This process's rank among the ranks on its host (use it to pick a GPU)."""
    return _core.local_rank()


def local_size() -> int:
    """The number of ranks on this host."""
    return _core.local_size()


def cross_rank() -> int:
    """The index of this host among the hosts (ranks with the same local_rank form a group)."""
    return _core.cross_rank()


def cross_size() -> int:
    """The number of hosts."""
    return _core.cross_size()


def is_homogeneous() -> bool:
    """True if every host runs the same number of ranks."""
    return _core.is_homogeneous()


def start_timeline(file_path: str, mark_cycles: bool = False) -> None:
    """Starts writing a Chrome-trace/Perfetto timeline to ``file_path`` (rank 0 writes it)."""
    _core.start_timeline(str(file_path))


def stop_timeline() -> None:
    """Stops the timeline; the file stays valid JSON."""
    _core.stop_timeline()


def mpi_library_version() -> str:
    """The MPI library dist_sync was built against, as the library describes itself."""
    return _core.mpi_library_version()


__all__ = [
    "DistSyncError", "Handle", "ReduceOp", "Average", "Sum", "Min", "Max", "Product",
    "init", "shutdown", "is_initialized", "rank", "size", "local_rank", "local_size",
    "cross_rank", "cross_size", "is_homogeneous", "poll", "synchronize",
    "allreduce", "allreduce_", "allreduce_async", "allreduce_async_",
    "grouped_allreduce", "grouped_allreduce_", "grouped_allreduce_async",
    "grouped_allreduce_async_", "broadcast", "broadcast_", "broadcast_async",
    "broadcast_async_", "allgather", "allgather_async", "alltoall", "alltoall_async",
    "reducescatter", "reducescatter_async", "barrier", "join", "broadcast_object",
    "allgather_object", "start_timeline", "stop_timeline", "mpi_library_version",
]
