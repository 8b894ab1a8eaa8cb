"""Process sets: subsets of the ranks that run collectives among themselves.

Horovod's names and semantics: ``ProcessSet(ranks or an mpi4py communicator)``,
``global_process_set``, ``init(process_sets=[...])``, :func:`add_process_set` /
:func:`remove_process_set`, and ``process_set=`` on every collective. Unlike Horovod, adding and
removing sets needs no ``process_sets="dynamic"`` (accepted, and changes nothing): registered
sets cost the others nothing, each having its own engine. Each set has its own engine, communicator and negotiation (Note [One engine per
process set] in docs/architecture.md), so operations of different sets run at the same time.

Ranks are always ranks of the global set (the communicator ``init()`` ran on): a set's
``ranks``, a broadcast's ``root_rank``. Within a set, results are ordered by the set's ranks,
ascending (allgather, alltoall, reducescatter).
"""
from __future__ import annotations

import pickle
import threading
from typing import Any, Dict, List, Optional, Sequence, Union

from . import _core

# Held around every collective that creates or removes sets, and by shutdown(): one thread at a
# time uses the control communicator (Note [Locks of the process sets] in csrc/python/session.cc).
_lock = threading.RLock()
# id -> every ProcessSet object registered under it (a list given twice, a set re-added)
_registered: Dict[int, List["ProcessSet"]] = {}


class ProcessSet:
    """A set of ranks that run collectives together.

    Build it from a list of ranks of the global set, or from an mpi4py communicator (whose
    processes must all be in the global set), then pass it to ``init(process_sets=[...])`` or
    :func:`add_process_set`. Once registered, ``process_set_id`` is its id (the global set is 0)
    and ``ranks`` its ranks, ascending.
    """

    def __init__(self, ranks_or_comm: Union[Sequence[int], Any]) -> None:
        self.process_set_id: Optional[int] = None
        self.mpi_comm: Any = None
        self._removed_id: Optional[int] = None  # the id it had before remove_process_set()
        self.ranks: Optional[List[int]]
        if _is_mpi_comm(ranks_or_comm):
            self.mpi_comm = ranks_or_comm
            self.ranks = None
            return
        try:
            values = list(ranks_or_comm)
        except TypeError:
            raise TypeError(f"ProcessSet needs a list of ranks or an mpi4py communicator, got "
                            f"{type(ranks_or_comm).__name__}") from None
        for value in values:
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise TypeError(f"ProcessSet ranks must be integers, got {value!r}")
        ranks = [int(v) for v in values]
        duplicates = sorted({r for r in ranks if ranks.count(r) > 1})
        if duplicates:
            raise ValueError(f"ProcessSet ranks must be distinct; {duplicates} appear more than "
                             f"once in {ranks}")
        negative = [r for r in ranks if r < 0]
        if negative:
            raise ValueError(f"ProcessSet ranks must be non-negative, got {negative}")
        self.ranks = sorted(ranks)

    def size(self) -> int:
        """The number of ranks in the set."""
        return len(self._registered_ranks())

    def rank(self) -> int:
        """This process's position in the set (0 .. size()-1); ValueError if it is not in it."""
        ranks = self._registered_ranks()
        me = _core.rank()
        if me not in ranks:
            raise ValueError(f"rank {me} is not in {self}")
        return ranks.index(me)

    def included(self) -> bool:
        """Whether this process is in the set."""
        return _core.rank() in self._registered_ranks()

    def _registered_ranks(self) -> List[int]:
        if self.process_set_id is None or self.ranks is None:
            raise ValueError(f"{self} is not registered: pass it to init(process_sets=[...]) or "
                             f"add_process_set() first (or it was removed)")
        if self.process_set_id == 0:
            return list(range(_core.size()))
        return self.ranks

    def __repr__(self) -> str:
        ranks = list(range(_core.size())) if self.process_set_id == 0 and _core.is_initialized() \
            else self.ranks
        return (f"ProcessSet(process_set_id={self.process_set_id}, ranks={ranks}, "
                f"mpi_comm={self.mpi_comm})")

    __str__ = __repr__


def _is_mpi_comm(value: Any) -> bool:
    module = type(value).__module__ or ""
    if not module.startswith("mpi4py"):
        return False
    from mpi4py import MPI
    return isinstance(value, MPI.Comm)


#: The set of all ranks (id 0); the default of every ``process_set=`` argument.
global_process_set = ProcessSet([])
global_process_set.process_set_id = 0


def _comm_ranks(comm: Any, init_comm: Any) -> List[int]:
    """The ranks (in the global set) of an mpi4py communicator's processes."""
    from mpi4py import MPI
    if comm == MPI.COMM_NULL:
        raise ValueError("ProcessSet(MPI.COMM_NULL): this rank has no communicator to take the "
                         "set from")
    parent = init_comm if init_comm is not None else MPI.COMM_WORLD
    translated = MPI.Group.Translate_ranks(comm.Get_group(), list(range(comm.Get_size())),
                                           parent.Get_group())
    if any(r == MPI.UNDEFINED for r in translated):
        raise ValueError("ProcessSet's communicator has processes outside the communicator "
                         "dist_sync.init() ran on")
    return sorted(int(r) for r in translated)


