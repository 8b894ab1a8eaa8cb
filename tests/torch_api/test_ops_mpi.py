"""dist_sync.torch collectives under mpirun with 2 and 3 ranks: the checks of ops_worker.py,
every one reported here as its own test, all of them run in one launch per rank count (mpirun
start-up dominates otherwise). Checks that return a digest must produce bit-identical results
on every rank."""
from __future__ import annotations

from tests.support import harness

WORKER = "tests.torch_api.ops_worker"
RANKS = [2, 3]


@harness.each_check(WORKER, RANKS)
def test_check(np_: int, name: str) -> None:
    harness.check_values(harness.launch(WORKER, np_, env=harness.FAIL_FAST), name)
