"""Checks of dist_sync.dask on one Dask cluster of MPI ranks (rank 0 scheduler, rank 1 this
client, ranks 2.. workers), started by tests/launch/test_dask_mpi.py as

    python -m dist_sync.run -np 5 tests/launch/dask_worker.py RESULTS.json

The client runs every check in turn on the shared cluster (Dask starts slowly) and writes
{name: {"ok": ..., "value": ..., "error": ...}} to RESULTS.json. References are computed here,
independently of dist_sync: from the rows each partition was made with.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

CHECKS: Dict[str, Callable[[Any], Any]] = {}


def check(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    CHECKS[fn.__name__] = fn
    return fn


def make_rows(start: int, count: int):
    import pandas as pd
    ids = np.arange(start, start + count, dtype=np.int64)
    return pd.DataFrame({"id": ids, "x": ids * 0.5, "label": ids % 10})


def placed_frame(client, spec: Sequence[Tuple[int, str]]):
    """A Dask DataFrame whose partition i has spec[i][0] rows and lives on worker spec[i][1]."""
    import dask.dataframe as dd
    from distributed import wait
    futures, start = [], 0
    for rows, worker in spec:
        futures.append(client.submit(make_rows, start, rows, workers=[worker], pure=False))
        start += rows
    wait(futures)
    frame = dd.from_delayed(futures, meta=make_rows(0, 0), verify_meta=False)
    return frame, start


def transfers(client) -> int:
    """Keys that workers fetched from other workers so far."""
    counts = client.run(lambda dask_worker: sum(len(entry["keys"])
                                                for entry in dask_worker.transfer_incoming_log))
    return sum(counts.values())


def workers(client) -> List[str]:
    import dist_sync.dask
    return list(dist_sync.dask.worker_ranks(client))


def ids_of(shard) -> List[int]:
    return [int(i) for i in shard["id"]]


def assert_once(per_rank: List[List[int]], total: int) -> None:
    seen = sorted(i for ids in per_rank for i in ids)
    assert seen == list(range(total)), f"rows not seen exactly once: {len(seen)} of {total}"


@check
def ranks_and_sizes(client):
    import dist_sync.dask

    def where(shard):
        import dist_sync
        assert shard is None
        total = dist_sync.allreduce(np.array([dist_sync.rank()], np.int64), op=dist_sync.Sum)
        return dist_sync.rank(), dist_sync.size(), int(total[0])

    values = dist_sync.dask.run(client, where)
    assert values == [(0, 3, 3), (1, 3, 3), (2, 3, 3)], values
    return values


@check
def every_row_once_pandas(client):
    import dask.dataframe as dd
    import dist_sync.dask
    frame = dd.from_pandas(make_rows(0, 1000), npartitions=12).persist()
    per_rank = dist_sync.dask.run(client, ids_of, frame)
    assert_once(per_rank, 1000)
    placement = dist_sync.dask.plan(client, frame)
    assert max(placement.rows) - min(placement.rows) <= 84, placement.rows
    return [len(ids) for ids in per_rank]


@check
def every_row_once_per_epoch_torch(client):
    import dask.dataframe as dd
    import dist_sync.dask

    def epochs(dataset, count):
        import torch
        from torch.utils.data import BatchSampler, DataLoader, RandomSampler
        seen = []
        for epoch in range(count):
            sampler = BatchSampler(RandomSampler(dataset), batch_size=16, drop_last=False)
            ids = []
            for features, labels in DataLoader(dataset, sampler=sampler, batch_size=None):
                assert features.shape[1] == 2 and features.dtype == torch.float64
                assert torch.equal(labels, features[:, 0].long() % 10)
                ids += features[:, 0].long().tolist()
            seen.append(sorted(ids))
        assert seen[0] == seen[1] and len(dataset) == len(seen[0])
        return seen[0]

    frame = dd.from_pandas(make_rows(0, 777), npartitions=12).astype({"id": "float64"})
    per_rank = dist_sync.dask.run(client, epochs, frame.persist(), args=(2,), format="torch",
                                  target="label")
    assert_once(per_rank, 777)
    return [len(ids) for ids in per_rank]


@check
def every_row_once_dask_array(client):
    import dask.array as da
    import dist_sync.dask
    rows = np.arange(2 * 301, dtype=np.int32).reshape(301, 2)
    array = da.from_array(rows, chunks=(23, 2))          # 14 chunks, the last of 2 rows
    per_rank = dist_sync.dask.run(client, lambda shard: shard[:, 0].tolist(), array)
    assert sorted(i for ids in per_rank for i in ids) == rows[:, 0].tolist()
    lengths = dist_sync.dask.run(client, lambda shard: len(shard), array, format="torch")
    assert sum(lengths) == 301
    return [len(ids) for ids in per_rank]


@check
def balanced_collection_moves_nothing(client):
    import dist_sync.dask
    names = workers(client)
    frame, total = placed_frame(client, [(25, names[i % 3]) for i in range(12)])
    frame = frame.persist()
    placement = dist_sync.dask.plan(client, frame)
    assert placement.moved == () and placement.rows == (100, 100, 100), placement
    before = transfers(client)
    per_rank = dist_sync.dask.run(client, ids_of, frame)
    moved = transfers(client) - before
    assert moved == 0, f"{moved} partitions moved"
    assert_once(per_rank, total)
    for rank, ids in enumerate(per_rank):                 # each rank read its own worker's rows
        assert sorted({i // 25 % 3 for i in ids}) == [rank], (rank, ids[:5])
    return {"transfers": moved}


@check
def unbalanced_collection_moves_only_what_balances(client):
    import dist_sync.dask
    names = workers(client)
    frame, total = placed_frame(client, [(10, names[0])] * 6)
    frame = frame.persist()
    placement = dist_sync.dask.plan(client, frame)
    assert placement.rows == (20, 20, 20) and len(placement.moved) == 4, placement
    before = transfers(client)
    per_rank = dist_sync.dask.run(client, ids_of, frame)
    moved = transfers(client) - before
    assert moved == len(placement.moved), (moved, placement.moved)
    assert_once(per_rank, total)
    return {"transfers": moved, "rows": [len(ids) for ids in per_rank]}


def uneven_steps(shard, batch):
    """One allreduce per batch of this rank's rows, then join(): returns every step's sums."""
    import dist_sync
    ids = shard["id"].to_numpy()
    sums = []
    for start in range(0, len(ids), batch):
        total = dist_sync.allreduce(np.array([ids[start:start + batch].sum()], np.int64),
                                    op=dist_sync.Sum, name="batch.sum")
        sums.append(int(total[0]))
    last = dist_sync.join()
    return {"sums": sums, "ids": ids.tolist(), "last_joined": int(last)}


@check
def uneven_partitions_with_join(client):
    import dist_sync.dask
    names = workers(client)
    sizes = [1, 7, 30, 2, 13, 0, 5, 22, 3]
    frame, total = placed_frame(client, [(n, names[i % 2]) for i, n in enumerate(sizes)])
    frame = frame.persist()
    placement = dist_sync.dask.plan(client, frame)
    assert max(placement.rows) - min(placement.rows) <= max(sizes), placement
    batch = 4
    results = dist_sync.dask.run(client, uneven_steps, frame, args=(batch,))
    assert_once([r["ids"] for r in results], total)
    # Reference: at step s every rank that still has a batch contributes its sum; ranks that
    # have joined contribute nothing.
    batches = [[sum(r["ids"][s:s + batch]) for s in range(0, len(r["ids"]), batch)]
               for r in results]
    steps = max(len(b) for b in batches)
    expected = [sum(b[s] for b in batches if s < len(b)) for s in range(steps)]
    for rank, (result, own) in enumerate(zip(results, batches)):
        assert result["sums"] == expected[:len(own)], (rank, result["sums"], expected)
    assert len({r["last_joined"] for r in results}) == 1
    assert len({len(b) for b in batches}) > 1, "the shards were not uneven"
    return {"rows": [len(r["ids"]) for r in results], "steps": [len(b) for b in batches]}


@check
def fewer_partitions_than_workers(client):
    import dask.dataframe as dd
    import dist_sync.dask
    frame = dd.from_pandas(make_rows(0, 10), npartitions=2).persist()

    def describe(shard):
        return len(shard), list(shard.columns), [str(t) for t in shard.dtypes]

    values = dist_sync.dask.run(client, describe, frame)
    assert sorted(v[0] for v in values) == [0, 5, 5], values
    assert all(v[1] == ["id", "x", "label"] and v[2] == ["int64", "float64", "int64"]
               for v in values), values
    lengths = dist_sync.dask.run(client, len, frame, format="torch", target="label")
    assert sorted(lengths) == [0, 5, 5]
    return values


def fail_on_rank_one(shard):
    import dist_sync
    dist_sync.allreduce(np.ones(2), name="before")
    if dist_sync.rank() == 1:
        raise ValueError(f"bad partition with {len(shard)} rows")
    dist_sync.allreduce(np.ones(2), name="after")      # fails on the others: rank 1 has left
    return "unreachable"


@check
def a_rank_that_raises(client):
    import dask.dataframe as dd
    import dist_sync.dask
    from dist_sync import RankError
    frame = dd.from_pandas(make_rows(0, 60), npartitions=6).persist()
    try:
        dist_sync.dask.run(client, fail_on_rank_one, frame, timeout=120)
    except RankError as error:
        message = str(error)
        assert error.rank == 1 and error.size == 3 and error.error_type == "ValueError"
        assert message.startswith("rank 1 of 3 failed in dist_sync.dask.run(fail_on_rank_one):")
        assert f'File "{__file__}"' in message and "in fail_on_rank_one" in message, message
        assert 'raise ValueError(f"bad partition with {len(shard)} rows")' in message, message
        assert "ValueError: bad partition with 20 rows" in message, message
        assert "rank 0 raised DistSyncError" in message and "rank 2 raised DistSyncError" \
            in message, message
        assert isinstance(error.__cause__, ValueError)
    else:
        raise AssertionError("no RankError")
    # The cluster and dist_sync on it are still usable.
    assert dist_sync.dask.run(client, len, frame) == [20, 20, 20]
    return "raised"


@check
def bad_input(client):
    import dask.array as da
    import dist_sync.dask
    cases = [
        (lambda: dist_sync.dask.run(client, len, da.ones((10, 4), chunks=(5, 2))),
         ValueError, "rechunk it first, e.g. x.rechunk({1: -1})"),
        (lambda: dist_sync.dask.run(client, len, da.ones(10, chunks=5), format="pandas"),
         ValueError, "format='pandas' needs a Dask DataFrame or Series"),
        (lambda: dist_sync.dask.run(client, len, da.ones(10, chunks=5), format="arrow"),
         ValueError, "format must be one of 'pandas', 'numpy', 'torch', 'partitions'"),
        (lambda: dist_sync.dask.run(client, len, da.ones(10, chunks=5), target="y"),
         ValueError, "target= names the label columns"),
        (lambda: dist_sync.dask.run(client, len, make_rows(0, 3)),
         TypeError, "data must be a Dask DataFrame, Series or Array, got DataFrame"),
        (lambda: dist_sync.dask.run(client, "train", None),
         TypeError, "fn must be callable"),
        (lambda: dist_sync.dask.run(None, len, None),
         TypeError, "client must be a distributed.Client"),
        (lambda: dist_sync.dask.run(client, len, None, workers=["tcp://nowhere:1"]),
         ValueError, "worker(s) ['tcp://nowhere:1'] are not in the cluster (its workers: "),
    ]
    for call, kind, text in cases:
        try:
            call()
        except kind as error:
            assert text in str(error), (text, str(error))
        else:
            raise AssertionError(f"no {kind.__name__} for {text!r}")
    return len(cases)


@check
def rows_per_second_benchmark(client):
    """python -m dist_sync.bench dask's measurement, on tiny sizes (the numbers are the
    benchmark's business; here: it runs and reports every number)."""
    from dist_sync.bench.dask import VARIANTS, measure
    results = measure(client, rows=3000, columns=4, partitions=6, batch=64, repeats=3)
    assert sum(results["rows_per_rank"]) == 3000
    for variant in VARIANTS:
        for unit in ("rows_per_s", "rows_per_cpu_s"):
            numbers = results[variant][unit]
            assert len(numbers["single"]) == 3 and len(numbers["ranks"]) == 3
            assert all(len(per_rank) == 3 and min(per_rank) > 0 for per_rank in numbers["ranks"])
            assert numbers["ratio"] > 0 and numbers["slowest_rank_ratio"] > 0
    assert len(results["run_overhead_s"]["times"]) == 3
    return {v: round(results[v]["rows_per_cpu_s"]["ratio"], 2) for v in VARIANTS}


def main(out_path: str) -> None:
    from dask_mpi import initialize
    initialize(nthreads=1, dashboard=False, memory_limit=0)   # only rank 1 returns
    from distributed import Client
    client = Client()
    client.wait_for_workers(3, timeout=120)
    results = {}
    for name, fn in CHECKS.items():
        started = time.monotonic()
        try:
            results[name] = {"ok": True, "value": fn(client)}
        except BaseException:  # noqa: BLE001 - every failure goes to the test
            results[name] = {"ok": False, "error": traceback.format_exc()}
        results[name]["seconds"] = round(time.monotonic() - started, 2)
        print(f"{name}: {'ok' if results[name]['ok'] else 'FAILED'} "
              f"({results[name]['seconds']} s)", flush=True)
    with open(out_path, "w") as handle:
        json.dump(results, handle)
    client.close()


if __name__ == "__main__":
    main(sys.argv[1])
