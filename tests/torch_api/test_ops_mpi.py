"""dist_sync.torch under mpirun with 2 and 3 ranks.

Each worker (tests/workers/torch_ops.py, torch_training.py) runs all its named checks in one
launch per rank count (mpirun start-up dominates otherwise); every check is reported here as its
own test. Checks that return a digest must produce bit-identical results on every rank.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict

import pytest

from tests.support import harness

WORKERS = ["torch_ops", "torch_training"]
RANKS = [2, 3]
# A mismatch between ranks fails in a minute with the engine's message instead of hanging.
ENV = {"DIST_SYNC_STALL_TIMEOUT_SECONDS": "60"}


@lru_cache(maxsize=None)
def _launch(worker: str, np_: int) -> Dict[str, Any]:
    """Every rank's results, or the launch's failure (cached too: one launch per worker and N)."""
    run = harness.run(worker, np_, timeout=300, env=ENV)
    try:
        return {"ranks": run.values(np_)}
    except AssertionError as failure:
        return {"failure": str(failure)}


CASES = [(worker, np_, name) for worker in WORKERS for np_ in RANKS
         for name in harness.worker_checks(worker)]


@pytest.mark.parametrize("worker,np_,name", CASES,
                         ids=[f"{w}-np{n}-{c}" for w, n, c in CASES])
def test_check(worker: str, np_: int, name: str) -> None:
    harness.check_values(_launch(worker, np_), name)


def test_every_built_in_optimizer_was_covered() -> None:
    import torch
    launch = _launch("torch_training", 2)
    assert "failure" not in launch, launch.get("failure")
    covered = launch["ranks"][0]["broadcast_optimizer_state_every_optimizer"]["value"]["covered"]
    built_in = sorted(n for n in dir(torch.optim)
                      if isinstance(getattr(torch.optim, n), type)
                      and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
                      and getattr(torch.optim, n) is not torch.optim.Optimizer)
    assert covered == built_in and "LBFGS" in covered and "SparseAdam" in covered
