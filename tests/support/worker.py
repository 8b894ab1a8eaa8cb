"""Worker side of tests/support/harness.py: runs fn(args) on this rank and records the outcome."""
from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any, Callable

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
    for variable in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        if variable in os.environ:
            return int(os.environ[variable])
    return 0


def record(ok: bool, value: Any = None, error: str = "") -> None:
    out_dir = os.environ.get("DIST_SYNC_TEST_OUT")
    if not out_dir:
        return
    rank = world_rank()
    path = os.path.join(out_dir, f"rank{rank}.json")
    with open(path + ".tmp", "w") as handle:
        json.dump({"rank": rank, "ok": ok, "value": _jsonable(value), "error": error}, handle)
    os.replace(path + ".tmp", path)


def main(fn: Callable[[dict], Any]) -> None:
    args = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    try:
        value = fn(args)
    except BaseException:  # noqa: BLE001 - every failure must reach the harness
        record(False, error=traceback.format_exc())
        sys.stderr.write(traceback.format_exc())
        sys.stderr.flush()
        os._exit(1)
    record(True, value)
