"""The session, handles and submission layer of the front end: init/shutdown, the topology
queries, Handle/poll/synchronize, and the one place that hands operations to the engine.

Knows no framework: the op builders (dist_sync/_builders.py) give it engine-ready tensor specs
(through a framework's array adapter) and the objects to keep alive until the op completes.
"""
from __future__ import annotations

import atexit
import collections
import itertools
import logging
import os
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import _core
from . import _process_sets
from . import config as _config

DistSyncError = _core.DistSyncError
logger = logging.getLogger("dist_sync")


class RanksLostError(DistSyncError):
    """An operation failed because a rank was lost (it died, or its host did) while the job runs
    with MPI's fault tolerance (``mpirun --with-ft ulfm``). Inside an elastic run
    (``dist_sync.torch.elastic.run``) the survivors restore the last commit and carry on without
    it; Horovod calls this error ``HorovodInternalError``."""


def _as_ranks_lost(error: DistSyncError) -> DistSyncError:
    """`error` as a RanksLostError when a lost peer is what caused it (only ever the case under
    ULFM: without it mpirun ends the job when a rank dies)."""
    if not isinstance(error, RanksLostError) and _core._elastic_peer_lost():
        return RanksLostError(str(error))
    return error

# Operation kinds and device kinds, as the engine exports them (csrc/engine/op_traits.h).
OpType = _core.OpType
ALLREDUCE, BROADCAST, ALLGATHER, ALLTOALL, REDUCESCATTER, BARRIER, JOIN = (
    OpType.ALLREDUCE, OpType.BROADCAST, OpType.ALLGATHER, OpType.ALLTOALL, OpType.REDUCESCATTER,
    OpType.BARRIER, OpType.JOIN)
DEVICE_CPU, DEVICE_CUDA = _core.DeviceKind.CPU, _core.DeviceKind.CUDA

# (name, input, output, dtype code, shape) of one tensor handed to the engine; input and output
# are numpy arrays or raw addresses (0: no output). Note [Submission cost] in
# csrc/python/operations.cc.
TensorSpec = Tuple[str, Any, Any, int, Sequence[int]]
RawResult = Tuple[Any, List[int], List[int], int]

_state_lock = threading.Lock()
_session = 0            # increments at every init(), so stale handles are recognised
_init_pid: Optional[int] = None
_atexit_registered = False
# True in a process forked after init(): set by a fork hook, so the check every call makes is a
# flag test rather than a getpid() system call.
_forked_child = False


def _after_fork_in_child() -> None:
    global _forked_child
    if _init_pid is not None:
        _forked_child = True


os.register_at_fork(after_in_child=_after_fork_in_child)
_name_counters: Dict[Tuple[int, int], itertools.count] = {}
_active_settings: Dict[str, Any] = {}  # this rank's resolved settings of the running session


# Note [Handles own their operation's memory]
# The engine reads and writes raw pointers; the Python objects behind them (inputs, outputs,
# staging blocks) are kept alive by the operation's Handle. A user may drop a handle without
# synchronizing it (fire and forget, or an exception between submission and synchronize()).
# The operation is still in flight, so the handle's __del__ hands its memory to the orphan
# queue instead of letting it go: orphans are reaped (their result collected and discarded,
# their finish step run so in-place and staged results still land) on the next submission and
# at shutdown, when the engine has stopped touching any memory. Only then are the objects freed.
_orphans: "collections.deque[Tuple[Optional[int], Optional[Deferred], Any, Callable[[RawResult], Any]]]" = \
    collections.deque()

# A handle is synchronized once: the check and the claim happen under this lock, so two threads
# synchronizing one handle cannot both wait on (and both consume) the engine's result.
_claim_lock = threading.Lock()


class Handle:
    """An operation in flight. Pass it to :func:`synchronize` (or :func:`poll`) exactly once.

    Holds the operation's input and output memory alive until it completes, even if the handle
    itself is dropped (Note [Handles own their operation's memory]). A handle made by
    :func:`defer` has no engine id until its :class:`Deferred` submission has happened.
    """

    __slots__ = ("_id", "_session", "_keepalive", "_finish", "_claimed", "_done", "_result",
                 "_deferred", "kind", "name")

    def __init__(self, handle_id: Optional[int], keepalive: Any,
                 finish: Callable[[RawResult], Any], kind: int, name: str,
                 deferred: Optional["Deferred"] = None) -> None:
        self._id = handle_id
        self._session = _session
        self._keepalive = keepalive
        self._finish = finish
        self._claimed = False  # synchronize() has started (under _claim_lock)
        self._done = False
        self._result: Any = None
        self._deferred = deferred
        self.kind = kind
        self.name = name

    def __repr__(self) -> str:
        state = "synchronized" if self._done else "pending"
        return f"<dist_sync.Handle {OpType(self.kind).name.lower()} {self.name!r} {state}>"

    def __del__(self) -> None:
        try:
            if not self._claimed and self._session == _session:
                _orphans.append((self._id, self._deferred, self._keepalive, self._finish))
        except Exception:  # noqa: BLE001 - interpreter teardown: module globals may be gone
            pass


