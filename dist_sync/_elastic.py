"""Elastic training's framework-neutral half: the run loop, the state objects' protocol, and
the reset that rebuilds dist_sync over the surviving ranks.

Launched with ``mpirun --with-ft ulfm`` (Open MPI's User-Level Failure Mitigation), a rank that
dies does not end the job: every survivor's pending operation fails with
:class:`RanksLostError` (Horovod's ``HorovodInternalError``), :func:`run` restores the state's
last commit, the engine is rebuilt over the survivors (Note [Rebuilding the engine over the
survivors] in csrc/python/elastic.cc), the state is broadcast from the new rank 0, the reset
callbacks run, and the wrapped function is called again with ``size()`` smaller. Below
``DIST_SYNC_ELASTIC_MIN_NP`` ranks every survivor ends with an error instead. Survivors fewer
than ``DIST_SYNC_ELASTIC_MAX_NP`` spawn replacements and merge them in at a later commit
(dist_sync/_elastic_growth.py).
"""
from __future__ import annotations

import copy
import functools
import logging
import time
from typing import Any, Callable, Dict, List, Optional, TypeVar

from . import _core
from . import _elastic_growth as _growth
from . import _objects
from . import _session
from ._elastic_growth import HostsUpdatedInterrupt
from ._session import DistSyncError, RanksLostError

logger = logging.getLogger("dist_sync")

# Horovod's names for the two ways its run loop is interrupted.
HorovodInternalError = RanksLostError


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
        lost and no replacement is ready meanwhile (:meth:`check_host_updates`). Costs one copy
        of the state: commit every few batches rather than every one if the state is large."""
        self.save()
        self.check_host_updates()

    def check_host_updates(self) -> None:
        """Raises :class:`RanksLostError` if a rank has been lost since the last reset, so a
        commit never records a step the other survivors may not have taken, and
        :class:`HostsUpdatedInterrupt` on every rank once spawned replacements are ready to
        join. Local (no communication) unless replacements are being spawned; then one small
        allgather, so call it on every rank at the same step."""
        if _core._elastic_peer_lost():
            raise RanksLostError("a rank was lost; the elastic run resets before the next commit")
        if _growth.ready_to_grow():
            raise HostsUpdatedInterrupt()

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
    remain; otherwise replacements are spawned up to ``DIST_SYNC_ELASTIC_MAX_NP``."""
    old_size = _core.size()
    new_size = _growth.rebuild(_core._elastic_reset, reason)
    logger.warning("dist_sync elastic: continuing on %d rank(s) instead of %d (this rank is now "
                   "rank %d)", new_size, old_size, _core.rank())
    if new_size < _min_np():
        raise DistSyncError(
            f"dist_sync elastic: only {new_size} rank(s) are left after losing rank(s), fewer "
            f"than DIST_SYNC_ELASTIC_MIN_NP={_min_np()}; ending the run on every survivor")
    _growth.spawn_missing()
    return new_size


F = TypeVar("F", bound=Callable[..., Any])


def run(func: F) -> F:
    """Decorator: ``func(state, *args, **kwargs)`` runs until it returns, surviving lost ranks.

    Before the first call every rank takes rank 0's state (``state.sync()``). When an operation
    fails because a rank was lost, every survivor restores the last ``state.commit()``, dist_sync
    is rebuilt over the survivors (a new rank 0 if rank 0 was lost), the state is synced from
    the new rank 0, the reset callbacks run, and ``func`` is called again. Replacements spawned
    for lost ranks join at a later commit (:class:`HostsUpdatedInterrupt`): the job grows, the
    state is synced to them, the reset callbacks run (in the replacements too) and ``func`` is
    called again; in a replacement, ``run`` starts by taking the state. Replacements still
    starting when ``func`` returns join then, and ``func`` is called once more with the final
    state. Any other exception leaves ``run`` as it would leave ``func``. Needs ``mpirun
    --with-ft ulfm``; without it the first call raises DistSyncError saying so.
    """

    @functools.wraps(func)
    def wrapper(state: State, *args: Any, **kwargs: Any) -> Any:
        enable()
        joining = _growth.joining()
        if not joining:
            if _core.size() < _min_np():
                raise DistSyncError(f"dist_sync elastic: started on {_core.size()} rank(s), "
                                    f"fewer than DIST_SYNC_ELASTIC_MIN_NP={_min_np()}")
            _growth.start_target()
        # A rank lost before the run started (between init() and here) is one more reset.
        rebuild: Optional[Callable[[str], int]] = None
        reason = ""
        if _core._elastic_peer_lost():
            rebuild, reason = reset, "a rank was lost before the elastic run started"
        while True:
            try:
                started = time.monotonic()
                if joining:
                    _growth.share_target()
                elif rebuild is not None:
                    rebuild(reason)
                state.sync()
                # A replacement runs them too: rank 0's synced values (a learning rate, say)
                # may be for the size before the growth.
                if rebuild is not None or joining:
                    state.on_reset()
                    logger.info("dist_sync elastic: rebuild, sync and callbacks took %.3f s",
                                time.monotonic() - started)
                joining, rebuild = False, None
                result = func(state, *args, **kwargs)
                if _growth.ready_at_end(_init_timeout()):
                    rebuild, reason = _growth.grow, "replacements joined as the run ended"
                    continue
                return result
            except HostsUpdatedInterrupt:
                # Raised after the commit was saved: the state stands, nothing to restore.
                joining, rebuild, reason = False, _growth.grow, "replacements joined"
            except Exception as error:  # noqa: BLE001 - see below
                # Lost ranks (also while resetting or syncing: shrink again); anything else,
                # including fewer than DIST_SYNC_ELASTIC_MIN_NP ranks left, ends the run. A
                # framework may wrap the RanksLostError (TensorFlow turns an exception inside a
                # tf.function into its own error type), so the engine is asked as well.
                if not (isinstance(error, RanksLostError) or _core._elastic_peer_lost()):
                    raise
                logger.warning("dist_sync elastic: %s; restoring the last commit", error)
                state.restore()
                joining, rebuild, reason = False, reset, f"a rank was lost: {error}"

    return wrapper  # type: ignore[return-value]


def _init_timeout() -> float:
    return float(_session._active_settings.get("init_timeout_seconds", 300.0))
