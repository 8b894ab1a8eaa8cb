"""Elastic training's growth: replacements for lost ranks, spawned and merged into the job.

After a reset leaves fewer ranks than the run's target (``DIST_SYNC_ELASTIC_MAX_NP``; by
default the size the run started with), the survivors start the missing processes with
``MPI_Comm_spawn`` (the same interpreter and command line as their own) on a thread of the
engine's, and keep training. The replacements import, call ``init()`` and wait there. Once every
survivor has seen the spawn complete, at a ``commit()`` (or ``check_host_updates()``), they raise
:class:`HostsUpdatedInterrupt`; :func:`dist_sync._elastic.run` catches it, rebuilds the engine
over survivors and replacements together (:func:`grow`), syncs the state from rank 0 (the
replacements' first act inside ``run``), runs the reset callbacks and calls the training
function again at the larger size. Note [Growing back to the launched size] in
csrc/comm/mpi_spawn.h has the MPI side.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import time
from typing import Callable, List, Optional

import numpy as np

from . import _builders, _core, _objects, _process_sets, _session
from ._numpy import NUMPY
from ._session import synchronize

logger = logging.getLogger("dist_sync")

# _core._elastic_spawn_state()
_NONE, _RUNNING, _READY, _FAILED = 0, 1, 2, 3


class HostsUpdatedInterrupt(RuntimeError):
    """Raised by ``commit()``/``check_host_updates()`` on every rank when replacements for lost
    ranks are ready to join (Horovod's name for a change of hosts). :func:`run` catches it:
    the commit just made stands, the job grows, and the state is synced to the newcomers."""

    def __init__(self, skip_sync: bool = False) -> None:
        super().__init__("replacements for lost ranks are ready to join")
        self.skip_sync = skip_sync


# The size the run grows back to; None until a run starts (a replacement learns it from rank 0).
_target: Optional[int] = None
# This process was spawned and has not yet taken its first state inside run().
_joining_pending = True
# The command line of the replacements being spawned, for messages.
_command = ""


def start_target() -> None:
    """Fixes the run's target size at the start of the first elastic run (launched ranks; no
    communication: rank 0's is the one that counts, see :func:`_missing`)."""
    global _target
    if _target is None:
        _target = int(_session._active_settings.get("elastic_max_np", 0)) or _core.size()


def joining() -> bool:
    """True once, in a replacement's first elastic run: it starts by receiving the state."""
    global _joining_pending
    if _core._elastic_joined() and _joining_pending:
        _joining_pending = False
        return True
    return False


def share_target() -> None:
    """Collective: every rank takes rank 0's target size (the replacements do not know it)."""
    global _target
    _target = int(_objects.broadcast_object(_target, root_rank=0, name="elastic.target_size"))


def discovered_slots(script: str, timeout: float = 60.0) -> int:
    """The slots `script` lists (lines ``host:slots`` or ``host``); ValueError saying what is
    wrong with its output or its exit."""
    try:
        done = subprocess.run([script], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ValueError(f"could not run it: {error}") from None
    if done.returncode != 0:
        raise ValueError(f"it exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    slots: List[int] = []
    for line in done.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        host, _, count = line.partition(":")
        if not host or (count and not (count.isdigit() and int(count) > 0)):
            raise ValueError(f"a line is not `host:slots` (slots a positive integer): {line!r}")
        slots.append(int(count) if count else 1)
    return sum(slots)


def _missing() -> int:
    """Collective: how many replacements to spawn, rank 0's count on every rank (so all take
    part in the spawn or none does, whatever their own settings say)."""
    missing = (_target or 0) - _core.size()
    script = str(_session._active_settings.get("elastic_host_discovery_script", ""))
    if missing > 0 and script and _core.rank() == 0:
        try:
            missing = min(missing, discovered_slots(script) - _core.size())
        except ValueError as error:
            logger.warning("dist_sync elastic: DIST_SYNC_ELASTIC_HOST_DISCOVERY_SCRIPT=%s: %s; "
                           "no replacements are spawned", script, error)
            missing = 0
    return int(_objects.broadcast_object(missing, root_rank=0, name="elastic.spawn_count"))


def spawn_missing() -> None:
    """Collective over the survivors after a reset: spawns the ranks missing up to the target
    (and the host discovery script's slots), in the background. A launcher that cannot spawn
    is warned about, not fatal."""
    missing = _missing()
    if missing <= 0:
        return
    global _command
    command, args = sys.executable, list(sys.orig_argv[1:])
    _command = " ".join([command] + args)
    _core._elastic_spawn(command, args, missing)
    logger.warning("dist_sync elastic: spawning %d replacement(s) to grow back to %d rank(s): %s",
                   missing, _target, _command)


def _gathered_states() -> np.ndarray:
    mine = np.array([_core._elastic_spawn_state()], dtype=np.int32)
    return synchronize(_builders.allgather(NUMPY, mine, "elastic.spawn_state",
                                           what="check_host_updates"))


# Open MPI's MPI_Comm_spawn says only "unknown error" when the job has no free slot (a dead
# rank's slot is not given back), the likeliest cause.
_SLOTS_HINT = ("mpirun needs free slots for replacements: launch with fewer ranks than slots, "
               "or with --oversubscribe")


def _give_up(why: str) -> None:
    logger.warning("dist_sync elastic: no replacements join (%s); training continues on %d "
                   "rank(s)", why, _core.size())
    _core._elastic_spawn_abandon()


def ready_to_grow() -> bool:
    """Collective while replacements are being spawned (every rank has a spawn under way
    or none): True when every rank's spawn is complete. A failed spawn is given up on every
    rank. Without a spawn under way: False, no communication."""
    if _core._elastic_spawn_state() == _NONE:
        return False
    states = _gathered_states()
    if (states == _READY).all():
        return True
    if (states == _FAILED).any():
        error = _core._elastic_spawn_error() or "it failed on another rank"
        _give_up(f"spawning `{_command}` failed: {error}; {_SLOTS_HINT}")
    return False


def ready_at_end(timeout: float) -> bool:
    """Collective at the end of a run with a spawn under way: waits (at most `timeout` s) for
    it, then True if every rank's is complete; otherwise it is given up."""
    if _core._elastic_spawn_state() == _NONE:
        return False
    deadline = time.monotonic() + timeout
    if _core._elastic_spawn_state() == _RUNNING:
        logger.warning("dist_sync elastic: waiting up to %g s (DIST_SYNC_INIT_TIMEOUT_SECONDS) "
                       "for the replacements still starting to join", timeout)
    while _core._elastic_spawn_state() == _RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    states = _gathered_states()
    if (states == _READY).all():
        return True
    error = _core._elastic_spawn_error()
    _give_up(f"spawning `{_command}` failed: {error}; {_SLOTS_HINT}" if error else
             f"the replacements did not reach init() within {timeout:g} s "
             "(DIST_SYNC_INIT_TIMEOUT_SECONDS)")
    return False


def rebuild(core_call: Callable[[str], int], reason: str) -> int:
    """Runs `core_call(reason)` (the binding's reset or grow, which build a new engine) and
    brings the front end's per-engine state along; returns the new size."""
    with _session._state_lock, _process_sets._lock:
        new_size = core_call(reason)
        # The old engine has stopped: nothing touches the memory of its dropped handles.
        _session._orphans.clear()
        _process_sets.reset()
        _process_sets.setup(None, None)
        _session._session += 1
        _session._name_counters.clear()
    return new_size


def grow(reason: str) -> int:
    """Collective over every rank and the replacements: rebuilds dist_sync over them all."""
    old_size = _core.size()
    new_size = rebuild(_core._elastic_grow, reason)
    share_target()
    logger.warning("dist_sync elastic: %d replacement(s) joined; continuing on %d rank(s) (this "
                   "rank is now rank %d)", new_size - old_size, new_size, _core.rank())
    return new_size