def _reap_orphans() -> None:
    """Collects the results of dropped handles whose operations have completed and frees their
    memory (Note [Handles own their operation's memory])."""
    for _ in range(len(_orphans)):
        try:
            orphan = _orphans.popleft()
        except IndexError:  # another thread reaped meanwhile
            return
        handle_id, deferred, keepalive, finish = orphan
        try:
            if handle_id is None:
                if not deferred.ready():
                    _orphans.append(orphan)
                    continue
                handle_id = deferred.wait()
            if not _core.poll(handle_id):
                _orphans.append((handle_id, deferred, keepalive, finish))
                continue
            finish(_core.wait(handle_id))
        except Exception as error:  # noqa: BLE001 - nobody is left to receive it
            logger.debug("dropped handle %s ended with %s: %s", handle_id,
                         type(error).__name__, error)


class Deferred:
    """The engine submission of an operation whose name and options were fixed at the user's
    call but whose tensors reach the engine later, from another thread, once their memory is
    ready (host staging of CUDA tensors: Note [Host staging] in dist_sync/torch/_staging.py).

    Exactly one of :meth:`submit` or :meth:`fail` is called. :meth:`wait` returns the engine's
    handle id or raises what the submission raised, so an error the engine reports at submission
    (a name already in flight, dist_sync stopped meanwhile) reaches the caller of synchronize().
    """

    __slots__ = ("_kind", "_name", "_cacheable", "_options", "_submitted", "_id", "_error")

    def __init__(self, kind: int, name: str, cacheable: bool, options: Dict[str, Any]) -> None:
        self._kind = kind
        self._name = name
        self._cacheable = cacheable
        self._options = options
        self._submitted = threading.Event()
        self._id: Optional[int] = None
        self._error: Optional[BaseException] = None

    def submit(self, tensors: Sequence[TensorSpec]) -> None:
        """Hands the operation to the engine (from any thread). Never raises: an error is kept
        for :meth:`wait`."""
        try:
            o = self._options
            self._id = _core.submit(self._kind, self._name, list(tensors), o["reduce_op"],
                                    float(o["prescale"]), float(o["postscale"]), int(o["root"]),
                                    o["splits"], o["device"], self._cacheable,
                                    o["process_set"])
        except BaseException as error:  # noqa: BLE001 - re-raised by wait() on the user's thread
            self._error = error
        finally:
            self._submitted.set()

    def fail(self, error: BaseException) -> None:
        """Records that the operation could not be submitted; :meth:`wait` raises ``error``."""
        self._error = error
        self._submitted.set()

    def ready(self) -> bool:
        """True once :meth:`submit` or :meth:`fail` has happened (wait() will not block)."""
        return self._submitted.is_set()

    def error(self) -> Optional[BaseException]:
        """The submission's error, if it has happened and failed."""
        return self._error if self._submitted.is_set() else None

    def wait(self) -> int:
        """The engine's handle id once submitted (the wait releases the GIL); raises the
        submission's error."""
        self._submitted.wait()
        if self._error is not None:
            raise self._error
        assert self._id is not None
        return self._id


def _check_handle(handle: Any) -> Handle:
    if not isinstance(handle, Handle):
        raise TypeError(f"expected a dist_sync handle (returned by an *_async call), got "
                        f"{type(handle).__name__}")
    if handle._session != _session:
        raise ValueError(f"{handle!r} belongs to an earlier dist_sync session (before shutdown())")
    return handle


def poll(handle: Handle) -> bool:
    """True if the operation behind ``handle`` has completed (synchronize() will not block)."""
    handle = _check_handle(handle)
    if handle._done:
        return True
    check_process()
    if handle._id is None:
        if not handle._deferred.ready():
            return False
        if handle._deferred.error() is not None:
            return True  # synchronize() raises the submission's error at once
        handle._id = handle._deferred.wait()
    return bool(_with_stop_reason(_core.poll, handle._id))