def _check_ranks(ranks: List[int], what: str) -> None:
    size = _core.size()
    if not ranks:
        raise ValueError(f"{what}: a process set needs at least one rank")
    outside = [r for r in ranks if r >= size]
    if outside:
        raise ValueError(f"{what}: ranks {outside} are out of range ({size} ranks)")


def _agree(mine: Any) -> List[Any]:
    """Every rank's ``mine`` (collective over all ranks)."""
    return [pickle.loads(b) for b in _core._control_allgather(pickle.dumps(mine))]


def _register(process_set: ProcessSet, ranks: List[int]) -> None:
    process_set.ranks = list(ranks)
    process_set.process_set_id = _core._add_process_set(ranks)
    _registered.setdefault(process_set.process_set_id, []).append(process_set)


def setup(process_sets: Any, init_comm: Any) -> None:
    """Called by init() once the engine runs: registers the static sets (collective)."""
    with _lock:
        _registered.clear()
        _registered[0] = [global_process_set]
        global_process_set.ranks = list(range(_core.size()))
        if process_sets is None or isinstance(process_sets, str):
            return
        # One entry per position: ("ranks", [...]) must be equal everywhere; ("comm", [...]) is
        # this rank's own communicator's ranks (Horovod's split communicators differ by rank).
        mine = []
        for process_set in process_sets:
            if process_set.mpi_comm is not None:
                mine.append(("comm", _comm_ranks(process_set.mpi_comm, init_comm)))
            else:
                _check_ranks(process_set.ranks, "init(process_sets=...)")
                mine.append(("ranks", process_set.ranks))
        everyone = _agree(mine)
        _check_same_lists(everyone, mine)
        for position, (kind, ranks) in enumerate(mine):
            if kind == "ranks":
                _register(process_sets[position], ranks)
                continue
            # Every distinct set the ranks' communicators form at this position, in order of
            # their smallest rank, so every rank registers them alike.
            distinct = sorted({tuple(lists[position][1]) for lists in everyone})
            for ranks_of_set in distinct:
                target = process_sets[position] if list(ranks_of_set) == ranks \
                    else ProcessSet(list(ranks_of_set))
                _register(target, list(ranks_of_set))


def _check_same_lists(everyone: List[Any], mine: Any) -> None:
    def shape(lists: Any) -> Any:
        return [(kind, ranks if kind == "ranks" else None) for kind, ranks in lists]
    differing = [r for r, lists in enumerate(everyone) if shape(lists) != shape(everyone[0])]
    if differing:
        raise ValueError(
            f"init(process_sets=...) must list the same process sets in the same order on "
            f"every rank; rank 0 lists {_describe(everyone[0])} but rank {differing[0]} lists "
            f"{_describe(everyone[differing[0]])}")
    for position, (kind, _) in enumerate(mine):
        if kind != "comm":
            continue
        for r, lists in enumerate(everyone):
            ranks = lists[position][1]
            for member in ranks:
                if everyone[member][position][1] != ranks:
                    raise ValueError(
                        f"init(process_sets=...): the communicators of process set "
                        f"{position} disagree: rank {r} says ranks {ranks}, rank {member} "
                        f"says {everyone[member][position][1]}")


def _describe(lists: Any) -> str:
    return "[" + ", ".join(f"{ranks}" if kind == "ranks" else "a communicator"
                           for kind, ranks in lists) + "]"


def add_process_set(process_set: Union[ProcessSet, Sequence[int]]) -> ProcessSet:
    """Registers a process set after ``init()`` and returns it.

    Collective: every rank calls it with the same ranks, in the same order as its other
    add/remove calls. ValueError on every rank if they differ.
    """
    if not isinstance(process_set, ProcessSet):
        process_set = ProcessSet(process_set)
    with _lock:
        if process_set.mpi_comm is not None:
            raise ValueError("add_process_set() takes a list of ranks (as Horovod's); a set from "
                             "an MPI communicator is given to init(process_sets=[...])")
        _check_ranks(process_set.ranks, "add_process_set")
        everyone = _agree(("add", process_set.ranks))
        differing = [r for r, call in enumerate(everyone) if call != everyone[0]]
        if differing:
            raise ValueError(f"add_process_set() is collective: every rank must add the same "
                             f"set; rank 0 called {_call_text(everyone[0])}, rank {differing[0]} "
                             f"called {_call_text(everyone[differing[0]])}")
        _register(process_set, process_set.ranks)
        return process_set


