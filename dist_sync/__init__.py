"""dist_sync: Horovod-style data-parallel training over MPI, with a ring-allreduce engine in C++.

Framework-free API on numpy arrays; ``dist_sync.torch`` adds PyTorch tensors and the
DistributedOptimizer. Launch with ``mpirun -np N python train.py``.
"""
from __future__ import annotations

try:
    from . import _core
except ImportError as _error:
    import glob as _glob
    import os as _os
    _here = _os.path.dirname(_os.path.abspath(__file__))
    if _glob.glob(_os.path.join(_here, "_core.*")):
        raise ImportError(f"dist_sync's compiled engine in {_here} failed to load: "
                          f"{_error}") from _error
    # Typically a source checkout that shadows the installed package.
    raise ImportError(
        f"dist_sync's compiled engine (dist_sync._core) cannot be imported from {_here}: that "
        f"folder has no build. If it is a source checkout (Python imports it instead of the "
        f"installed dist_sync when it is the current directory or on sys.path), build it in "
        f"place with `make install` (or `pip install -e .`), or run from another "
        f"directory.") from None

from ._objects import allgather_object, broadcast_object
from ._process_sets import (ProcessSet, add_process_set, global_process_set,
                                              process_set_by_id, process_sets, remove_process_set)
from ._session import (DistSyncError, Handle, cross_rank, cross_size, init, is_homogeneous,
                       is_initialized, local_rank, local_size, mpi_library_version,
                       mpi_threads_supported, poll, rank, shutdown, size, start_timeline,
                       stop_timeline, synchronize)
from .ops import (Adasum, Average, Max, Min, Product, ReduceOp, Sum, allgather, allgather_async,
                  allreduce, allreduce_, allreduce_async, allreduce_async_, alltoall,
                  alltoall_async, barrier, broadcast, broadcast_, broadcast_async,
                  broadcast_async_, grouped_allreduce, grouped_allreduce_,
                  grouped_allgather, grouped_allgather_async, grouped_allreduce_async,
                  grouped_allreduce_async_, grouped_reducescatter, grouped_reducescatter_async,
                  join, reducescatter, reducescatter_async)

__version__ = "0.1.0"


def __getattr__(name: str):
    # dist_sync.run and its errors load the launcher's modules only when first used, so that
    # `import dist_sync` on every rank does not pay for them.
    if name in ("run", "JobError", "RankError"):
        from . import launch
        return getattr(launch, name)
    raise AttributeError(f"module 'dist_sync' has no attribute {name!r}")

__all__ = [
    "ProcessSet", "global_process_set", "add_process_set", "remove_process_set",
    "process_set_by_id", "process_sets",
    "DistSyncError", "Handle", "ReduceOp", "Average", "Sum", "Adasum", "Min", "Max", "Product",
    "init", "shutdown", "is_initialized", "rank", "size", "local_rank", "local_size",
    "cross_rank", "cross_size", "is_homogeneous", "poll", "synchronize",
    "allreduce", "allreduce_", "allreduce_async", "allreduce_async_",
    "grouped_allreduce", "grouped_allreduce_", "grouped_allreduce_async",
    "grouped_allreduce_async_", "broadcast", "broadcast_", "broadcast_async",
    "broadcast_async_", "allgather", "allgather_async", "alltoall", "alltoall_async",
    "reducescatter", "reducescatter_async", "barrier", "join", "broadcast_object",
    "allgather_object", "start_timeline", "stop_timeline", "mpi_library_version",
    "mpi_threads_supported", "run", "JobError", "RankError", "grouped_allgather",
    "grouped_allgather_async", "grouped_reducescatter", "grouped_reducescatter_async",
]