def synchronize(handle: Handle) -> Any:
    """Waits for the operation and returns its result; raises DistSyncError if it failed.

    The wait releases the GIL. A handle can be synchronized once.
    """
    if type(handle) is not Handle or handle._session != _session:
        handle = _check_handle(handle)  # a subclass, or an error to raise
    # Only the process check: an operation that completed before a peer shut the engine down
    # still has its result (Note [Results outlive the session's end]).
    if _forked_child:
        check_process()
    with _claim_lock:
        if handle._claimed:
            raise ValueError(f"{handle!r} was already synchronized (or is being synchronized by "
                             f"another thread); each handle is synchronized once")
        handle._claimed = True
    try:
        if handle._id is None:
            handle._id = handle._deferred.wait()
        try:
            raw = _core.wait(handle._id)
        except DistSyncError as error:
            raise _with_reason(error) from None
    except Exception:  # the operation or its submission failed: nothing of it is in flight
        handle._done, handle._keepalive = True, None
        raise
    except BaseException:
        # Interrupted while waiting (Ctrl-C): the operation is still in flight, so its memory
        # stays alive until it completes (Note [Handles own their operation's memory]).
        _orphans.append((handle._id, handle._deferred, handle._keepalive, handle._finish))
        handle._done, handle._keepalive = True, None
        raise
    handle._done, handle._keepalive = True, None
    handle._result = handle._finish(raw)
    return handle._result


def auto_name(kind: int, process_set: int = 0) -> str:
    """A deterministic name for an unnamed op: the n-th unnamed op of a kind in a process set
    has the same name on every rank of the set as long as they make the same calls in the same
    order (counted per set: a rank's calls in other sets must not shift the numbering)."""
    counter = _name_counters.setdefault((kind, process_set), itertools.count())
    return f"{OpType(kind).name.lower()}.noname.{next(counter)}"


def check_name(name: Optional[str]) -> None:
    """Names travel to every rank and into error messages: text without NUL characters (which
    would cut the engine's messages short) that encodes as UTF-8."""
    if name is None or (type(name) is str and name.isascii() and "\x00" not in name):
        return  # the common case, checked in one expression
    if not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    if "\x00" in name:
        raise ValueError(f"name must not contain NUL characters, got {name!r}")
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"name must be valid Unicode text (it cannot contain lone "
                             f"surrogates), got {name!r}") from None


def submit(kind: int, name: Optional[str], tensors: Sequence[TensorSpec], keepalive: Any,
           finish: Callable[[RawResult], Any], *, reduce_op: int = _core.ReduceOp.SUM,
           prescale: float = 1.0, postscale: float = 1.0, root: int = 0,
           splits: Sequence[int] = (), device: int = DEVICE_CPU, process_set: int = 0) -> Handle:
    """Hands one operation to the engine of process set ``process_set`` (an id; 0: all ranks)
    and returns its Handle."""
    if _forked_child:
        check_process()
    check_name(name)
    if _orphans:
        _reap_orphans()
    cacheable = name is not None
    if name is None:
        name = auto_name(kind, process_set)
    try:
        handle_id = _core.submit(kind, name, tensors, reduce_op, prescale, postscale, root,
                                 splits, device, cacheable, process_set)
    except DistSyncError as error:
        # The engine refuses work when it is not running; say why and how to start again
        # (checked only here: asking before every submission costs a call into the engine).
        check_usable()
        raise _as_ranks_lost(error) from None
    return Handle(handle_id, keepalive, finish, kind, name)


def defer(kind: int, name: Optional[str], keepalive: Any, finish: Callable[[RawResult], Any], *,
          reduce_op: int = _core.ReduceOp.SUM, prescale: float = 1.0,
          postscale: float = 1.0, root: int = 0, splits: Sequence[int] = (),
          device: int = DEVICE_CPU, process_set: int = 0) -> Tuple[Handle, "Deferred"]:
    """Like :func:`submit`, but the tensors are handed to the engine later, through the returned
    :class:`Deferred` (from any thread). The name is fixed now: an unnamed operation is numbered
    in the order of the user's calls, whatever order the submissions happen in."""
    check_usable()
    check_name(name)
    if _orphans:
        _reap_orphans()
    cacheable = name is not None
    if name is None:
        name = auto_name(kind, process_set)
    deferred = Deferred(kind, name, cacheable, {
        "reduce_op": reduce_op, "prescale": prescale,
        "postscale": postscale, "root": root, "splits": list(splits), "device": device,
        "process_set": process_set})
    return Handle(None, keepalive, finish, kind, name, deferred), deferred


def check_process() -> None:
    if _forked_child:
        raise DistSyncError("dist_sync cannot be used in a process forked after init() (for "
                            "example a DataLoader worker); use it from the process that called "
                            "init()")


