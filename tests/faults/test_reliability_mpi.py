"""Misuse found by probing as a careless or hostile user would: each check of
reliability_worker.py must give a clear error or the correct result, never a crash or a hang
(the launch has a timeout)."""
from __future__ import annotations

from tests.support import harness

WORKER = "tests.faults.reliability_worker"
RANKS = [2, 3]


@harness.each_check(WORKER, RANKS)
def test_reliability(np_: int, name: str) -> None:
    harness.check_values(harness.launch(WORKER, np_, env=harness.FAIL_FAST), name)
