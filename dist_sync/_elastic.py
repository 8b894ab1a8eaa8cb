"""Elastic training's framework-neutral half: the run loop, the state objects' protocol, and
the reset that rebuilds dist_sync over the surviving ranks.

Launched with ``mpirun --with-ft ulfm`` (Open MPI's User-Level Failure Mitigation), a rank that
dies does not end the job: every survivor's pending operation fails with
:class:`RanksLostError` (Horovod's ``HorovodInternalError``), :func:`run` restores the state's
last commit, the engine is rebuilt over the survivors (Note [Rebuilding the engine over the
survivors] in csrc/python/session.cc), the state is broadcast from the new rank 0, the reset
callbacks run, and the wrapped function is called again with ``size()`` smaller. Below
``DIST_SYNC_ELASTIC_MIN_NP`` ranks every survivor ends with an error instead.
"""
from __future__ import annotations

import copy
import functools
import logging
import time
from typing import Any, Callable, Dict, List, Optional, TypeVar

from . import _core
from . import _objects
from . import _process_sets
from . import _session
from ._session import DistSyncError, RanksLostError

logger = logging.getLogger("dist_sync")

# Horovod's names for the two ways its run loop is interrupted.
HorovodInternalError = RanksLostError


class HostsUpdatedInterrupt(RuntimeError):
    """Horovod raises this from ``commit()``/``check_host_updates()`` when its launcher added or
    removed hosts. dist_sync learns of lost ranks only through :class:`RanksLostError` and adds
    none, so it never raises this; the name exists so code that catches it runs unchanged."""

    def __init__(self, skip_sync: bool = False) -> None:
        super().__init__("the set of hosts changed")
        self.skip_sync = skip_sync


class State:
    """What an elastic run restores after losing a rank and broadcasts to the survivors.

    Subclasses implement :meth:`save` (keep a copy of the current values), :meth:`restore` (go
    back to that copy) and :meth:`sync` (make every rank hold rank 0's values).
    """

    def __init__(self) -> None:
        self._reset_callbacks: List[Callable[[], None]] = []

    def register_reset_callbacks(self, callbacks: List[Callable[[], None]]) -> None:
        """Functions called (in order, on every rank) after a reset, once the state has been
        synced: e.g. to scale the learning rate to the new ``size()``."""
        self._reset_callbacks.extend(callbacks)

    def on_reset(self) -> None:
        """Runs the reset callbacks (called by :func:`run`)."""
        for callback in self._reset_callbacks:
            callback()

    def commit(self) -> None:
        """Saves the current state as the one a reset returns to, then checks that no rank was
        lost meanwhile (:meth:`check_host_updates`). Costs one copy of the state: commit every
        few batches rather than every one if the state is large."""
        self.save()
        self.check_host_updates()

    def check_host_updates(self) -> None:
        """Raises :class:`RanksLostError` if a rank has been lost since the last reset, so a
        commit never records a step the other survivors may not have taken. Local: no
        communication."""
        if _core._elastic_peer_lost():
            raise RanksLostError("a rank was lost; the elastic run resets before the next commit")

    def save(self) -> None:
        raise NotImplementedError

    def restore(self) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        raise NotImplementedError


class ObjectState(State):
    """State made of picklable Python values, given as keyword arguments and read and written as
    attributes (``state.epoch += 1``). ``sync()`` broadcasts rank 0's values."""

    _SYNC_NAME = "elastic.object_state"

    def __init__(self, **values: Any) -> None:
        super().__init__()
        self._names = list(values)
        for name, value in values.items():
            setattr(self, name, value)
        self._saved: Dict[str, Any] = {}
        self.save()

    def _values(self) -> Dict[str, Any]:
        """The values as the data that is saved and broadcast."""
        return {name: getattr(self, name) for name in self._names}

    def _assign(self, values: Dict[str, Any]) -> None:
        """The inverse of :meth:`_values`."""
        for name, value in values.items():
            setattr(self, name, value)

    def save(self) -> None:
        self._saved = copy.deepcopy(self._values())

    def restore(self) -> None:
        self._assign(copy.deepcopy(self._saved))

    def _sync_values(self) -> None:
        if self._names:
            self._assign(_objects.broadcast_object(self._values(), root_rank=0,
                                                   name=self._SYNC_NAME))

    def sync(self) -> None:
        self._sync_values()
        self.save()


