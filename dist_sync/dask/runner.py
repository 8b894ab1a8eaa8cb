"""dist_sync.dask.run: one task pinned to each Dask worker, dist_sync initialised over the
workers' MPI ranks, each rank fed the partitions its worker holds."""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..launch.errors import JobError, raise_for_outcomes
from ..launch.payload import Outcome, decode_outcome, encode_outcome, failure
from ..launch.runner import localize_traceback
from .placement import Partition, Placement, place
from .shard import Target, check_format, make_shard

log = logging.getLogger("dist_sync.dask")

# How often the client checks that every worker of a running job is still in the cluster.
_WATCH_SECONDS = 1.0


def _mpi_identity() -> Dict[str, Any]:
    """Runs on a worker: its MPI rank, and whether dist_sync already runs there."""
    import os
    import socket

    import dist_sync
    try:
        from mpi4py import MPI
    except ImportError as error:
        return {"error": f"mpi4py is not installed on this worker ({error})"}
    return {"rank": MPI.COMM_WORLD.Get_rank(), "size": MPI.COMM_WORLD.Get_size(),
            "host": socket.gethostname(), "pid": os.getpid(),
            "running": dist_sync.is_initialized()}


def worker_ranks(client: Any, workers: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """Every participating worker's address and its rank in MPI_COMM_WORLD, in rank order.
    Raises unless they are distinct ranks of one MPI job with dist_sync idle on them."""
    present = client.nthreads()
    if not present:
        raise ValueError("the Dask cluster has no workers")
    if workers is not None:
        unknown = [w for w in workers if w not in present]
        if unknown or not workers:
            raise ValueError(f"worker(s) {unknown or list(workers)} are not in the cluster "
                             f"(its workers: {sorted(present)})")
    identities = client.run(_mpi_identity, workers=list(workers) if workers else None)
    problems = [f"{address}: {info['error']}" for address, info in identities.items()
                if "error" in info]
    if problems:
        raise RuntimeError("dist_sync.dask needs mpi4py on every worker: " + "; ".join(problems))
    sizes = {info["size"] for info in identities.values()}
    ranks = [info["rank"] for info in identities.values()]
    if len(sizes) != 1 or len(set(ranks)) != len(ranks) or sizes == {1}:
        found = ", ".join(f"{a} is rank {i['rank']} of {i['size']}"
                          for a, i in sorted(identities.items()))
        raise RuntimeError(
            "dist_sync.dask needs Dask workers that are ranks of one MPI job, started with "
            "dask-mpi (mpirun -np N python script.py calling dask_mpi.initialize(), or "
            f"mpirun -np N dask-mpi ...) without a nanny; here {found}")
    busy = sorted(a for a, i in identities.items() if i["running"])
    if busy:
        raise RuntimeError(f"dist_sync is already running on worker(s) {', '.join(busy)}: "
                           f"one dist_sync.dask.run at a time")
    return {address: identities[address]["rank"]
            for address in sorted(identities, key=lambda a: identities[a]["rank"])}


def _collection_kind(data: Any) -> str:
    import dask
    if not dask.is_dask_collection(data):
        raise TypeError(f"data must be a Dask DataFrame, Series or Array, got "
                        f"{type(data).__name__}")
    try:
        import dask.array as da
        if isinstance(data, da.Array):
            if any(len(chunks) > 1 for chunks in data.chunks[1:]):
                raise ValueError(
                    f"a Dask Array is split into rows along its first axis only; this one has "
                    f"chunks {tuple(len(c) for c in data.chunks)} per axis: rechunk it first, "
                    f"e.g. x.rechunk({{{', '.join(f'{i}: -1' for i in range(1, data.ndim))}}})")
            if data.ndim == 0:
                raise ValueError("a 0-dimensional Dask Array has no rows")
            return "array"
    except ImportError:
        pass
    try:
        import dask.dataframe as dd
        if isinstance(data, dd.DataFrame):
            return "frame"
        if isinstance(data, dd.Series):
            return "series"
    except ImportError:
        pass
    raise TypeError(f"data must be a Dask DataFrame, Series or Array, got {type(data).__name__}")


def _meta(data: Any, kind: str) -> Any:
    """An empty object of the collection's type, for a rank that holds no partition."""
    import numpy as np
    if kind == "array":
        return np.empty((0,) + tuple(data.shape[1:]), dtype=data.dtype)
    return data._meta


def _partition_futures(client: Any, data: Any) -> List[Any]:
    """The collection persisted, as one future per partition in partition order."""
    from distributed import futures_of, wait
    persisted = client.persist(data)
    futures = futures_of(persisted)
    by_index: Dict[int, Any] = {}
    for future in futures:
        key = future.key
        if not (isinstance(key, tuple) and len(key) >= 2 and all(k == 0 for k in key[2:])):
            raise TypeError(f"cannot tell the partition of key {key!r}")
        by_index[key[1]] = future
    if sorted(by_index) != list(range(len(futures))) or len(by_index) != len(futures):
        raise TypeError(f"the persisted collection's keys are not one per partition: "
                        f"{sorted(f.key for f in futures)[:6]} ...")
    wait(futures)
    return [by_index[i] for i in range(len(futures))]


def _row_count(partition: Any) -> int:
    return len(partition)


def _plan(client: Any, data: Any, workers: Optional[Sequence[str]]
          ) -> Tuple[Dict[str, int], List[Any], Placement]:
    ranks = worker_ranks(client, workers)
    futures = _partition_futures(client, data)
    rows = client.gather(client.map(_row_count, futures, pure=False))
    who_has = client.who_has(futures)
    partitions = [Partition(i, int(n), tuple(who_has.get(f.key, ())))
                  for i, (f, n) in enumerate(zip(futures, rows))]
    return ranks, futures, place(partitions, list(ranks))


def plan(client: Any, data: Any, workers: Optional[Sequence[str]] = None) -> Placement:
    """Where :func:`run` would read each partition of ``data`` now: the workers in rank order,
    each rank's partitions and rows, and the partitions that would move (Note [Balancing
    partitions] in dist_sync/dask/placement.py). Persists ``data``."""
    _collection_kind(data)
    return _plan(client, data, workers)[2]


def _rank_task(fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any],
               world_ranks: List[int], rank: int, settings: Dict[str, Any], kind: str,
               fmt: str, target: Target, meta: Any, *parts: Any) -> bytes:
    """Runs on a worker: dist_sync over the workers' ranks, then ``fn`` on this rank's shard.
    Returns the encoded Outcome; never raises, so the client sees every rank's outcome."""
    import dist_sync
    try:
        dist_sync.init(comm=world_ranks, **settings)
    except BaseException as error:  # noqa: BLE001 - reported to the client
        return encode_outcome(failure(rank, error))
    try:
        if dist_sync.rank() != rank:
            raise RuntimeError(f"dist_sync rank {dist_sync.rank()} where rank {rank} was "
                               f"planned (world ranks {world_ranks})")
        shard = None if kind == "none" else make_shard(list(parts), kind, fmt, target, meta)
        outcome = Outcome(rank, True, fn(shard, *args, **kwargs))
    except BaseException as error:  # noqa: BLE001 - reported to the client
        outcome = failure(rank, error, skip_frames=1)
    finally:
        dist_sync.shutdown()
    return encode_outcome(outcome)


