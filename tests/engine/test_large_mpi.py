"""Buffers beyond 32-bit counts under mpirun (about 5 GiB of memory per rank)."""
import pytest

from tests.support import harness

WORKER = "tests.engine.large_worker"


@pytest.mark.slow
def test_buffers_over_two_gigabytes():
    results = harness.run_ok(WORKER, 2, "buffers_over_two_gigabytes", timeout=600)
    for rank, checks in enumerate(results):
        assert checks["allreduce_rows_ok"] and checks["allreduce_tail_ok"], checks
        assert checks["alltoall_splits"] == [(1 << 30) + 3] * 2
        assert checks["alltoall_ok"], checks