# Note [Results outlive the session's end]
# When another rank shuts down (or exits), this rank's engine stops: operations still pending
# fail with the reason, but those that had completed keep their results until synchronized, so
# the slowest rank's last step is not lost. Only after this rank's own shutdown() are handles
# gone; the error then says why the session ended.
def _with_stop_reason(call: Callable[[int], Any], handle_id: int) -> Any:
    try:
        return call(handle_id)
    except DistSyncError as error:
        raise _with_reason(error) from None


def _with_reason(error: DistSyncError) -> DistSyncError:
    """`error`, or, when the handle is gone because the session stopped, an error saying why."""
    reason = _core.stop_reason()
    if "not initialized" in str(error) and reason:
        error = DistSyncError(f"dist_sync is not running: {reason}; the handle's result is gone")
    return _as_ranks_lost(error)


def check_usable() -> None:
    if _forked_child:
        check_process()
    if not _core.is_initialized():
        reason = _core.stop_reason()
        if reason:
            raise _as_ranks_lost(DistSyncError(f"dist_sync is not running: {reason}. Call "
                                               f"init() again on every rank to start a new "
                                               f"session."))
        raise DistSyncError("dist_sync is not initialized: call dist_sync.init() (or hvd.init()) "
                            "first")


def init(comm: Any = None, process_sets: Any = None, **settings: Any) -> None:
    """Starts dist_sync on this rank (collective: every rank must call it).

    Args:
        comm: an mpi4py communicator to run on (default: MPI_COMM_WORLD), or a list of ranks of
            MPI_COMM_WORLD to form the communicator from.
        process_sets: a list of :class:`ProcessSet` to register (every rank lists the same ones,
            else ValueError on every rank). Horovod's ``"dynamic"`` is accepted and changes
            nothing: ``add_process_set``/``remove_process_set`` always work.
        **settings: overrides for the DIST_SYNC_* settings (see dist_sync.config.SETTINGS), e.g.
            ``fusion_threshold_bytes=0``.

    Calling it again while running does nothing, unless it asks for settings different from
    the running session's: that raises ValueError rather than silently ignoring them.

    In a process started by ``MPI_Comm_spawn`` (a replacement an elastic run spawned for lost
    ranks) and without ``comm``, it joins the spawning job instead: it waits until the parents
    merge it in, and ranks it after them (README, "Elastic training").
    """
    global _session, _init_pid, _atexit_registered, _active_settings
    check_process()  # a forked child must not touch the parent's engine or MPI
    with _state_lock:
        resolved = _config.load(settings)  # unknown or malformed settings raise even if running
        if _core.is_initialized():
            changed = [f"{key}={resolved[key]!r} (running with {_active_settings.get(key)!r})"
                       for key in settings if resolved[key] != _active_settings.get(key)]
            if changed:
                raise ValueError(f"dist_sync is already initialized; init() cannot change "
                                 f"{', '.join(changed)}: call shutdown() first")
            return
        shared = {s.key: s.env for s in _config.SETTINGS if s.shared}
        if process_sets is not None and not (process_sets == "dynamic" or
                                             isinstance(process_sets, (list, tuple))):
            raise ValueError(f"process_sets must be a list of ProcessSet or \"dynamic\", got "
                             f"{process_sets!r}")
        if isinstance(process_sets, (list, tuple)):
            for item in process_sets:
                if not isinstance(item, _process_sets.ProcessSet):
                    raise TypeError(f"process_sets must hold ProcessSet objects, got "
                                    f"{type(item).__name__}")
        handle, init_comm = _communicator_handle(comm)
        _core.init(resolved, shared, handle)
        try:
            _process_sets.setup(process_sets, init_comm)
        except BaseException:
            _core.shutdown(False, "init(process_sets=...) failed")
            raise
        _active_settings = resolved
        _session += 1
        _init_pid = os.getpid()
        _name_counters.clear()
        if not _atexit_registered:
            atexit.register(_shutdown_at_exit)
            _register_before_thread_join(_shutdown_if_dying)
            _atexit_registered = True
        _install_excepthook()