def run(client: Any, fn: Callable[..., Any], data: Any = None, args: Sequence[Any] = (),
        kwargs: Optional[Dict[str, Any]] = None, *, format: Optional[str] = None,
        target: Target = None, workers: Optional[Sequence[str]] = None,
        settings: Optional[Dict[str, Any]] = None,
        timeout: Optional[float] = None) -> List[Any]:
    """Calls ``fn(shard, *args, **kwargs)`` on every Dask worker, with dist_sync initialised
    over the workers' MPI ranks, and returns the list of their return values in rank order.

    The workers must be ranks of one MPI job (a cluster started with dask-mpi); the scheduler
    and the client take no part in dist_sync. Inside ``fn``, ``dist_sync.rank()`` and
    ``size()`` (and ``dist_sync.torch``'s) count the workers only.

    Args:
        client: a ``distributed.Client`` of that cluster.
        fn: called on every rank with its shard first.
        data: a Dask DataFrame, Series or Array (split along its first axis only), or None
            (``fn`` gets None). It is persisted; every partition is read by exactly one rank,
            the rank of a worker that holds it, and partitions move only to bring the ranks'
            row counts within one partition of each other (Note [Balancing partitions]).
        args, kwargs: further arguments of ``fn``, the same on every rank.
        format: what the shard is: ``"pandas"`` (one DataFrame/Series of the rank's
            partitions, in partition order; the default for DataFrames and Series),
            ``"numpy"`` (one array; the default for Arrays), ``"torch"`` (a
            ``torch.utils.data.TensorDataset``) or ``"partitions"`` (the list as held).
        target: with ``format="torch"`` and a DataFrame, the label column(s): the dataset then
            yields ``(features, label)``; otherwise it yields the rows' values.
        workers: the worker addresses to use (default: all).
        settings: dist_sync settings for ``init()`` on the ranks, e.g. ``{"cycle_time_ms": 2}``.
        timeout: seconds after which the client stops waiting and raises TimeoutError.

    Ranks usually hold different numbers of rows; a training loop ends each epoch with
    ``join()`` (README, "Data in Dask").

    Raises:
        RankError: ``fn`` (or building the shard) raised on a rank: the first failure, with
            its traceback; the other ranks' collectives failed with its reason.
        JobError: a worker left the cluster while the job ran.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    from distributed import Client
    if not isinstance(client, Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    kind = "none" if data is None else _collection_kind(data)
    fmt = "" if kind == "none" else check_format(kind, format, target)
    if kind == "none":
        ranks = worker_ranks(client, workers)
        placement = Placement(tuple(ranks), tuple(() for _ in ranks), tuple(0 for _ in ranks), ())
        futures: List[Any] = []
        meta = None
    else:
        ranks, futures, placement = _plan(client, data, workers)
        meta = _meta(data, kind)
    name = getattr(fn, "__qualname__", None) or repr(fn)
    log.debug("dist_sync.dask.run(%s): rows per rank %s, partitions moved %s", name,
              placement.rows, placement.moved)
    world_ranks = list(ranks.values())
    job = uuid.uuid4().hex[:12]
    tasks = [client.submit(_rank_task, fn, tuple(args), dict(kwargs or {}), world_ranks, rank,
                           dict(settings or {}), kind, fmt, target, meta,
                           *[futures[i] for i in placement.partitions[rank]],
                           key=f"dist_sync-{name}-{job}-rank{rank}", workers=[worker],
                           allow_other_workers=False, pure=False)
             for rank, worker in enumerate(placement.workers)]
    try:
        _wait(client, tasks, placement.workers, timeout, name)
        outcomes = [decode_outcome(data) for data in client.gather(tasks)]
    finally:
        for task in tasks:
            task.release()
    for outcome in outcomes:
        if not outcome.ok:
            outcome.traceback = localize_traceback(outcome.traceback, fn)
    return raise_for_outcomes(outcomes, f"dist_sync.dask.run({name})")


def _wait(client: Any, tasks: List[Any], workers: Sequence[str], timeout: Optional[float],
          name: str) -> None:
    """Waits for every rank's task; a worker that leaves the cluster meanwhile (its task could
    never run elsewhere) fails the job instead of hanging it."""
    from distributed import wait
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            wait(tasks, timeout=_WATCH_SECONDS)
            return
        except TimeoutError:
            pass
        present = set(client.nthreads())
        lost = [(rank, w) for rank, w in enumerate(workers) if w not in present]
        if lost:
            client.cancel(tasks)
            raise JobError(f"dist_sync.dask.run({name}): "
                           + ", ".join(f"worker {w} (rank {r})" for r, w in lost)
                           + " left the cluster while the job ran; the job was cancelled")
        if deadline is not None and time.monotonic() > deadline:
            client.cancel(tasks)
            raise TimeoutError(f"dist_sync.dask.run({name}) did not finish within {timeout:g} "
                               f"s; its tasks were cancelled (ranks already inside a "
                               f"collective stay there until dist_sync's stall timeout)")
