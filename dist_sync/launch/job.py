"""A running MPI launcher process and every process it started, ended together.

Note [Ending a job]
The launcher runs in a session of its own, so the caller's Ctrl-C reaches only the caller, who
then ends the job in order. First it notes the job's processes (the launcher's session, where
Open MPI's ranks are, and the launcher's descendants, since Hydra gives its proxies and ranks
sessions of their own) and the MPI shared-memory files they have mapped. Then SIGTERM to the
launcher, which passes it to every rank, escalates to SIGKILL for ranks that ignore it and,
under Open MPI, removes the job's segments (``/dev/shm/sm_segment.*``). After at most a grace
period every noted process still alive is killed and every noted file still there removed.

MPICH's mpiexec kills its ranks without removing its segment (``/dev/shm/mpich_shm_*``), also
when a rank fails on its own. So under MPICH the ranks of dist_sync.run record their segments
in the job directory as soon as MPI has made them (dist_sync.launch.on_rank), and after a
failed run, when the launcher is gone, the recorded files still there are removed.

The launcher is also told to receive SIGTERM when the caller dies (Linux), so a killed notebook
kernel leaves no process of its job behind; with the caller gone, nobody removes what the
launcher leaves in /dev/shm (Open MPI's, whose output then has no reader, sometimes does).
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, TextIO, Tuple

from .output import OutputPump

log = logging.getLogger("dist_sync.launch")

# How long the launcher gets to end its ranks after SIGTERM before everything is killed. Open
# MPI's mpirun needs well under a second; a rank stuck in uninterruptible I/O may need more.
TERMINATE_GRACE_SECONDS = 10.0
# How long output still arriving after the launcher exited is waited for (a rank that left a
# child process holding the pipe open must not keep the caller waiting).
_DRAIN_SECONDS = 5.0
# Shared-memory files of MPI transports, the only ones ever removed.
_MPI_SHM_PREFIXES = ("sm_segment.", "vader_segment.", "mpich_shm_", "shm_segment.")


def _parent_death_signal() -> Optional[Callable[[], None]]:
    """A preexec_fn that makes the child receive SIGTERM when the caller dies (Linux). prctl
    is looked up here, in the parent: a child forked from a threaded process must not load
    libraries before exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_signal() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_signal


class Job:
    """Starts ``argv`` (a launcher command line) with its output streamed through an
    OutputPump; :meth:`wait` returns its exit code and ends the job on any interruption."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], flavor: str,
                 stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None,
                 prefix: bool = True, cwd: Optional[str] = None) -> None:
        self.pump = OutputPump(flavor, stdout or sys.stdout, stderr or sys.stderr, prefix)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=out_write, stderr=err_write, start_new_session=True,
                preexec_fn=_parent_death_signal())
        except BaseException:
            for fd in (out_read, err_read):
                os.close(fd)
            raise
        finally:
            os.close(out_write)
            os.close(err_write)
        self.pump.start(out_read, err_read)
        log.debug("started %s (pid %d)", " ".join(argv), self.process.pid)
        # Where the ranks recorded their segments, if they did (Note [Ending a job]).
        self.recorded_segments: Callable[[], Iterable[str]] = lambda: ()

    def wait(self, timeout: Optional[float] = None) -> int:
        """The launcher's exit code once it and its output are done. On a timeout the job is
        ended and TimeoutError raised; on KeyboardInterrupt (or any other exception while
        waiting) the job is ended and the exception re-raised."""
        try:
            # A blocking wait returns the moment the launcher exits; Ctrl-C interrupts it.
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.terminate()
            raise TimeoutError(f"the job did not finish within {timeout:g} s") from None
        except BaseException:
            self.terminate()
            raise
        if self.process.returncode != 0:
            self.remove_shared_memory(self.recorded_segments())
        self.pump.join(_DRAIN_SECONDS)
        return self.process.returncode

    def terminate(self, grace: float = TERMINATE_GRACE_SECONDS) -> None:
        """Ends the job (Note [Ending a job]); returns once nothing of it is left."""
        # Taken first: once the launcher is gone, its ranks can no longer be told by their
        # parent, and MPICH's mpiexec kills its ranks without removing their segment.
        processes = self.processes()
        shared_memory = self.segments_now(processes) | set(self.recorded_segments())
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("the MPI launcher did not end its ranks within %g s of SIGTERM; "
                            "killing the job's processes", grace)
            except KeyboardInterrupt:
                pass  # a second Ctrl-C: stop waiting, kill
        processes.update(self.processes())
        for pid, started in processes.items():
            if _start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.process.poll() is None:
            self.process.wait()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(
                _start_time(pid) == started for pid, started in processes.items()):
            time.sleep(0.05)  # killed processes are reaped by their parents or by init
        self.remove_shared_memory(shared_memory | set(self.recorded_segments()))
        self.pump.join(_DRAIN_SECONDS)

    def segments_now(self, processes: Optional[Iterable[int]] = None) -> Set[str]:
        """The MPI shared-memory files the job's processes have mapped now."""
        found: Set[str] = set()
        for pid in self.processes() if processes is None else processes:
            found |= mapped_shared_memory(pid)
        return found

    def processes(self) -> Dict[int, int]:
        """The job's live processes now, with their start times: the launcher's session (Open
        MPI's ranks) and its descendants (Hydra puts its proxies and ranks in sessions of
        their own)."""
        table = _process_table()
        job = {pid for pid, (_, session, _) in table.items() if session == self.process.pid}
        job.add(self.process.pid)
        children: Dict[int, List[int]] = {}
        for pid, (parent, _, _) in table.items():
            children.setdefault(parent, []).append(pid)
        pending = list(job)
        while pending:
            for child in children.get(pending.pop(), []):
                if child not in job:
                    job.add(child)
                    pending.append(child)
        return {pid: table[pid][2] for pid in job if pid in table}

    def remove_shared_memory(self, paths: Iterable[str]) -> None:
        """Removes the job's leftover MPI shared-memory files once its launcher is gone."""
        if self.process.poll() is None:
            return
        for path in paths:
            try:
                os.unlink(path)
                log.debug("removed %s, left behind by the ended job", path)
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("could not remove %s left by the ended job: %s", path, error)


def _process_table() -> Dict[int, Tuple[int, int, int]]:
    """pid -> (parent pid, session id, start time) of every live (not zombie) process, from
    /proc; empty where there is none."""
    table: Dict[int, Tuple[int, int, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and fields[0] != "Z":
                table[int(entry)] = (int(fields[1]), int(fields[3]), int(fields[19]))
    return table


def _stat_fields(pid: int) -> Optional[List[str]]:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, session...)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields if len(fields) > 19 else None


def _start_time(pid: int) -> Optional[int]:
    """When a live process started (tells it from a later one that reused its pid)."""
    fields = _stat_fields(pid)
    return None if fields is None or fields[0] == "Z" else int(fields[19])


def mapped_shared_memory(pid: int) -> Set[str]:
    """The MPI transports' /dev/shm files a process has mapped."""
    found = set()
    try:
        with open(f"/proc/{pid}/maps") as handle:
            for line in handle:
                path = line.rstrip("\n").split(None, 5)[-1] if line.count(" ") >= 5 else ""
                if (path.startswith("/dev/shm/") and not path.endswith(" (deleted)")
                        and path[len("/dev/shm/"):].startswith(_MPI_SHM_PREFIXES)):
                    found.add(path)
    except OSError:
        pass
    return found

