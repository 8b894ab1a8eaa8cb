"""Starting dist_sync jobs from Python: ``dist_sync.run`` (a function on N ranks through the MPI
launcher) and its command line ``python -m dist_sync.run``. Knows launchers; knows no tensors."""
from __future__ import annotations

from .errors import JobError, RankError

__all__ = ["JobError", "RankError", "run"]


def __getattr__(name: str):
    # Every rank imports this package (python -m dist_sync.launch.on_rank); the launcher's own
    # modules load only where a job is started.
    if name == "run":
        from .runner import run
        return run
    raise AttributeError(f"module 'dist_sync.launch' has no attribute {name!r}")
