"""Worker side of tests/support/harness.py. A worker is a module next to its test that registers
named checks in a Registry; the harness runs it on every rank under mpirun as
``python -m tests.<topic>.<name>_worker REQUEST`` and reads what each rank recorded.

    check = Registry()

    @check
    def allreduce_sums():          # on every rank, inside the launch's dist_sync session
        ...
        return {"digest": ...}     # JSON-able; a "digest" must be the same bits on every rank

    @check.scenario
    def rank_dies(args):           # launched alone; starts dist_sync itself, may raise, exit or
        ...                        # be killed (check.record(value) first): the test asserts on
                                   # the process too (exit code, output)

    if __name__ == "__main__":
        check.main()

A check or scenario with a parameter gets the launch's JSON arguments. A check that raises is
recorded as failed with its traceback and the next one runs; an exception that leaves a scenario
is recorded (unless it recorded its value already) and then left uncaught, as in a user's script.
Every rank writes {"rank", "results": {name: {"ok", "value" | "error"}}, "error"} to
$DIST_SYNC_TEST_OUT/rank<r>.json (nothing without it: a process run by hand just runs).
"""
from __future__ import annotations

import inspect
import json
import os
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional

import numpy as np


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def world_rank() -> int:
    """This process's rank in its MPI_COMM_WORLD; for a process MPI_Comm_spawn started (Open
    MPI's job n > 1, in the namespace's "@n"), 100 * (n - 1) + that rank, so it names a
    process of the whole launch."""
    namespace = os.environ.get("PMIX_NAMESPACE", "")
    job = namespace.rpartition("@")[2]
    offset = 100 * (int(job) - 1) if job.isdigit() and int(job) > 1 else 0
    for variable in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        if variable in os.environ:
            return offset + int(os.environ[variable])
    return 0


def _call(fn: Callable[..., Any], args: Dict[str, Any]) -> Any:
    return fn(args) if inspect.signature(fn).parameters else fn()


class Registry:
    """The named checks and scenarios of one worker module, and its entry point (main)."""

    def __init__(self, setup: Optional[Callable[[], Any]] = None) -> None:
        """`setup` runs before a launch's session starts (e.g. seeding torch)."""
        self.checks: Dict[str, Callable[..., Any]] = {}
        self.scenarios: Dict[str, Callable[..., Any]] = {}
        self._setup = setup
        self._results: Dict[str, Dict[str, Any]] = {}
        self._running: Optional[str] = None

    def _add(self, table: Dict[str, Callable[..., Any]],
             fn: Callable[..., Any]) -> Callable[..., Any]:
        name = fn.__name__
        assert name not in self.checks and name not in self.scenarios, name
        table[name] = fn
        return fn

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Registers a check: it runs on every rank inside the launch's dist_sync session."""
        return self._add(self.checks, fn)

    def scenario(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Registers a scenario: launched alone, it owns the process and dist_sync's session."""
        return self._add(self.scenarios, fn)

    def record(self, value: Any = None) -> None:
        """Records the running scenario's value now, before the process may end."""
        assert self._running in self.scenarios, "record() is for scenarios"
        self._results[self._running] = {"ok": True, "value": _jsonable(value)}
        self._write()

    def main(self, argv: Optional[List[str]] = None) -> None:
        """Runs what the harness asked for: argv[1] is {"names": [...], "args": {...}}; no names
        means every check."""
        argv = sys.argv if argv is None else argv
        request = json.loads(argv[1]) if len(argv) > 1 else {}
        names: List[str] = request.get("names") or list(self.checks)
        args: Dict[str, Any] = request.get("args") or {}
        unknown = [n for n in names if n not in self.checks and n not in self.scenarios]
        if unknown:
            raise SystemExit(f"{argv[0]}: no check or scenario {unknown}; it has checks "
                             f"{sorted(self.checks)} and scenarios {sorted(self.scenarios)}")
        if any(name in self.scenarios for name in names):
            if len(names) != 1:
                raise SystemExit(f"{argv[0]}: a scenario runs alone, got {names}")
            self._run_scenario(names[0], args)
        else:
            self._run_checks(names, args)

    def _run_scenario(self, name: str, args: Dict[str, Any]) -> None:
        self._running = name
        try:
            value = _call(self.scenarios[name], args)
        except BaseException:
            if name not in self._results:
                self._results[name] = {"ok": False, "error": traceback.format_exc()}
                self._write()
            raise
        if name not in self._results:
            self.record(value)

    def _run_checks(self, names: List[str], args: Dict[str, Any]) -> None:
        import dist_sync

        try:
            if self._setup is not None:
                self._setup()
            dist_sync.init()
            for name in names:
                try:
                    self._results[name] = {"ok": True,
                                           "value": _jsonable(_call(self.checks[name], args))}
                except Exception:  # noqa: BLE001 - reported per check
                    self._results[name] = {"ok": False, "error": traceback.format_exc()}
            dist_sync.shutdown()
        except BaseException:  # noqa: BLE001 - the session itself failed: every check with it
            self._write(error=traceback.format_exc())
            sys.stderr.write(traceback.format_exc())
            sys.stderr.flush()
            os._exit(1)
        self._write()

    def _write(self, error: str = "") -> None:
        out_dir = os.environ.get("DIST_SYNC_TEST_OUT")
        if not out_dir:
            return
        rank = world_rank()
        path = os.path.join(out_dir, f"rank{rank}.json")
        with open(path + ".tmp", "w") as handle:
            json.dump({"rank": rank, "results": self._results, "error": error}, handle)
        os.replace(path + ".tmp", path)
