"""What Horovod scripts and Horovod's own tests rely on (tests/torch_api/horovod_compat_worker.py),
under mpirun with 2 and 4 ranks (Adasum needs a power of two), each check reported as a test."""
from __future__ import annotations

from tests.support import harness

WORKER = "tests.torch_api.horovod_compat_worker"


@harness.each_check(WORKER, [2, 4])
def test_check(np_: int, name: str) -> None:
    harness.check_values(harness.launch(WORKER, np_, env=harness.FAIL_FAST), name)
