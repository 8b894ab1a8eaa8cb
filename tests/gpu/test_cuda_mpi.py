"""dist_sync.torch on CUDA tensors under mpirun, 2 ranks sharing the GPU(s): the checks of
tests/workers/torch_cuda.py (correctness sweep, streams, device kinds, training equivalence),
each reported as its own test. Skipped where torch sees no GPU; tests/gpu/run_on_gpu.sh runs it
on a GPU machine."""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict

import pytest
import torch

from tests.support import harness

pytestmark = [pytest.mark.mpi, pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (torch.cuda.is_available() is False); run tests/gpu/run_on_gpu.sh "
           "on a GPU machine")]

WORKER = "torch_cuda"
NP = 2
ENV = {"DIST_SYNC_STALL_TIMEOUT_SECONDS": "60"}


@lru_cache(maxsize=None)
def _launch() -> Dict[str, Any]:
    run = harness.run(WORKER, NP, timeout=400, env=ENV)
    try:
        return {"ranks": run.values(NP)}
    except AssertionError as failure:
        return {"failure": str(failure)}


@pytest.mark.parametrize("name", harness.worker_checks(WORKER))
def test_cuda_check(name: str) -> None:
    values = harness.check_values(_launch(), name)
    if name == "producer_still_running_and_other_streams":
        # The user's call enqueued the copy and returned while the producer kernel still ran.
        assert all(v["call_returned_while_producer_ran"] for v in values), values
