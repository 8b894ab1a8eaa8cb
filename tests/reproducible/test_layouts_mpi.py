"""Reproducibility through the engine under mpirun, N = 3..5: a tensor's bits are the same
alone, fused at every position, grouped, and under different fusion thresholds, segment sizes,
small-message thresholds, cycle times and a delayed rank."""
import pytest

from tests.support import harness

WORKER = "tests.reproducible.layouts_worker"
SETTINGS = [
    ({}, {}),
    ({"DIST_SYNC_FUSION_THRESHOLD": "0", "DIST_SYNC_RING_SEGMENT_BYTES": "4096"}, {}),
    ({"DIST_SYNC_FUSION_THRESHOLD": "300000", "DIST_SYNC_SMALL_ALLREDUCE_BYTES": "0",
      "DIST_SYNC_RING_IN_FLIGHT": "1"}, {"delay": 0.02}),
    ({"DIST_SYNC_CYCLE_TIME_MS": "20", "DIST_SYNC_SMALL_ALLREDUCE_BYTES": "1G",
      "DIST_SYNC_RING_SEGMENT_BYTES": "1000"}, {"delay": 0.005}),
]


@pytest.mark.parametrize("np_", [3, 4, 5])
def test_layouts_and_settings_give_the_same_bits(np_):
    digests = set()
    for env, args in SETTINGS:
        results = harness.run_ok(WORKER, np_, "layouts", args, timeout=300,
                                 env={"DIST_SYNC_REPRODUCIBLE": "1", **env})
        for rank, result in enumerate(results):
            assert result["failures"] == [], f"{env} {args}, rank {rank}: {result['failures'][:5]}"
        digests |= {result["digest"] for result in results}
    assert len(digests) == 1, f"{len(digests)} different results across settings and ranks"


@pytest.mark.parametrize("np_", [3, 4])
def test_engine_sweep_against_numpy(np_):
    """Every dtype x op x size through the engine with the reproducible order, against numpy,
    with tiny segments and the small path off, then with everything on the small path."""
    for env in ({"DIST_SYNC_RING_SEGMENT_BYTES": "64", "DIST_SYNC_SMALL_ALLREDUCE_BYTES": "0"},
                {"DIST_SYNC_SMALL_ALLREDUCE_BYTES": "1G"}):
        results = harness.run_ok("tests.engine.allreduce_worker", np_, "sweep", timeout=300,
                                 env={"DIST_SYNC_REPRODUCIBLE": "1", **env})
        for rank, result in enumerate(results):
            assert result["failures"] == [], f"{env}, rank {rank}: {result['failures'][:5]}"
        assert len({r["digest"] for r in results}) == 1, "ranks got different bits"
