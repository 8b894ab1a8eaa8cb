"""dist_sync.torch on CUDA tensors under mpirun, 2 ranks sharing the GPU(s): the checks of
cuda_worker.py (correctness sweep, streams, device kinds, training equivalence), each reported as
its own test. Skipped where torch sees no GPU; tests/gpu/run_on_gpu.sh runs it on a GPU machine."""
from __future__ import annotations

import pytest
import torch

from tests.support import harness

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (torch.cuda.is_available() is False); run tests/gpu/run_on_gpu.sh "
           "on a GPU machine")

WORKER = "tests.gpu.cuda_worker"


@harness.each_check(WORKER, [2])
def test_cuda_check(np_: int, name: str) -> None:
    values = harness.check_values(harness.launch(WORKER, np_, timeout=400, env=harness.FAIL_FAST), name)
    if name == "producer_still_running_and_other_streams":
        # The user's call enqueued the copy and returned while the producer kernel still ran.
        assert all(v["call_returned_while_producer_ran"] for v in values), values
