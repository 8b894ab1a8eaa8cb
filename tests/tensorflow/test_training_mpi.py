"""Training through dist_sync.tensorflow under mpirun (2 and 3 ranks): DistributedGradientTape
and the Keras DistributedOptimizer equal single-process large-batch training in float64, with
weights bit-identical on every rank; callbacks; SyncBatchNormalization. One launch per rank
count runs every check of training_worker.py."""
from __future__ import annotations

from tests.support import harness

WORKER = "tests.tensorflow.training_worker"
RANKS = [2, 3]


@harness.each_check(WORKER, RANKS)
def test_check(np_: int, name: str) -> None:
    harness.check_values(harness.launch(WORKER, np_, env=harness.FAIL_FAST), name)