def remove_process_set(process_set: ProcessSet) -> bool:
    """Removes a registered process set; False for the global set.

    Collective: every rank calls it in the same order as its other add/remove calls. The set's
    operations still pending on its members fail, and every ProcessSet object registered under
    its id becomes unregistered.
    """
    if not isinstance(process_set, ProcessSet):
        raise TypeError(f"remove_process_set() takes a ProcessSet, got "
                        f"{type(process_set).__name__}")
    set_id = process_set.process_set_id
    if set_id == 0:
        return False
    with _lock:
        if set_id is None or set_id not in _registered:
            raise ValueError(f"{process_set} is not registered (already removed?)")
        everyone = _agree(("remove", set_id))
        differing = [r for r, call in enumerate(everyone) if call != everyone[0]]
        if differing:
            raise ValueError(f"remove_process_set() is collective: rank 0 called "
                             f"{_call_text(everyone[0])}, rank {differing[0]} called "
                             f"{_call_text(everyone[differing[0]])}")
        _core._remove_process_set(set_id, f"process set {set_id} was removed")
        for registered in _registered.pop(set_id):
            registered.process_set_id, registered._removed_id = None, set_id
        return True


def _call_text(call: Any) -> str:
    kind, what = call
    return f"add_process_set({what})" if kind == "add" else f"remove_process_set(<id {what}>)"


class Resolved:
    """What a collective needs to know about its process set on this rank."""

    __slots__ = ("id", "size", "rank", "ranks")

    def __init__(self, set_id: int, ranks: List[int]) -> None:
        self.id = set_id
        self.ranks: Optional[List[int]] = ranks
        self.size = len(ranks)
        self.rank = ranks.index(_core.rank())

    def position(self, rank: int, what: str) -> int:
        """A rank of the global set as a position in this set (a root rank)."""
        if rank not in self.ranks:
            raise ValueError(f"{what}: root_rank {rank} is not in process set {self.id} "
                             f"(ranks {self.ranks})")
        return self.ranks.index(rank)


class _ResolvedGlobal:
    """The global set: ids and ranks as they are, asked of the engine only when needed (the
    common case costs no call into it)."""

    __slots__ = ()
    id = 0
    ranks = None

    @property
    def size(self) -> int:
        return _core.size()

    @property
    def rank(self) -> int:
        return _core.rank()

    def position(self, rank: int, what: str) -> int:
        return rank


_GLOBAL = _ResolvedGlobal()


def resolve(process_set: Any, what: str) -> Any:
    """The process set a collective runs on (a :class:`Resolved`, or the global set's
    stand-in); clear errors for an unregistered or removed set and on a rank that is not in
    it."""
    if process_set is None or process_set is global_process_set:
        return _GLOBAL
    if not isinstance(process_set, ProcessSet):
        raise TypeError(f"{what}: process_set must be a dist_sync ProcessSet, got "
                        f"{type(process_set).__name__}")
    set_id = process_set.process_set_id
    if set_id == 0:
        return _GLOBAL
    from ._session import check_usable  # _session imports this module
    check_usable()  # after shutdown(): the session's end, not a process-set error
    if set_id is None and process_set._removed_id is not None:
        raise ValueError(f"{what}: process set {process_set._removed_id} (ranks "
                         f"{process_set.ranks}) was removed by remove_process_set()")
    if set_id is None or set_id not in _registered:
        raise ValueError(f"{what}: {process_set} is not registered (removed, or never passed to "
                         f"init(process_sets=...) / add_process_set())")
    ranks = process_set.ranks
    if _core.rank() not in ranks:
        raise ValueError(f"{what}: rank {_core.rank()} is not in process set {set_id} (ranks "
                         f"{ranks}); only its members may call its operations")
    return Resolved(set_id, ranks)


def included(process_set: Any, what: str) -> bool:
    """Whether this rank is in ``process_set`` (None: the global set); TypeError for something
    else, ValueError for a removed or unregistered set. What gradient averaging asks: a rank
    outside the set keeps its own gradients, as in Horovod."""
    if process_set is None or process_set is global_process_set or \
            getattr(process_set, "process_set_id", None) == 0:
        return True
    if not isinstance(process_set, ProcessSet):
        raise TypeError(f"{what}: process_set must be a dist_sync ProcessSet, got "
                        f"{type(process_set).__name__}")
    if process_set.process_set_id is None:
        resolve(process_set, what)  # raises the removed/unregistered error
    return process_set.included()


def process_set_by_id(process_set_id: int) -> ProcessSet:
    """The registered process set with this id."""
    if process_set_id not in _registered:
        raise ValueError(f"no process set with id {process_set_id}")
    return _registered[process_set_id][0]


def process_sets() -> List[ProcessSet]:
    """The registered process sets, global first."""
    return [_registered[i][0] for i in sorted(_registered)]


def reset() -> None:
    """After shutdown(): every registered set (but the global one) becomes unregistered."""
    with _lock:
        for set_id, objects in _registered.items():
            if set_id != 0:
                for process_set in objects:
                    process_set.process_set_id = None
        _registered.clear()
        _registered[0] = [global_process_set]
