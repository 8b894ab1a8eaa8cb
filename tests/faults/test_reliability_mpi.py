"""Misuse found by probing as a careless or hostile user would: each check of
tests/workers/reliability.py must give a clear error or the correct result, never a crash or a
hang (the launch has a timeout)."""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict

import pytest

from tests.support import harness

RANKS = [2, 3]
ENV = {"DIST_SYNC_STALL_TIMEOUT_SECONDS": "60"}


@lru_cache(maxsize=None)
def _launch(np_: int) -> Dict[str, Any]:
    run = harness.run("reliability", np_, timeout=300, env=ENV)
    try:
        return {"ranks": run.values(np_)}
    except AssertionError as failure:
        return {"failure": str(failure)}


@pytest.mark.mpi
@pytest.mark.parametrize("np_", RANKS)
@pytest.mark.parametrize("name", harness.worker_checks("reliability"))
def test_reliability(name: str, np_: int) -> None:
    harness.check_values(_launch(np_), name)