def _communicator_handle(comm: Any) -> Tuple[int, Any]:
    """The Fortran handle of the communicator to duplicate (-1: MPI_COMM_WORLD), and the mpi4py
    communicator itself (None: MPI_COMM_WORLD)."""
    if comm is None:
        return -1, None
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise TypeError("init(comm=...) needs mpi4py (pip install mpi4py)") from error
    if isinstance(comm, (list, tuple, range)):
        ranks = [int(r) for r in comm]
        world = MPI.COMM_WORLD
        group = world.Get_group().Incl(ranks)
        sub = world.Create_group(group)
        if sub == MPI.COMM_NULL:
            raise ValueError(f"this rank ({world.Get_rank()}) is not in init(comm={ranks})")
        return sub.py2f(), sub
    if isinstance(comm, MPI.Comm):
        return comm.py2f(), comm
    raise TypeError(f"comm must be an mpi4py communicator or a list of ranks, got {type(comm).__name__}")


def shutdown() -> None:
    """Stops dist_sync on every rank (the first rank to call it stops them all; operations still
    pending anywhere fail with a message naming that rank). Safe to call more than once."""
    with _state_lock, _process_sets._lock:
        if _forked_child:
            return
        _core.shutdown(False)
        _orphans.clear()  # the engine has stopped: nothing touches their memory any more
        _process_sets.reset()


def _shutdown_at_exit() -> None:
    if _forked_child:
        return
    _core.shutdown(True, _uncaught or "exited")
    _orphans.clear()


def _shutdown_if_dying() -> None:
    if _uncaught and not _forked_child:
        _core.shutdown(True, _uncaught)


def _register_before_thread_join(hook: Callable[[], None]) -> None:
    # threading's own exit hooks (what concurrent.futures uses) run before the interpreter joins
    # non-daemon threads; atexit runs only after them.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(hook)


# Note [Telling peers why a rank left]
# A rank that dies of an uncaught exception shuts its engine down at exit; the reason goes
# through negotiation, so every other rank's pending operations fail with "rank 1 exited with an
# uncaught ValueError: bad batch" instead of a bare "rank 1 shut down" or a hang. The shutdown
# comes before the interpreter joins the rank's non-daemon threads: a thread still waiting on a
# handle would otherwise keep the dying rank (and, waiting for it, every other rank) alive. It
# comes only then: an excepthook also runs for exceptions that do not end the process (the REPL,
# GUI toolkits), and a rank whose main thread merely returned may still have threads that
# legitimately finish their collectives.
_uncaught = ""
_previous_excepthook = None


def _record_uncaught(kind, value, traceback) -> None:
    global _uncaught
    if not issubclass(kind, KeyboardInterrupt):
        text = f"{kind.__name__}: {value}".splitlines()[0] if str(value) else kind.__name__
        _uncaught = f"exited with an uncaught {text[:300]}"
    else:
        _uncaught = "was interrupted (KeyboardInterrupt)"
    (_previous_excepthook or sys.__excepthook__)(kind, value, traceback)


def _install_excepthook() -> None:
    global _previous_excepthook
    if sys.excepthook is not _record_uncaught:
        _previous_excepthook = sys.excepthook
        sys.excepthook = _record_uncaught


def is_initialized() -> bool:
    """True while this rank's engine is running (False in a process forked after init(), which
    cannot use it)."""
    if _forked_child:
        return False
    return bool(_core.is_initialized())


def rank() -> int:
    """This process's rank, 0..size()-1."""
    return _core.rank()


def size() -> int:
    """The number of ranks."""
    return _core.size()


def local_rank() -> int:
    """This process's rank among the ranks on its host (use it to pick a GPU)."""
    return _core.local_rank()


def local_size() -> int:
    """The number of ranks on this host."""
    return _core.local_size()


def cross_rank() -> int:
    """The index of this host among the hosts (ranks with the same local_rank form a group)."""
    return _core.cross_rank()


def cross_size() -> int:
    """The number of hosts."""
    return _core.cross_size()


def is_homogeneous() -> bool:
    """True if every host runs the same number of ranks."""
    return _core.is_homogeneous()


def start_timeline(file_path: str, mark_cycles: bool = False) -> None:
    """Starts writing a Chrome-trace/Perfetto timeline to ``file_path`` (rank 0 writes it).
    ``mark_cycles`` exists for Horovod compatibility; every cycle's phases are recorded anyway."""
    _core.start_timeline(str(file_path))


def stop_timeline() -> None:
    """Stops the timeline; the file stays valid JSON."""
    _core.stop_timeline()


def mpi_library_version() -> str:
    """The MPI library dist_sync was built against, as the library describes itself."""
    return _core.mpi_library_version()


def mpi_threads_supported() -> bool:
    """True if the MPI library runs with MPI_THREAD_MULTIPLE (dist_sync itself needs only
    MPI_THREAD_SERIALIZED: one engine thread talks to MPI). Needs init()."""
    _core.rank()  # raises DistSyncError unless initialized
    return _core.mpi_thread_level() == 3
