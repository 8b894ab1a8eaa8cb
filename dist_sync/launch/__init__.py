"""Starting dist_sync jobs from Python: ``dist_sync.run`` (a function on N ranks through the MPI
launcher) and its command line ``python -m dist_sync.run``. Knows launchers; knows no tensors."""
from __future__ import annotations

from .errors import JobError, RankError
from .runner import run

__all__ = ["JobError", "RankError", "run"]
