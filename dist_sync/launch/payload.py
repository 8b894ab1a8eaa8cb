"""The files through which dist_sync.run hands a function to its ranks and gets results back.

A job directory holds ``payload.pkl`` (the caller's ``sys.path`` and the cloudpickled call) and,
once the ranks are done, one ``result.<rank>.pkl`` per rank: the cloudpickled return value, or
what the rank raised (its type, message, formatted traceback, the exception itself where it
can be pickled, and when it was raised). Under MPICH each rank also leaves
``segments.<rank>``, the MPI shared-memory files it mapped (Note [Ending a job]).
"""
from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

PAYLOAD = "payload.pkl"
# dist_sync.launch.on_rank's flag: record MPI's shared-memory files here (needed under MPICH).
RECORD_SEGMENTS = "--record-segments"


def _cloudpickle() -> Any:
    try:
        import cloudpickle
    except ImportError as error:
        raise ImportError("dist_sync.run needs cloudpickle to send functions to the ranks "
                          "(pip install cloudpickle)") from error
    return cloudpickle


def _write_atomically(path: str, data: bytes) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


@dataclass
class Outcome:
    """What one rank's call came to: a value, or the exception it raised."""

    rank: int
    ok: bool
    value: Any = None
    error_type: str = ""          # qualified name, e.g. "ValueError", "dist_sync.DistSyncError"
    error_message: str = ""
    traceback: str = ""           # formatted on the rank, frames of the user's code only
    exception: Optional[BaseException] = None   # the exception itself, where it unpickles
    failed_at: float = 0.0        # time.time() on the rank, to tell the first failure


def user_traceback(error: BaseException, skip_frames: int) -> Any:
    """``error``'s traceback without its first ``skip_frames`` frames (the launcher's own)."""
    tb = error.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    return tb


def failure(rank: int, error: BaseException, skip_frames: int = 0) -> Outcome:
    """An Outcome for ``error`` raised on ``rank``, its traceback without the first
    ``skip_frames`` frames."""
    tb = user_traceback(error, skip_frames)
    text = "".join(traceback.format_exception(type(error), error, tb))
    kind = type(error)
    plain = kind.__module__ in ("builtins", "__main__") or kind.__module__.startswith("dist_sync")
    name = kind.__qualname__ if plain else f"{kind.__module__}.{kind.__qualname__}"
    return Outcome(rank, False, error_type=name, error_message=str(error), traceback=text,
                   exception=error, failed_at=time.time())


def encode_outcome(outcome: Outcome) -> bytes:
    """The outcome as bytes; a value or exception that cannot be pickled becomes a failure
    that says so (the traceback text always survives)."""
    cloudpickle = _cloudpickle()
    fields = dict(outcome.__dict__)
    if outcome.ok:
        try:
            fields["value"] = cloudpickle.dumps(outcome.value)
        except Exception as error:  # noqa: BLE001 - any pickling error is reported
            return encode_outcome(Outcome(
                outcome.rank, False, error_type=type(error).__name__,
                error_message=f"the return value of rank {outcome.rank} "
                              f"({type(outcome.value).__name__}) cannot be pickled: {error}",
                traceback=f"{type(error).__name__}: the return value of rank {outcome.rank} "
                          f"({type(outcome.value).__name__}) cannot be pickled: {error}\n",
                failed_at=time.time()))
    else:
        try:
            fields["exception"] = cloudpickle.dumps(outcome.exception)
            pickle.loads(fields["exception"])  # some exceptions pickle but do not unpickle
        except Exception:  # noqa: BLE001 - the text is enough
            fields["exception"] = None
    return pickle.dumps(fields)


def decode_outcome(data: bytes) -> Outcome:
    fields = pickle.loads(data)
    for key in ("value", "exception"):
        if fields.get(key) is not None:
            fields[key] = pickle.loads(fields[key])
    return Outcome(**fields)


def write_payload(job_dir: str, fn: Callable[..., Any], args: Sequence[Any],
                  kwargs: Dict[str, Any]) -> None:
    """Writes the call the ranks are to make."""
    cloudpickle = _cloudpickle()
    try:
        call = cloudpickle.dumps((fn, tuple(args), dict(kwargs)))
    except Exception as error:  # noqa: BLE001 - say which part could not be sent
        raise TypeError(f"dist_sync.run cannot send {getattr(fn, '__name__', fn)!r} and its "
                        f"arguments to the ranks: {error}") from error
    _write_atomically(os.path.join(job_dir, PAYLOAD),
                      pickle.dumps({"sys_path": list(sys.path), "call": call}))


def read_payload(job_dir: str) -> Tuple[Callable[..., Any], Tuple[Any, ...], Dict[str, Any]]:
    """The call, after putting the caller's import path in front of this process's, so that
    functions pickled by reference import as they did in the caller."""
    path = os.path.join(job_dir, PAYLOAD)
    try:
        with open(path, "rb") as handle:
            payload = pickle.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} does not exist on this host: the ranks must see the directory the "
            f"caller wrote; with hosts on other machines, pass shared_dir= a directory that "
            f"every host mounts") from None
    sys.path[:] = payload["sys_path"] + [p for p in sys.path if p not in payload["sys_path"]]
    return pickle.loads(payload["call"])


def write_segments(job_dir: str, rank: int, paths: Sequence[str]) -> None:
    """Records the MPI shared-memory files a rank has mapped (Note [Ending a job])."""
    _write_atomically(os.path.join(job_dir, f"segments.{rank}"), "\n".join(paths).encode())


def read_segments(job_dir: str) -> List[str]:
    """Every shared-memory file the ranks recorded."""
    paths: List[str] = []
    for name in os.listdir(job_dir) if os.path.isdir(job_dir) else ():
        if name.startswith("segments.") and not name.endswith(".tmp"):
            with open(os.path.join(job_dir, name)) as handle:
                paths += [line for line in handle.read().splitlines() if line]
    return paths


def write_outcome(job_dir: str, outcome: Outcome) -> None:
    _write_atomically(os.path.join(job_dir, f"result.{outcome.rank}.pkl"),
                      encode_outcome(outcome))


def read_outcomes(job_dir: str, size: int) -> List[Optional[Outcome]]:
    """Every rank's outcome, None for a rank that left none (killed, or never started)."""
    outcomes: List[Optional[Outcome]] = []
    for rank in range(size):
        path = os.path.join(job_dir, f"result.{rank}.pkl")
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            outcomes.append(None)
            continue
        try:
            outcomes.append(decode_outcome(data))
        except Exception as error:  # noqa: BLE001 - e.g. a class the caller cannot import
            outcomes.append(Outcome(rank, False, error_type=type(error).__name__,
                                    error_message=f"its result cannot be unpickled here: "
                                                  f"{error}",
                                    traceback=f"the result of rank {rank} cannot be unpickled "
                                              f"in the caller: {error!r}\n"))
    return outcomes
