"""Host staging of CUDA tensors through the real engine, without a GPU: staged_worker.py runs on
a simulated device (tests/support/fake_device.py) under mpirun with 2 and 3 ranks, in one launch
per rank count; every named check is reported as its own test."""
from __future__ import annotations

from tests.support import harness

WORKER = "tests.torch_api.staged_worker"
RANKS = [2, 3]


@harness.each_check(WORKER, RANKS)
def test_staged_check(np_: int, name: str) -> None:
    harness.check_values(harness.launch(WORKER, np_, timeout=400, env=harness.FAIL_FAST), name)
