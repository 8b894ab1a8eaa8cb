"""dist_sync for TensorFlow 2: a drop-in for ``horovod.tensorflow``.

Change ``import horovod.tensorflow as hvd`` to ``import dist_sync.tensorflow as hvd`` and launch
with ``mpirun -np N python train.py``. Collectives work eagerly and inside ``tf.function`` and
are differentiable; ``DistributedGradientTape`` averages a step's gradients in one fused
submission. Keras 3: ``dist_sync.tensorflow.keras``. The engine is shared with
``dist_sync.torch`` and the numpy API: one ``init()`` serves all of them in a process.
Differences from Horovod: docs/tensorflow.md.
"""
from __future__ import annotations

try:
    import tensorflow as _tf  # noqa: F401
except ImportError as _error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dist_sync.tensorflow needs TensorFlow: install it with `pip install "
        "dist_sync[tensorflow]` (or `pip install tensorflow-cpu==2.21.0`)") from _error

from .._process_sets import (ProcessSet, add_process_set, global_process_set,
                             process_set_by_id, process_sets, remove_process_set)
from .._build_info import (ccl_built, ddl_built, gloo_built, gloo_enabled, mpi_built,
                           mpi_enabled, nccl_built, rocm_built)
from .._session import (DistSyncError, cross_rank, cross_size, init, is_homogeneous,
                        is_initialized, local_rank, local_size, mpi_threads_supported, rank,
                        shutdown, size, start_timeline, stop_timeline)
from .compression import Compression, Compressor
from .functions import (allgather_object, broadcast_, broadcast_global_variables,
                        broadcast_object, broadcast_object_fn, broadcast_variables)
from .gradients import (DistributedGradientTape, PartialDistributedGradientTape,
                        reduce_gradients)
from .mpi_ops import (Adasum, Average, Max, Min, Product, ReduceOp, Sum, allgather, allreduce,
                      alltoall, barrier, broadcast, grouped_allgather, grouped_allreduce,
                      grouped_reducescatter, join, local_rank_op, local_size_op,
                      process_set_included_op, rank_op, reducescatter, size_op)
from .util import _executing_eagerly
from . import elastic
from .elastic import HorovodInternalError, HostsUpdatedInterrupt


def cuda_built() -> bool:
    """False: dist_sync.tensorflow works on CPU tensors."""
    return False


def __getattr__(name: str):
    # Horovod exposes its Keras layer here too; loading Keras waits until it is asked for.
    if name == "SyncBatchNormalization":
        from .keras.sync_batch_norm import SyncBatchNormalization
        return SyncBatchNormalization
    raise AttributeError(f"module 'dist_sync.tensorflow' has no attribute {name!r}")


__all__ = [
    "DistSyncError", "init", "shutdown", "is_initialized", "rank", "size", "local_rank",
    "local_size", "cross_rank", "cross_size", "is_homogeneous", "mpi_threads_supported",
    "mpi_enabled", "mpi_built", "gloo_enabled", "gloo_built", "nccl_built", "ddl_built",
    "ccl_built", "cuda_built", "rocm_built", "start_timeline", "stop_timeline", "Average",
    "Sum", "Min", "Max", "Product", "Adasum", "ReduceOp", "allreduce", "grouped_allreduce",
    "grouped_allgather", "grouped_reducescatter", "broadcast_", "broadcast_object_fn",
    "SyncBatchNormalization", "allgather", "broadcast", "alltoall", "reducescatter", "barrier",
    "join", "size_op",
    "rank_op", "local_size_op", "local_rank_op", "Compression", "Compressor",
    "DistributedGradientTape", "PartialDistributedGradientTape", "reduce_gradients",
    "broadcast_variables",
    "broadcast_global_variables", "broadcast_object",
    "allgather_object", "ProcessSet", "global_process_set", "add_process_set",
    "remove_process_set", "process_set_by_id", "process_sets", "process_set_included_op",
    "elastic", "HorovodInternalError", "HostsUpdatedInterrupt",
]
