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
the median and spread of the timed rounds, the ratio of the medians, and the CPU time each form
used in all its processes (the caller's and every child's; steadier than wall-clock time on a
machine shared with other work). The launcher's
``--version`` probe, made once per process on the first dist_sync.run, is timed separately.
"""
from __future__ import annotations

import argparse
import builtins
import os
import resource
import statistics
import subprocess
import sys
import time
import types
from typing import Any, Dict, List, Optional, Tuple

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


def _cpu_seconds() -> float:
    """CPU time of this process and of every child it has waited for (mpirun and its ranks)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_bare(launcher: mpi.Launcher, np_: int) -> Tuple[float, float]:
    command = [launcher.path, "-np" if launcher.flavor == mpi.OPENMPI else "-n", str(np_),
               "--bind-to" if launcher.flavor == mpi.OPENMPI else "-bind-to", "none"]
    if launcher.flavor == mpi.OPENMPI:
        command.append("--oversubscribe")
    env = mpi.environment(launcher)
    started, started_cpu = time.perf_counter(), _cpu_seconds()
    subprocess.run(command + [sys.executable, "-c", BARE_CODE], env=env, check=True,
                   stdin=subprocess.DEVNULL)
    return time.perf_counter() - started, _cpu_seconds() - started_cpu


# The job as a function of no importable module (a notebook's or __main__'s), which cloudpickle
# sends by value: sent by reference, every rank would import this benchmark module first.
JOB_BY_VALUE = types.FunctionType(job.__code__, {"__builtins__": builtins}, job.__name__)


def time_run(np_: int) -> Tuple[float, float]:
    started, started_cpu = time.perf_counter(), _cpu_seconds()
    values = dist_sync_run(JOB_BY_VALUE, np=np_, timeout=300)
    elapsed, cpu = time.perf_counter() - started, _cpu_seconds() - started_cpu
    assert values == [0] * np_, values
    return elapsed, cpu


def summary(samples: List[Tuple[float, float]]) -> Dict[str, Any]:
    times, cpu = [t for t, _ in samples], [c for _, c in samples]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": times, "cpu_median_s": statistics.median(cpu), "cpu_s": cpu}


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
    results: Dict[str, Any] = {"bare_mpirun": summary(bare), "dist_sync_run": summary(launched),
                               "launcher_probe_s": probe}
    results["ratio_of_medians"] = (results["dist_sync_run"]["median_s"]
                                   / results["bare_mpirun"]["median_s"])
    results["cpu_ratio_of_medians"] = (results["dist_sync_run"]["cpu_median_s"]
                                       / results["bare_mpirun"]["cpu_median_s"])
    print(f"launch overhead, {args.np} ranks, {launcher.path} ({launcher.flavor}), "
          f"{args.repeats} rounds")
    print(f"{'form':<16}{'median s':>10}{'min s':>9}{'max s':>9}{'CPU s (median)':>16}")
    for name, key in (("bare mpirun", "bare_mpirun"), ("dist_sync.run", "dist_sync_run")):
        row = results[key]
        print(f"{name:<16}{row['median_s']:>10.3f}{row['min_s']:>9.3f}{row['max_s']:>9.3f}"
              f"{row['cpu_median_s']:>16.3f}")
    print(f"dist_sync.run / bare mpirun: {results['ratio_of_medians']:.2f}x wall-clock "
          f"(target <= 1.2x), {results['cpu_ratio_of_medians']:.2f}x CPU; launcher probe on "
          f"the first call: {probe * 1000:.0f} ms")
    if args.json:
        write_json(args.json, {"benchmark": "launch", "environment": {
            "command": " ".join(["python", "-m", "dist_sync.bench", "launch", *(argv or [])]),
            "launcher": launcher.path, "flavor": launcher.flavor, "cpu_count": os.cpu_count(),
            "load_average_start": list(load_at_start)},
            "settings": {"np": args.np, "repeats": args.repeats}, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
