"""Reading data in Dask: rows per second a rank gets from the partitions its worker holds,
through dist_sync.dask, against one process iterating the same data as a plain pandas
DataFrame.

    mpirun -np 5 python -m dist_sync.bench dask [--rows 600000] [--repeats 5]

dask-mpi makes rank 0 the scheduler, rank 1 the client (which also measures the single
process) and ranks 2.. the workers. The data is a DataFrame of --rows rows, --columns float32
feature columns and an int64 label, persisted as --partitions partitions. Each repeat measures,
for two ways of consuming batches of --batch-size rows (features and labels):

  pandas  the rank's shard as one DataFrame (dist_sync.dask's format="pandas"), sliced with
          .iloc and turned into numpy arrays batch by batch;
  torch   the rank's shard as a TensorDataset (format="torch", target="label") read through a
          DataLoader that fetches whole batches (a BatchSampler as its sampler);

the rows per second of each rank, from the moment its task holds its partitions (so building
the shard from them, which dist_sync.dask does, is included) to its last batch, and of a fresh
Python process (started by the client, without Dask or MPI) doing the same on the whole
DataFrame in one piece, once per repeat. Ranks take turns (a barrier between
them), so on a machine with fewer cores than processes each measures alone, as a worker with
cores of its own would. The ratio is the median over repeats of the ranks' mean rows/s over
the median single-process rows/s. Rows are counted per second of wall-clock time and per
second of the reading thread's CPU time (torch at one thread): on a machine shared with other
work the second is the one that holds still, and reading from memory waits for nothing else. Also timed: a whole dist_sync.dask.run of a function that
does nothing (placement, task start, dist_sync's init and shutdown on the workers).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

VARIANTS = ("pandas", "torch")


def batches_per_second(shard: Any, variant: str, batch: int) -> int:
    """Consumes ``shard`` in batches of (features, labels); returns the rows seen."""
    rows = 0
    if variant == "pandas":
        features = [c for c in shard.columns if c != "label"]
        for start in range(0, len(shard), batch):
            part = shard.iloc[start:start + batch]
            x, y = part[features].to_numpy(), part["label"].to_numpy()
            rows += len(y)
            assert len(x) == len(y)
        return rows
    import torch
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
    torch.set_num_threads(1)   # a training loop's setting where ranks share a host's cores
    sampler = BatchSampler(SequentialSampler(shard), batch, drop_last=False)
    for x, y in DataLoader(shard, sampler=sampler, batch_size=None):
        rows += len(y)
    return rows


def timed_pass(parts: List[Any], variant: str, batch: int, meta: Any) -> Dict[str, float]:
    """Builds the shard from ``parts`` as dist_sync.dask does, then reads it all: rows per
    second of wall-clock time and per second of this thread's CPU time."""
    from ..dask.shard import make_shard
    started, started_cpu = time.perf_counter(), time.thread_time()
    shard = make_shard(parts, "frame", variant, "label" if variant == "torch" else None, meta)
    rows = batches_per_second(shard, variant, batch)
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - started_cpu
    return {"rows": rows, "seconds": elapsed, "cpu_seconds": cpu, "rows_per_s": rows / elapsed,
            "rows_per_cpu_s": rows / cpu}


def rank_pass(parts: List[Any], batch: int, meta: Any) -> Dict[str, Dict[str, float]]:
    """Runs on every worker, one rank at a time."""
    import dist_sync
    results: Dict[str, Dict[str, float]] = {}
    for variant in VARIANTS:
        for turn in range(dist_sync.size()):
            dist_sync.barrier()
            if turn == dist_sync.rank():
                results[variant] = timed_pass(parts, variant, batch, meta)
    dist_sync.barrier()
    return results


def nothing(shard: Any) -> int:
    return len(shard)


def partition(spec: Any) -> Any:
    """One partition, made where it is computed (a worker), from (rows, columns, seed)."""
    rows, columns, seed = spec
    return synthetic(rows, columns, seed)


