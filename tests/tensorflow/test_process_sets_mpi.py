"""dist_sync.tensorflow on process sets and with Adasum under mpirun
(tests/tensorflow/process_sets_worker.py). One launch on 4 ranks runs every check: sets of every
shape (singletons, pairs, overlapping, reversed, evens and odds, all ranks), Adasum on a pair and on
all four ranks (a power of two)."""
from __future__ import annotations

from tests.support import harness

WORKER = "tests.tensorflow.process_sets_worker"
RANKS = [4]


@harness.each_check(WORKER, RANKS)
def test_check(np_: int, name: str) -> None:
    values = harness.check_values(harness.launch(WORKER, np_, env=harness.FAIL_FAST, timeout=400),
                                  name)
    if name == "every_shape":
        from tests.process_sets.process_sets_worker import shapes_of_sets
        for rank, value in enumerate(values):
            assert value["checked"] == [sorted(s) for s in shapes_of_sets(np_) if rank in s]
    if name == "adasum":
        assert [v["sets"] for v in values] == [2] * np_
    if name == "keras_optimizer_on_a_set":
        means = [-0.5 * sum(r + 1.0 for r in range(np_ - 1)) / (np_ - 1)] * (np_ - 1)
        assert [v["value"] for v in values] == means + [-0.5 * np_]
    if name == "errors":
        both = "ValueError+InvalidArgumentError"  # Horovod's TF type and dist_sync's
        for rank, out in enumerate(values):
            if rank not in (0, 1):
                assert out["not_member"].startswith(f"{both}: allreduce: rank {rank} is not "
                                                    f"in process set"), out
                assert f"broadcast: rank {rank} is not in process set" in out["root_outside"]
            else:
                assert out["root_outside"].startswith(f"{both}: broadcast: root_rank "
                                                      f"{np_ - 1} is not in process set"), out
            assert out["not_a_set"].startswith("TypeError: allgather: process_set must be"), out
            assert out["removed"].startswith(both) and "was removed" in out["removed"]
