"""What the caller of dist_sync.run or dist_sync.dask.run sees when a job fails."""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

from .payload import Outcome

# Errors that a rank raises because another rank failed first (its peers' collectives fail
# with the reason, Note [Telling peers why a rank left] in dist_sync/_session.py).
_CONSEQUENCES = ("DistSyncError",)


class JobError(RuntimeError):
    """A job started by dist_sync.run or dist_sync.dask.run failed.

    Attributes:
        exit_code: the MPI launcher's exit code (None for dist_sync.dask.run).
        output_tail: the job's last lines of output, as streamed.
    """

    def __init__(self, message: str, exit_code: Optional[int] = None,
                 output_tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.output_tail = list(output_tail)


class RankError(JobError):
    """A rank's function raised. The message carries that rank's traceback; the exception it
    raised is this one's ``__cause__`` where it could be sent back.

    Attributes:
        rank: the failing rank (the first to fail, where several did).
        size: the number of ranks.
        error_type: the qualified name of the exception the rank raised.
        remote_traceback: its traceback, formatted on the rank.
    """

    def __init__(self, message: str, rank: int, size: int, error_type: str,
                 remote_traceback: str, exit_code: Optional[int] = None,
                 output_tail: Sequence[str] = ()) -> None:
        super().__init__(message, exit_code, output_tail)
        self.rank = rank
        self.size = size
        self.error_type = error_type
        self.remote_traceback = remote_traceback


def first_failure(outcomes: Iterable[Optional[Outcome]]) -> Optional[Outcome]:
    """The failure that started it: the earliest one that is not a consequence of another
    rank's failure, else the earliest of them all."""
    failed = [o for o in outcomes if o is not None and not o.ok]
    if not failed:
        return None
    causes = [o for o in failed if o.error_type.rsplit(".", 1)[-1] not in _CONSEQUENCES]
    return min(causes or failed, key=lambda o: (o.failed_at, o.rank))


def raise_for_outcomes(outcomes: List[Optional[Outcome]], what: str,
                       exit_code: Optional[int] = None, tail: Sequence[str] = (),
                       missing_reason: str = "left no result") -> List:
    """Every rank's value, or the error that says which rank failed and how."""
    size = len(outcomes)
    if all(o is not None and o.ok for o in outcomes) and not exit_code:
        return [o.value for o in outcomes]  # type: ignore[union-attr]
    cause = first_failure(outcomes)
    others = []
    for rank, outcome in enumerate(outcomes):
        if cause is not None and rank == cause.rank:
            continue
        if outcome is None:
            others.append(f"rank {rank} {missing_reason}")
        elif not outcome.ok:
            first_line = (outcome.error_message or "").splitlines()[:1]
            others.append(f"rank {rank} raised {outcome.error_type}"
                          + (f": {first_line[0]}" if first_line else ""))
    if cause is None:
        exit_text = f" (launcher exit code {exit_code})" if exit_code is not None else ""
        lines = "\n".join(tail[-40:]) if tail else "(no output)"
        detail = "; ".join(others) if others else "no rank reported a failure"
        raise JobError(f"{what} failed{exit_text}: {detail}. Last output:\n{lines}",
                       exit_code, tail)
    message = f"rank {cause.rank} of {size} failed in {what}:\n{cause.traceback.rstrip()}"
    if others:
        message += "\nThe other ranks: " + "; ".join(others) + "."
    error = RankError(message, cause.rank, size, cause.error_type, cause.traceback,
                      exit_code, tail)
    if cause.exception is not None:
        raise error from cause.exception
    raise error