def partition_specs(rows: int, columns: int, partitions: int) -> List[Any]:
    return [(rows // partitions + (i < rows % partitions), columns, i) for i in range(partitions)]


def single_process(rows: int, columns: int, partitions: int, batch: int) -> Dict[str, Any]:
    """The baseline: a fresh Python process (no Dask, no MPI) that makes the same data as one
    pandas DataFrame and times one pass of each variant over it (SINGLE_PROCESS below)."""
    import json
    import subprocess
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMPI_", "PMIX_", "PRTE_", "PMI_", "HYDRA_"))}
    done = subprocess.run([sys.executable, "-m", "dist_sync.bench.dask", SINGLE_PROCESS,
                           str(rows), str(columns), str(partitions), str(batch)],
                          capture_output=True, text=True, env=env, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


SINGLE_PROCESS = "--single-process"


def _single_process_main(rows: int, columns: int, partitions: int, batch: int) -> None:
    import json
    import pandas as pd
    frame = pd.concat([partition(spec) for spec in partition_specs(rows, columns, partitions)],
                      ignore_index=True)
    meta = frame.iloc[:0]
    for variant in VARIANTS:
        timed_pass([frame], variant, batch, meta)   # untimed: imports, first touch
    print(json.dumps({variant: timed_pass([frame], variant, batch, meta)
                      for variant in VARIANTS}))


def synthetic(rows: int, columns: int, seed: int) -> Any:
    import pandas as pd
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.standard_normal((rows, columns), dtype=np.float32),
                         columns=[f"f{i}" for i in range(columns)])
    frame["label"] = rng.integers(0, 10, rows, dtype=np.int64)
    return frame


def measure(client: Any, rows: int, columns: int, partitions: int, batch: int,
            repeats: int) -> Dict[str, Any]:
    """The measurements of the module docstring, on the cluster of ``client``."""
    import dask.dataframe as dd
    from distributed import wait

    import dist_sync.dask

    specs = partition_specs(rows, columns, partitions)
    meta = synthetic(0, columns, 0)
    # Made on the workers, as data loaded in a cluster would be.
    ddf = dd.from_map(partition, specs, meta=meta, enforce_metadata=False).persist()
    wait(ddf)
    placement = dist_sync.dask.plan(client, ddf)
    dist_sync.dask.run(client, rank_pass, ddf, args=(batch, meta),
                       format="partitions")                     # untimed: imports, first touch
    single: Dict[str, List[Dict[str, float]]] = {v: [] for v in VARIANTS}
    ranks: Dict[str, List[List[Dict[str, float]]]] = {v: [] for v in VARIANTS}
    overhead: List[float] = []
    for _ in range(repeats):
        for variant, numbers in single_process(rows, columns, partitions, batch).items():
            single[variant].append(numbers)
        per_rank = dist_sync.dask.run(client, rank_pass, ddf, args=(batch, meta),
                                      format="partitions")
        for variant in VARIANTS:
            ranks[variant].append([r[variant] for r in per_rank])
        started = time.perf_counter()
        dist_sync.dask.run(client, nothing, ddf)
        overhead.append(time.perf_counter() - started)
    results: Dict[str, Any] = {"rows_per_rank": list(placement.rows),
                               "partitions_moved": len(placement.moved),
                               "run_overhead_s": {"median": statistics.median(overhead),
                                                  "times": overhead}}
    for variant in VARIANTS:
        results[variant] = {}
        for unit in ("rows_per_s", "rows_per_cpu_s"):
            base = statistics.median(p[unit] for p in single[variant])
            mean_rank = statistics.median(statistics.mean(r[unit] for r in passes)
                                          for passes in ranks[variant])
            slowest = statistics.median(min(r[unit] for r in passes) for passes in ranks[variant])
            results[variant][unit] = {
                "single": [p[unit] for p in single[variant]],
                "ranks": [[r[unit] for r in passes] for passes in ranks[variant]],
                "single_median": base, "rank_mean_median": mean_rank,
                "ratio": mean_rank / base, "slowest_rank_ratio": slowest / base}
    return results


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [SINGLE_PROCESS]:
        _single_process_main(*map(int, argv[1:5]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m dist_sync.bench dask", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=600_000)
    parser.add_argument("--columns", type=int, default=16)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (medians of fewer mean little)")

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from dask_mpi import initialize
    initialize(nthreads=1, dashboard=False, memory_limit=0)   # only rank 1 returns

    from distributed import Client

    from .common import write_json

    load_at_start = os.getloadavg()
    with Client() as client:
        results = measure(client, args.rows, args.columns, args.partitions, args.batch_size,
                          args.repeats)
    print(f"dist_sync.dask: {args.rows} rows x {args.columns} float32 columns + label in "
          f"{args.partitions} partitions, {len(results['rows_per_rank'])} workers (rows "
          f"{results['rows_per_rank']}), batches of {args.batch_size}, {args.repeats} repeats")
    print(f"{'variant':<9}{'per':<12}{'one process rows/s':>20}{'per rank rows/s':>18}"
          f"{'ratio':>8}{'slowest rank':>14}")
    for variant in VARIANTS:
        for unit, label in (("rows_per_s", "wall second"), ("rows_per_cpu_s", "CPU second")):
            row = results[variant][unit]
            print(f"{variant:<9}{label:<12}{row['single_median']:>20,.0f}"
                  f"{row['rank_mean_median']:>18,.0f}{row['ratio']:>7.2f}x"
                  f"{row['slowest_rank_ratio']:>13.2f}x")
    print(f"a whole dist_sync.dask.run of a function that does nothing: "
          f"{results['run_overhead_s']['median']:.3f} s (median)")
    if args.json:
        write_json(args.json, {"benchmark": "dask", "environment": {
            "command": " ".join(["python", "-m", "dist_sync.bench", "dask", *argv]),
            "cpu_count": os.cpu_count(), "load_average_start": list(load_at_start)},
            "settings": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
