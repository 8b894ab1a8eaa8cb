"""Run-to-run reproducibility of training on 3 ranks (a count that does not divide the
chunking evenly; tests/reproducible/test_layouts_mpi.py covers 3 to 5 ranks op by op): the same
script under different fusion thresholds, segment sizes, cycle times and a slow rank ends with
bit-identical parameters."""
import pytest

from tests.support import harness

WORKER = "tests.reproducible.training_worker"
RUNS = [
    ({}, {}),
    ({"DIST_SYNC_FUSION_THRESHOLD": "0"}, {}),
    ({"DIST_SYNC_FUSION_THRESHOLD": "20000", "DIST_SYNC_RING_SEGMENT_BYTES": "4096"},
     {"delay": 0.003}),
    ({"DIST_SYNC_CYCLE_TIME_MS": "0.2", "DIST_SYNC_SMALL_ALLREDUCE_BYTES": "0",
      "DIST_SYNC_RING_SEGMENT_BYTES": "512"}, {"delay": 0.01}),
]


@pytest.mark.parametrize("np_", [3])
def test_final_parameters_identical_across_runs(np_):
    digests = []
    for env, args in RUNS:
        results = harness.run_ok(WORKER, np_, "train", args, timeout=300,
                                 env={"DIST_SYNC_REPRODUCIBLE": "1", **env})
        assert len({r["digest"] for r in results}) == 1, f"{env} {args}: ranks differ"
        digests.append(results[0]["digest"])
    assert len(set(digests)) == 1, f"final parameters differ across runs: {digests}"
