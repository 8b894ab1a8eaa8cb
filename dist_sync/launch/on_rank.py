"""What every rank of a job started by dist_sync.run executes:
``python -m dist_sync.launch.on_rank JOB_DIR``.

Calls the function from the job directory and leaves its outcome there. A failure is recorded
and then handed to ``sys.excepthook`` as if uncaught (the traceback starts at the user's
function), so that dist_sync, if the function initialised it, tells the other ranks why; the
rank exits non-zero and the launcher ends the job.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

from .job import mapped_shared_memory
from .mpi import world_rank
from .payload import Outcome, failure, read_payload, user_traceback, write_outcome


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m dist_sync.launch.on_rank JOB_DIR "
                         "(started by dist_sync.run, not by hand)")
    job_dir = argv[0]
    rank = world_rank()
    if rank is None:
        raise SystemExit("dist_sync.launch.on_rank must be started by an MPI launcher "
                         "(no OMPI_COMM_WORLD_RANK, PMIX_RANK or PMI_RANK in the environment)")
    try:
        fn, args, kwargs = read_payload(job_dir)
        value = fn(*args, **kwargs)
    except BaseException as error:
        outcome = failure(rank, error, skip_frames=1)
        # The launcher removes it if the job's end leaves it behind (MPICH's mpiexec does).
        outcome.shared_memory = tuple(sorted(mapped_shared_memory(os.getpid())))
        write_outcome(job_dir, outcome)
        sys.excepthook(type(error), error, user_traceback(error, 1))
        raise SystemExit(1) from None
    write_outcome(job_dir, Outcome(rank, True, value))


if __name__ == "__main__":
    main()