def enable() -> None:
    """Checks that this job can survive a lost rank (DistSyncError saying how to launch it
    otherwise) and makes a lost peer leave the job to the survivors."""
    _session.check_process()
    _core._elastic_enable()


def _min_np() -> int:
    return int(_session._active_settings.get("elastic_min_np", 1))


def reset(reason: str) -> int:
    """Collective over the surviving ranks: rebuilds dist_sync over them and returns the new
    ``size()``. Process sets other than the global one are gone (add them again in a reset
    callback). DistSyncError, on every survivor, if fewer than ``DIST_SYNC_ELASTIC_MIN_NP``
    remain."""
    with _session._state_lock, _process_sets._lock:
        old_size = _core.size()
        new_size = _core._elastic_reset(reason)
        # The old engine has stopped: nothing touches the memory of its dropped handles.
        _session._orphans.clear()
        _process_sets.reset()
        _process_sets.setup(None, None)
        _session._session += 1
        _session._name_counters.clear()
    logger.warning("dist_sync elastic: continuing on %d rank(s) instead of %d (this rank is now "
                   "rank %d)", new_size, old_size, _core.rank())
    if new_size < _min_np():
        raise DistSyncError(
            f"dist_sync elastic: only {new_size} rank(s) are left after losing rank(s), fewer "
            f"than DIST_SYNC_ELASTIC_MIN_NP={_min_np()}; ending the run on every survivor")
    return new_size


F = TypeVar("F", bound=Callable[..., Any])


def run(func: F) -> F:
    """Decorator: ``func(state, *args, **kwargs)`` runs until it returns, surviving lost ranks.

    Before the first call every rank takes rank 0's state (``state.sync()``). When an operation
    fails because a rank was lost, every survivor restores the last ``state.commit()``, dist_sync
    is rebuilt over the survivors (a new rank 0 if rank 0 was lost), the state is synced from
    the new rank 0, the reset callbacks run, and ``func`` is called again. Any other exception
    leaves ``run`` as it would leave ``func``. Needs ``mpirun --with-ft ulfm``; without it the
    first call raises DistSyncError saying so.
    """

    @functools.wraps(func)
    def wrapper(state: State, *args: Any, **kwargs: Any) -> Any:
        enable()
        if _core.size() < _min_np():
            raise DistSyncError(f"dist_sync elastic: started on {_core.size()} rank(s), fewer "
                                f"than DIST_SYNC_ELASTIC_MIN_NP={_min_np()}")
        # A rank lost before the run started (between init() and here) is one more reset.
        reset_reason: Optional[str] = \
            "a rank was lost before the elastic run started" if _core._elastic_peer_lost() else None
        while True:
            try:
                if reset_reason is not None:
                    started = time.monotonic()
                    reset(reset_reason)
                state.sync()
                if reset_reason is not None:
                    state.on_reset()
                    logger.info("dist_sync elastic: reset, sync and callbacks took %.3f s",
                                time.monotonic() - started)
                    reset_reason = None
                return func(state, *args, **kwargs)
            except Exception as error:  # noqa: BLE001 - see below
                # Lost ranks (also while resetting or syncing: shrink again); anything else,
                # including fewer than DIST_SYNC_ELASTIC_MIN_NP ranks left, ends the run. A
                # framework may wrap the RanksLostError (TensorFlow turns an exception inside a
                # tf.function into its own error type), so the engine is asked as well.
                if not (isinstance(error, RanksLostError) or _core._elastic_peer_lost()):
                    raise
                logger.warning("dist_sync elastic: %s; restoring the last commit", error)
                state.restore()
                reset_reason = f"a rank was lost: {error}"

    return wrapper  # type: ignore[return-value]
