"""Training through dist_sync.tensorflow under mpirun: DistributedGradientTape and the Keras
DistributedOptimizer equal single-process large-batch training in float64, with weights
bit-identical on every rank; callbacks; SyncBatchNormalization. One launch on 3 ranks runs every
check of training_worker.py (2 ranks: the collectives in test_ops_mpi.py and the Keras example in
test_examples_mpi.py; TensorFlow's start-up makes every launch cost)."""
from __future__ import annotations

from tests.support import harness

WORKER = "tests.tensorflow.training_worker"
RANKS = [3]


@harness.each_check(WORKER, RANKS)
def test_check(np_: int, name: str) -> None:
    harness.check_values(harness.launch(WORKER, np_, env=harness.FAIL_FAST), name)
