"""allreduce(op=Adasum) under mpirun (tests/engine/adasum_worker.py) on 2 and 4 ranks."""
import pytest

from tests.support import harness

WORKER = "tests.engine.adasum_worker"


@pytest.mark.parametrize("np_", [1, 2, 4])
def test_adasum(np_):
    values = harness.run_ok(WORKER, np_, "numpy_and_torch", timeout=240,
                            env=harness.FAIL_FAST)
    assert [v["size"] for v in values] == [np_] * np_
