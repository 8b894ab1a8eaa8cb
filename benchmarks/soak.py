"""`make soak`: many operations through one engine session, checking every result and watching
the resident memory of every rank for growth (a leak per operation shows up as a trend).

    mpirun -np 2 python -m benchmarks.soak [--small 20000] [--large 200] [--large-mib 32]

Phase 1: `--small` allreduces of 1..1024 float32 elements, submitted asynchronously in batches of
50 so that the engine fuses them (names repeat, so they are answered from the response cache).
Phase 2: `--large` allreduces of `--large-mib` MiB each (the ring, many segments), alternating
in place and out of place. Every result is checked exactly (integer-valued floats). RSS (VmRSS)
is sampled after a warm-up, then at the middle and end of each phase; rank 0 prints a table and
the process exits non-zero on a wrong result or on growth beyond the limits below.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Dict, List

import numpy as np

import dist_sync as ds

BATCH = 50
# Limits: what is left after the warm-up may grow a little (allocator arenas settle, numpy caches
# fill), but not with the number of operations.
MAX_GROWTH_MIB = 16.0          # warm-up -> end
MAX_SECOND_HALF_MIB = 4.0      # middle -> end of each phase: the trend a leak would show


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def small_batch(batch: int, rank: int, size: int, buffers: List[np.ndarray]) -> None:
    """One batch of fused small allreduces, every result checked."""
    for j, buffer in enumerate(buffers):
        buffer.fill(float(rank + j + batch % 7))
    handles = [ds.allreduce_async_(buffer, op=ds.Sum, name=f"soak.small.{j}")
               for j, buffer in enumerate(buffers)]
    for j, handle in enumerate(handles):
        result = ds.synchronize(handle)
        expected = float(sum(r + j + batch % 7 for r in range(size)))
        if not np.all(result == expected):
            raise AssertionError(f"small batch {batch} tensor {j}: got {result[:4]}, expected {expected}")


def large_step(step: int, rank: int, size: int, buffer: np.ndarray) -> None:
    buffer.fill(float(rank + step % 5))
    expected = float(sum(r + step % 5 for r in range(size)))
    if step % 2:
        result = ds.allreduce(buffer, op=ds.Sum, name="soak.large")  # a fresh output array
    else:
        result = ds.allreduce_(buffer, op=ds.Sum, name="soak.large.inplace")
    # Spot checks at both ends and the middle keep the check cheap next to the 2x32 MiB traffic.
    for index in (0, result.size // 2, result.size - 1):
        if result[index] != expected:
            raise AssertionError(f"large step {step}: element {index} is {result[index]}, expected {expected}")
    if step % 20 == 0 and not np.all(result == expected):
        raise AssertionError(f"large step {step}: wrong elements")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=20000, help="small allreduces (multiple of 50)")
    parser.add_argument("--large", type=int, default=200, help="large allreduces")
    parser.add_argument("--large-mib", type=int, default=32, help="MiB per large allreduce")
    args = parser.parse_args()
    ds.init()
    rank, size = ds.rank(), ds.size()
    buffers = [np.empty(1 + (j * 97) % 1024, dtype=np.float32) for j in range(BATCH)]
    large = np.empty((args.large_mib << 20) // 4, dtype=np.float32)
    samples: Dict[str, float] = {}
    times: Dict[str, float] = {}

    # Warm-up: the same work once, so buffers, caches and MPI's own resources exist.
    for batch in range(20):
        small_batch(batch, rank, size, buffers)
    for step in range(4):
        large_step(step, rank, size, large)
    ds.barrier()
    samples["start"] = rss_mib()

    batches = args.small // BATCH
    started = time.monotonic()
    for batch in range(batches):
        small_batch(batch, rank, size, buffers)
        if batch == batches // 2:
            samples["small middle"] = rss_mib()
    times["small"] = time.monotonic() - started
    samples["small end"] = rss_mib()

    started = time.monotonic()
    for step in range(args.large):
        large_step(step, rank, size, large)
        if step == args.large // 2:
            samples["large middle"] = rss_mib()
    times["large"] = time.monotonic() - started
    samples["large end"] = rss_mib()
    stats = ds._core._engine_stats()

    everyone = ds.allgather_object({"rank": rank, "rss": samples})
    if rank == 0:
        report(args, everyone, times, stats)
    problems = check(samples)
    ds.shutdown()
    if problems:
        sys.stderr.write(f"rank {rank}: " + "; ".join(problems) + "\n")
        sys.exit(1)


def check(samples: Dict[str, float]) -> List[str]:
    problems = []
    if samples["large end"] - samples["start"] > MAX_GROWTH_MIB:
        problems.append(f"RSS grew {samples['large end'] - samples['start']:.1f} MiB over the soak "
                        f"(limit {MAX_GROWTH_MIB})")
    for phase in ("small", "large"):
        growth = samples[f"{phase} end"] - samples[f"{phase} middle"]
        if growth > MAX_SECOND_HALF_MIB:
            problems.append(f"RSS grew {growth:.1f} MiB in the second half of the {phase} phase "
                            f"(limit {MAX_SECOND_HALF_MIB})")
    return problems


def report(args: argparse.Namespace, everyone: list, times: Dict[str, float],
           stats: Dict[str, int]) -> None:
    print(f"dist_sync soak: {len(everyone)} ranks; {args.small} small allreduces (batches of "
          f"{BATCH}, fused) in {times['small']:.1f} s "
          f"({args.small / times['small']:.0f}/s); {args.large} x {args.large_mib} MiB allreduces "
          f"in {times['large']:.1f} s; engine executions {stats['executions']}, cache hits "
          f"{stats['cache_hits']}; every result correct")
    columns = ["start", "small middle", "small end", "large middle", "large end"]
    print(" rank " + "".join(f"{c:>14}" for c in columns) + "   (VmRSS, MiB)")
    for entry in everyone:
        print(f" {entry['rank']:>4} " + "".join(f"{entry['rss'][c]:>14.1f}" for c in columns))
    print(json.dumps({"small": args.small, "large": args.large, "large_mib": args.large_mib,
                      "seconds": times, "rss_mib": {e["rank"]: e["rss"] for e in everyone}}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
