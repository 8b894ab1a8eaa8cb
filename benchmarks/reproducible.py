"""What DIST_SYNC_REPRODUCIBLE costs, measured with it on and off in the same run:

  mpirun -np N python -m benchmarks.reproducible [--rounds 5] [--json FILE]

* ``allreduce``: one buffer per size through the allreduce algorithm alone
  (``_core._bench_collective``, in place, the size-based choice: the small path up to
  DIST_SYNC_SMALL_ALLREDUCE_BYTES, the ring above);
* ``fusion``: ResNet-50's 161 gradients submitted async and synchronized through the engine
  (``python -m dist_sync.bench fusion`` variant (a)), and one buffer of the same total;
* ``training``: one DistributedOptimizer step (forward, backward, allreduce, SGD) of a
  3.2 M-parameter MLP with LayerNorm, batch 64, through dist_sync.torch (skipped without torch).

The engine restarts for every setting, so each round runs both settings back to back for each
workload (in alternating order) and the medians pool every round. Times are the slowest rank's; the ratio is on / off.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List

import numpy as np

from dist_sync.bench import common, fusion, tune

SIZES = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 16 << 20, 64 << 20]
SETTINGS = (True, False)


def _training_step_times(comm: Any, steps: int, warmup: int) -> List[float]:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    import dist_sync.torch as hvd

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(512, 2048), nn.LayerNorm(2048), nn.GELU(),
                        nn.Linear(2048, 1024), nn.LayerNorm(1024), nn.GELU(), nn.Linear(1024, 10))
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=1e-3),
                                         named_parameters=net.named_parameters())
    generator = torch.Generator().manual_seed(comm.Get_rank())
    x = torch.randn(64, 512, generator=generator)
    y = torch.randn(64, 10, generator=generator)
    times = []
    for step in range(warmup + steps):
        comm.Barrier()
        start = time.perf_counter()
        optimizer.zero_grad()
        F.mse_loss(net(x), y).backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return list(common.slowest_per_iteration(comm, times))


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproducible", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-n", "--iters", type=int, default=10)
    parser.add_argument("-w", "--warmup_iters", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma-separated: allreduce, fusion, training")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    MPI = common.require_mpi4py()
    import dist_sync as ds
    from dist_sync import _core

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    times: Dict[str, Dict[bool, List[float]]] = {}

    def add(key: str, setting: bool, series: List[float]) -> None:
        times.setdefault(key, {True: [], False: []})[setting].extend(series)

    workload = fusion.Workload(fusion.scaled_counts(1.0), rank, size)
    wrong = 0
    for round_number in range(args.rounds):
        # Both settings back to back for each workload, alternating which goes first, so drift
        # on a shared machine hits both alike.
        order = tune._rounds_order(SETTINGS, round_number)
        if "allreduce" not in skip:
            for nbytes in SIZES:
                for setting in order:
                    add(f"allreduce {common.format_bytes(nbytes)}", setting,
                        tune._bench(_core, nbytes, {"reproducible": setting}, args))
        for setting in order:
            if {"fusion", "training"} <= skip:
                break
            ds.init(reproducible=setting)
            try:
                if "fusion" not in skip:
                    series, bad = tune._fusion_times(comm, ds, workload, args)
                    wrong += bad
                    add("fusion: 161 async", setting, series[fusion.ASYNC])
                    add("fusion: one buffer", setting, series[fusion.ONE_BUFFER])
                if "training" not in skip:
                    try:
                        add("training step", setting,
                            _training_step_times(comm, args.iters * 2, args.warmup_iters))
                    except ImportError:
                        skip.add("training")
            finally:
                ds.shutdown()
    if rank == 0:
        print(f"# DIST_SYNC_REPRODUCIBLE on vs off: {size} ranks, {args.rounds} rounds, median of "
              f"the slowest rank's times (ms); {wrong} wrong values")
        print(f"{'workload':<24} {'on':>10} {'off':>10} {'on/off':>8}")
        rows = []
        for key, series in times.items():
            on, off = common.median(series[True]) * 1e3, common.median(series[False]) * 1e3
            rows.append({"workload": key, "on_ms": on, "off_ms": off, "ratio": on / off,
                         "on_times_s": series[True], "off_times_s": series[False]})
            print(f"{key:<24} {on:>10.3f} {off:>10.3f} {on / off:>8.3f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"ranks": size, "rounds": args.rounds, "iterations": args.iters,
                           "rows": rows}, f, indent=1)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
