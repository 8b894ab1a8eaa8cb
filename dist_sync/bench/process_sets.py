"""``python -m dist_sync.bench process_sets``: do disjoint process sets run at the same time?

The ranks are split into two halves, each a process set (on 4 ranks: {0, 1} and {2, 3}). One
float32 buffer per rank (``--bytes``, 64 MiB by default) is summed in place (``allreduce_``)
in each of these variants:

(a) ``together``: both halves allreduce on their own set at the same time;
(b) ``first_alone`` / ``second_alone``: one half allreduces on its set, the other idles;
(c) ``one_after_other``: the first half, then (after a barrier of every rank) the second — what
    a library that serves process sets one after the other costs at best;
(d) ``global``: every rank allreduces on the global set;
(e) ``small_alone``: the first half's set allreduces 4 KiB, the others idle;
(f) ``small_during_big``: every rank starts (d) with allreduce_async_, then the first half
    allreduces 4 KiB on its set; only that small operation is timed.

If the sets run concurrently, (a) takes about as long as the slower of (b), not their sum (c)
— given enough cores for all ranks at once: with more ranks than cores the ranks of the two
halves take turns on the cores and (a) approaches (c) whatever the library does. (f) against
(e) is the test that needs no spare cores: the ranks of the first half are in both sets, and a
library that serves one set at a time makes the small operation wait for the 64 MiB one.
Timing follows Note [How a benchmark iteration is timed] (barrier, the variant, maximum over
ranks, median over iterations; the barrier polls without spinning, so idle ranks leave the cores
to the timed ones); every result is checked (the sum of the members' rank + 1).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

from . import common

TOGETHER, FIRST, SECOND, SERIAL, GLOBAL, SMALL, SMALL_DURING_BIG = (
    "together", "first_alone", "second_alone", "one_after_other", "global", "small_alone",
    "small_during_big")
SMALL_BYTES = 4096
LABELS = {
    TOGETHER: "(a) both halves at once",
    FIRST: "(b) first half alone",
    SECOND: "(b) second half alone",
    SERIAL: "(c) one half after the other",
    GLOBAL: "(d) every rank, global set",
    SMALL: "(e) 4 KiB on the first half",
    SMALL_DURING_BIG: "(f) (e) while (d) runs",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bytes", type=common.parse_size, default=64 << 20,
                        help="buffer per rank (default 64M)")
    parser.add_argument("-n", "--iters", type=int, default=10, help="timed iterations")
    parser.add_argument("-w", "--warmup-iters", type=int, default=2, help="untimed iterations")
    parser.add_argument("--json", help="also write the results to this JSON file")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Runs on every rank; rank 0 prints the table. Returns the exit code."""
    MPI = common.require_mpi4py()
    import dist_sync as ds

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if size < 2 or size % 2:
        raise SystemExit("process_sets needs an even number of ranks (two halves)")
    if args.iters < 1 or args.warmup_iters < 0:
        raise SystemExit("-n must be >= 1 and -w >= 0")
    ds.init(process_sets="dynamic")
    env = common.environment(comm, argv)
    halves = [list(range(size // 2)), list(range(size // 2, size))]
    sets = [ds.add_process_set(ranks) for ranks in halves]
    mine = 0 if rank < size // 2 else 1
    buffer = np.empty(args.bytes // 4, dtype=np.float32)
    wrong = 0

    def allreduce_on(process_set: Any, members: List[int]) -> None:
        nonlocal wrong
        ds.allreduce_(buffer, op=ds.Sum, name="bench", process_set=process_set)
        expected = float(sum(r + 1 for r in members))
        wrong += int(np.count_nonzero(buffer != expected))

    def barrier() -> None:
        # MPI_Barrier spins: ranks with nothing to do would take the cores of those timed (with
        # more ranks than cores). Polling every 100 us costs nothing and aligns starts to ~0.1 ms.
        request = comm.Ibarrier()
        while not request.Test():
            time.sleep(1e-4)

    def serial() -> None:
        if mine == 0:
            allreduce_on(sets[0], halves[0])
        barrier()
        if mine == 1:
            allreduce_on(sets[1], halves[1])

    small = np.empty(SMALL_BYTES // 4, dtype=np.float32)

    def small_on_first_half() -> float:
        """Seconds the 4 KiB allreduce of the first half takes (0 on the other ranks)."""
        nonlocal wrong
        if mine != 0:
            return 0.0
        small.fill(rank + 1)
        start = time.perf_counter()
        ds.allreduce_(small, op=ds.Sum, name="small", process_set=sets[0])
        elapsed = time.perf_counter() - start
        wrong += int(np.count_nonzero(small != float(sum(r + 1 for r in halves[0]))))
        return elapsed

    def small_during_big() -> float:
        nonlocal wrong
        handle = ds.allreduce_async_(buffer, op=ds.Sum, name="bench")
        elapsed = small_on_first_half()
        ds.synchronize(handle)
        wrong += int(np.count_nonzero(buffer != float(sum(r + 1 for r in range(size)))))
        return elapsed

    timed_inside = {SMALL: small_on_first_half, SMALL_DURING_BIG: small_during_big}
    variants: Dict[str, Callable[[], None]] = {
        TOGETHER: lambda: allreduce_on(sets[mine], halves[mine]),
        FIRST: lambda: allreduce_on(sets[0], halves[0]) if mine == 0 else None,
        SECOND: lambda: allreduce_on(sets[1], halves[1]) if mine == 1 else None,
        SERIAL: serial,
        GLOBAL: lambda: allreduce_on(None, list(range(size))),
        SMALL: small_on_first_half,
        SMALL_DURING_BIG: small_during_big,
    }
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for iteration in range(args.warmup_iters + args.iters):
        # Rotated so that no variant always follows the same one.
        names = list(variants)
        shift = iteration % len(names)
        for name in names[shift:] + names[:shift]:
            buffer.fill(rank + 1)
            barrier()
            if name in timed_inside:
                elapsed = timed_inside[name]()
            else:
                start = time.perf_counter()
                variants[name]()
                elapsed = time.perf_counter() - start
            if iteration >= args.warmup_iters:
                times[name].append(elapsed)
    medians = {name: common.median(common.slowest_per_iteration(comm, values))
               for name, values in times.items()}
    wrong = common.sum_over_ranks(comm, wrong)
    if rank == 0:
        out = sys.stdout
        out.write(f"# {env['command']}\n# {size} ranks, halves {halves[0]} and {halves[1]}, "
                  f"{common.format_bytes(args.bytes)} float32 per rank, median of {args.iters}\n")
        alone = max(medians[FIRST], medians[SECOND])
        for name, label in LABELS.items():
            against = medians[SMALL] if name in timed_inside else alone
            what = "(e)" if name in timed_inside else "slower half alone"
            out.write(f"{label:32s} {medians[name] * 1e3:9.3f} ms   "
                      f"{medians[name] / against:5.2f} x {what}\n")
        out.write(f"# wrong values: {wrong}\n")
        if args.json:
            common.write_json(args.json, {
                "benchmark": "process_sets", "environment": env, "bytes": args.bytes,
                "iterations": args.iters, "halves": halves, "wrong": wrong,
                "median_seconds": medians, "seconds": times})
    for process_set in sets:
        ds.remove_process_set(process_set)
    ds.shutdown()
    return 1 if wrong else 0
