"""What every rank of a job started by dist_sync.run executes:
``python -m dist_sync.launch.on_rank JOB_DIR [--record-segments]``.

Calls the function from the job directory and leaves its outcome there. A failure is recorded
and then handed to ``sys.excepthook`` as if uncaught (the traceback starts at the user's
function), so that dist_sync, if the function initialised it, tells the other ranks why; the
rank exits non-zero and the launcher ends the job.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import List, Optional

from .mpi import world_rank
from .payload import (RECORD_SEGMENTS, Outcome, failure, read_payload, user_traceback,
                      write_outcome, write_segments)


# How often a rank looks for the segments MPI made, until it finds them.
_SEGMENT_POLL_SECONDS = 0.05


def _record_segments(job_dir: str, rank: int, done: threading.Event) -> None:
    """Waits (while the function runs) until MPI has mapped its shared memory, then records it
    for the launcher: MPICH's mpiexec leaves it behind when a rank dies (Note [Ending a job])."""
    from .job import mapped_shared_memory
    while not done.wait(_SEGMENT_POLL_SECONDS):
        found = mapped_shared_memory(os.getpid())
        if found:
            write_segments(job_dir, rank, sorted(found))
            return


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2) or argv[1:] not in ([], [RECORD_SEGMENTS]):
        raise SystemExit("usage: python -m dist_sync.launch.on_rank JOB_DIR "
                         f"[{RECORD_SEGMENTS}] (started by dist_sync.run, not by hand)")
    job_dir = argv[0]
    rank = world_rank()
    if rank is None:
        raise SystemExit("dist_sync.launch.on_rank must be started by an MPI launcher "
                         "(no OMPI_COMM_WORLD_RANK, PMIX_RANK or PMI_RANK in the environment)")
    done = threading.Event()
    if RECORD_SEGMENTS in argv:
        threading.Thread(target=_record_segments, args=(job_dir, rank, done),
                         name="dist_sync-segments", daemon=True).start()
    try:
        fn, args, kwargs = read_payload(job_dir)
        value = fn(*args, **kwargs)
    except BaseException as error:
        done.set()
        write_outcome(job_dir, failure(rank, error, skip_frames=1))
        sys.excepthook(type(error), error, user_traceback(error, 1))
        raise SystemExit(1) from None
    done.set()
    write_outcome(job_dir, Outcome(rank, True, value))


if __name__ == "__main__":
    main()
