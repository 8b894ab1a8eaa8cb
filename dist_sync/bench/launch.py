"""Launch overhead: how long ``dist_sync.run(fn, np=N)`` takes from the call to the returned
values, against a bare ``mpirun -np N python -c ...`` of the same function, started with the
same launcher and environment (README, "Running with Open MPI") and waited for with
``subprocess.run``.

    python -m dist_sync.bench launch [-np 2] [--repeats 7]

Run it as is, *not* under mpirun: it starts the jobs itself. The function initialises
dist_sync, allreduces one number and shuts down, so both forms pay for MPI's start-up and
dist_sync's init; the difference is dist_sync.run's own work: pickling the call, the rank
entry point, rank-tagged output streamed through the caller, the per-rank result files.
Rounds alternate the two forms (bare first), after one untimed round of each; the table gives
the median and spread of the timed rounds and the ratio of the medians. The launcher's
``--version`` probe, made once per process on the first dist_sync.run, is timed separately.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from ..launch import mpi
from ..launch.runner import run as dist_sync_run
from .common import write_json

BARE_CODE = ("import numpy, dist_sync\n"
             "dist_sync.init()\n"
             "dist_sync.allreduce(numpy.ones(1), name='x')\n"
             "dist_sync.shutdown()\n")


def job() -> int:
    """What every rank runs in both forms (BARE_CODE is the same as a script)."""
    import numpy
    import dist_sync
    dist_sync.init()
    dist_sync.allreduce(numpy.ones(1), name="x")
    dist_sync.shutdown()
    return 0


def time_bare(launcher: mpi.Launcher, np_: int) -> float:
    command = [launcher.path, "-np" if launcher.flavor == mpi.OPENMPI else "-n", str(np_),
               "--bind-to" if launcher.flavor == mpi.OPENMPI else "-bind-to", "none"]
    if launcher.flavor == mpi.OPENMPI:
        command.append("--oversubscribe")
    env = mpi.environment(launcher)
    started = time.perf_counter()
    subprocess.run(command + [sys.executable, "-c", BARE_CODE], env=env, check=True,
                   stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def time_run(np_: int) -> float:
    started = time.perf_counter()
    values = dist_sync_run(job, np=np_, timeout=300)
    elapsed = time.perf_counter() - started
    assert values == [0] * np_, values
    return elapsed


def summary(times: List[float]) -> Dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": times}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dist_sync.bench launch",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-np", type=int, default=2, help="ranks per job (default 2)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--mpirun", default=None, help="the launcher (default: as dist_sync.run)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (medians of fewer mean little)")

    load_at_start = os.getloadavg()
    mpi._flavor.cache_clear()
    started = time.perf_counter()
    launcher = mpi.find_launcher(args.mpirun)
    probe = time.perf_counter() - started
    time_bare(launcher, args.np)        # untimed: warms the page cache for both forms
    time_run(args.np)
    bare, launched = [], []
    for _ in range(args.repeats):
        bare.append(time_bare(launcher, args.np))
        launched.append(time_run(args.np))
    results = {"bare_mpirun": summary(bare), "dist_sync_run": summary(launched),
               "ratio_of_medians": statistics.median(launched) / statistics.median(bare),
               "launcher_probe_s": probe}
    print(f"launch overhead, {args.np} ranks, {launcher.path} ({launcher.flavor}), "
          f"{args.repeats} rounds")
    print(f"{'form':<16}{'median s':>10}{'min s':>9}{'max s':>9}")
    for name, key in (("bare mpirun", "bare_mpirun"), ("dist_sync.run", "dist_sync_run")):
        row = results[key]
        print(f"{name:<16}{row['median_s']:>10.3f}{row['min_s']:>9.3f}{row['max_s']:>9.3f}")
    print(f"dist_sync.run / bare mpirun: {results['ratio_of_medians']:.2f}x "
          f"(target <= 1.2x); launcher probe on the first call: {probe * 1000:.0f} ms")
    if args.json:
        write_json(args.json, {"benchmark": "launch", "environment": {
            "command": " ".join(["python", "-m", "dist_sync.bench", "launch", *(argv or [])]),
            "launcher": launcher.path, "flavor": launcher.flavor, "cpu_count": os.cpu_count(),
            "load_average_start": list(load_at_start)},
            "settings": {"np": args.np, "repeats": args.repeats}, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
