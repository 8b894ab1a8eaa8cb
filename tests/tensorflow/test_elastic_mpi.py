"""Elastic training with dist_sync.tensorflow under `mpirun --with-ft ulfm` (one launch, see
elastic_worker.py) on 4 ranks: a DistributedGradientTape loop in a TensorFlowState loses world
rank 0, then Keras model.fit with KerasState and the elastic callbacks loses world rank 2
mid-epoch. The survivors finish both: the tape loop's result equals full-batch gradient descent
in numpy; tf.functions traced before the loss (an allreduce, a DistributedGradientTape with a
local source, size_op) run over the survivors after it; the Keras model's weights are
bit-identical on the survivors and reach the accuracy target. A second launch: model.fit on 3
ranks loses one, a replacement is spawned and merged, and the job ends on 3 ranks again."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support import harness

pytestmark = pytest.mark.skipif(harness.mpi_flavor(harness.mpirun_path()) != "openmpi",
                                reason="elastic training needs Open MPI's ULFM")

WORKER = "tests.tensorflow.elastic_worker"
TAPE_STEPS = 12
KERAS_EPOCHS = 4


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from tests.elastic.elastic_worker import save_digits

    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    save_digits(path)
    return str(path)


def gradient_descent(steps: int) -> np.ndarray:
    data = np.random.default_rng(5).standard_normal((24, 3))
    targets = data @ np.array([1.5, -2.0, 0.5])
    w = np.zeros(3)
    rate = float(np.float32(0.1))  # Keras keeps the learning rate in a float32 variable
    for _ in range(steps):
        w -= rate * 2.0 / 24.0 * data.T @ (data @ w - targets)
    return w


def test_tape_and_keras_runs_survive_lost_ranks(digits):
    run = harness.run(WORKER, 4, "elastic_tensorflow",
                      {"data": digits, "tape_kill": [0, 5], "tape_steps": TAPE_STEPS,
                       "keras_kill": [2, 1, 3], "keras_epochs": KERAS_EPOCHS},
                      timeout=240, mpirun_args=["--with-ft", "ulfm"],
                      env={"DIST_SYNC_ELASTIC_MAX_NP": "1"})  # shrink only: no replacements
    assert not run.timed_out, run.describe()
    for victim in (0, 2):
        assert "killed_at" in run.ranks[victim].value, run.describe()
    survivors = [run.ranks[1], run.ranks[3]]
    assert all(s.ok for s in survivors), run.describe()
    for value in (s.value for s in survivors):
        tape = value["tape"]
        np.testing.assert_allclose(tape["w"], gradient_descent(TAPE_STEPS), rtol=1e-12)
        assert tape["iterations"] == TAPE_STEPS
        assert tape["sizes"][0] == 4 and tape["sizes"][-1] == 3, tape["sizes"]
        # World ranks 1, 2 and 3 survive the tape run; graphs traced on 4 ranks run on 3.
        assert value["mean_rank_after"] == 2.0
        assert value["gradients_after"] == [2.0, value["world_rank"] / 3.0]
        assert value["size_op_after"] == 3
        keras = value["keras"]
        assert keras["epoch"] == KERAS_EPOCHS and keras["batch"] == 0
        assert [r["size"] for r in keras["resets"]] == [2]
        assert keras["accuracy"] >= 0.9, keras["accuracy"]
        assert value["size"] == 2
    assert survivors[0].value["keras"]["digest"] == survivors[1].value["keras"]["digest"]


def test_keras_fit_grows_back_to_its_size(digits):
    # Batches on 2 ranks slow enough that the replacement (a TensorFlow start-up) joins mid-run.
    run = harness.run(WORKER, 3, "keras_grows_back",
                      {"data": digits, "keras_kill": [1, 1, 3], "keras_epochs": KERAS_EPOCHS,
                       "np": 3, "shrunk_sleep": 0.3},
                      timeout=240, mpirun_args=["--with-ft", "ulfm"])
    assert not run.timed_out, run.describe()
    assert run.returncode == 0, run.describe()
    assert "killed_at" in run.ranks[1].value, run.describe()
    assert 100 in run.ranks, run.describe()  # the replacement: the first spawned job's rank 0
    final = {r: run.ranks[r] for r in (0, 2, 100)}
    assert all(p.ok for p in final.values()), run.describe()
    values = {r: p.value for r, p in final.items()}
    assert [values[r]["rank"] for r in (0, 2, 100)] == [0, 1, 2]  # survivors first, in order
    assert len({v["digest"] for v in values.values()}) == 1
    for value in values.values():
        assert value["size"] == 3 and value["epoch"] == KERAS_EPOCHS
        assert value["accuracy"] >= 0.9, value["accuracy"]
    for r in (0, 2):
        assert [reset["size"] for reset in values[r]["resets"]] == [2, 3]
        sizes = values[r]["sizes"]
        assert sizes[0] == 3 and 2 in sizes and sizes[-1] == 3, sizes
    assert [reset["size"] for reset in values[100]["resets"]] == [3]
