"""Training on data in Dask: ``dist_sync.dask.run(client, fn, ddf)`` calls ``fn`` on every worker
of a Dask cluster whose workers are MPI ranks (dask-mpi), with dist_sync running over those
ranks and each rank given the partitions its worker already holds. Knows data placement;
knows no tensors.
"""
from __future__ import annotations

try:
    import dask  # noqa: F401
    import distributed  # noqa: F401
except ImportError as error:
    raise ImportError(
        f"dist_sync.dask needs dask, distributed and dask-mpi ({error}): install them with "
        f"`pip install .[dask]` in a dist_sync source tree (or "
        f"`pip install 'dask[dataframe]' distributed dask-mpi`)") from error

from .placement import Partition, Placement, place
from .runner import plan, run, worker_ranks

__all__ = ["Partition", "Placement", "place", "plan", "run", "worker_ranks"]
