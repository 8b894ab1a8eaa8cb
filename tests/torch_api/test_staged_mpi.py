"""Host staging of CUDA tensors through the real engine, without a GPU: tests/workers/
torch_staged.py runs on a simulated device (tests/fake_device.py) under mpirun with 2 and 3
ranks, in one launch per rank count; every named check is reported as its own test."""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict

import pytest

from tests.support import harness

WORKER = "torch_staged"
RANKS = [2, 3]
# A mismatch between ranks fails in a minute with the engine's message instead of hanging.
ENV = {"DIST_SYNC_STALL_TIMEOUT_SECONDS": "60"}


@lru_cache(maxsize=None)
def _launch(np_: int) -> Dict[str, Any]:
    """Every rank's results, or the launch's failure (one launch per rank count)."""
    run = harness.run(WORKER, np_, timeout=400, env=ENV)
    try:
        return {"ranks": run.values(np_)}
    except AssertionError as failure:
        return {"failure": str(failure)}


CASES = [(np_, name) for np_ in RANKS for name in harness.worker_checks(WORKER)]


@pytest.mark.mpi
@pytest.mark.parametrize("np_,name", CASES, ids=[f"np{n}-{c}" for n, c in CASES])
def test_staged_check(np_: int, name: str) -> None:
    harness.check_values(_launch(np_), name)
