"""dist_sync.torch training under mpirun with 2 and 3 ranks: the checks of training_worker.py
(DistributedOptimizer against single-process training, state broadcasting, sampler, model
averaging, SyncBatchNorm), every one reported here as its own test, all of them run in one launch
per rank count."""
from __future__ import annotations

from tests.support import harness

WORKER = "tests.torch_api.training_worker"
RANKS = [2, 3]


@harness.each_check(WORKER, RANKS)
def test_check(np_: int, name: str) -> None:
    harness.check_values(harness.launch(WORKER, np_, env=harness.FAIL_FAST), name)


def test_every_built_in_optimizer_was_covered() -> None:
    import torch
    values = harness.check_values(harness.launch(WORKER, 2, env=harness.FAIL_FAST),
                                  "broadcast_optimizer_state_every_optimizer")
    covered = values[0]["covered"]
    built_in = sorted(n for n in dir(torch.optim)
                      if isinstance(getattr(torch.optim, n), type)
                      and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
                      and getattr(torch.optim, n) is not torch.optim.Optimizer)
    assert covered == built_in and "LBFGS" in covered and "SparseAdam" in covered
