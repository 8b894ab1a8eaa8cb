"""Allreduce through the engine under mpirun, N = 1..4, against numpy."""
import pytest

from tests.support import harness

WORKER = "tests.engine.allreduce_worker"


@pytest.mark.parametrize("np_", [1, 2, 3, 4])
def test_allreduce_sweep(np_):
    results = harness.run_ok(WORKER, np_, "sweep", timeout=300)
    for rank, result in enumerate(results):
        assert result["failures"] == [], f"rank {rank}: {result['failures'][:5]}"
    assert len({r["digest"] for r in results}) == 1, "ranks got different bits"


@pytest.mark.parametrize("np_", [2, 3])
def test_allreduce_small_segments_and_no_fusion(np_):
    env = {"DIST_SYNC_RING_SEGMENT_BYTES": "64", "DIST_SYNC_SMALL_ALLREDUCE_BYTES": "0",
           "DIST_SYNC_FUSION_THRESHOLD": "0", "DIST_SYNC_RING_IN_FLIGHT": "1"}
    results = harness.run_ok(WORKER, np_, "sweep", {"dtypes": ["float32", "int8", "float16"]},
                             timeout=300, env=env)
    for rank, result in enumerate(results):
        assert result["failures"] == [], f"rank {rank}: {result['failures'][:5]}"
    assert len({r["digest"] for r in results}) == 1
