"""Process sets under mpirun (tests/process_sets/process_sets_worker.py): every collective on
sets of every shape against numpy, sets in flight together, errors, static sets, Horovod's
documentation examples. Every run has a subprocess timeout, so a hang fails instead of blocking."""
import pytest

from tests.support import harness

WORKER = "tests.process_sets.process_sets_worker"
ENV = {**harness.FAIL_FAST, "DIST_SYNC_INIT_TIMEOUT_SECONDS": "60"}


@harness.each_check(WORKER, [2, 3, 4])
def test_check(np_, name):
    launch = harness.launch(WORKER, np_, env=ENV, timeout=400)
    values = harness.check_values(launch, name)
    if name == "numpy_every_shape":
        from tests.process_sets.process_sets_worker import shapes_of_sets
        for rank, value in enumerate(values):
            expected = [sorted(s) for s in shapes_of_sets(np_) if rank in s]
            assert value["checked"] == expected
    if name == "errors":
        for rank, out in enumerate(values):
            if rank != 0:
                assert "rank %d is not in process set" % rank in out["not_member"], out
            assert "was removed" in out["removed"], out
            assert out["duplicates"].startswith("ValueError") and "[0]" in out["duplicates"]
            assert out["negative"].startswith("ValueError")
            assert out["out_of_range"].startswith("ValueError") and f"[{np_}]" in out["out_of_range"]
            assert out["not_int"].startswith("TypeError")
            assert "not registered" in out["unregistered"]
            assert out["differing_add"].startswith("ValueError") and "collective" in out["differing_add"]
            assert "dtype" in out["mismatch"] and "process set" in out["mismatch"], out
            assert f"root_rank {np_} does not exist" in out["bad_root"]
            if np_ > 2 and rank == 1:
                assert "rank 1 is not in process set" in out["root_outside"]
            if rank in (0, np_ - 1):
                if np_ > 2:
                    assert "root_rank 1 is not in process set" in out["root_not_member"]
                assert "splits has 3 entries but there are 2 ranks" in out["splits"]


@pytest.mark.parametrize("np_", [2, 3, 4])
def test_static_sets(np_):
    values = harness.run_ok(WORKER, np_, "static_sets", timeout=120, env=harness.FAIL_FAST)
    for value in values:
        assert value["ids"] == list(range(1, len(value["ids"]) + 1))
        assert value["dynamic"] == "no error"  # sets can always be added (unlike Horovod)


@pytest.mark.parametrize("np_", [2, 3])
def test_static_sets_that_differ_fail_everywhere(np_):
    values = harness.run_ok(WORKER, np_, "static_sets_differ", timeout=120, env=harness.FAIL_FAST)
    for value in values:
        assert value["error"].startswith("ValueError"), value
        assert "same process sets" in value["error"] and "rank 1" in value["error"]
        assert value["initialized"] is False


def test_horovod_docs_examples():
    values = harness.run_ok(WORKER, 4, "horovod_docs_examples", timeout=180,
                            env=harness.FAIL_FAST)
    for rank, value in enumerate(values):
        assert value["static"] == [
            "ProcessSet(process_set_id=0, ranks=[0, 1, 2, 3], mpi_comm=None)",
            "ProcessSet(process_set_id=1, ranks=[0, 2], mpi_comm=None)",
            "ProcessSet(process_set_id=2, ranks=[1, 3], mpi_comm=None)"]
        assert value["dynamic"] == value["static"]
        own = [0, 2] if rank % 2 == 0 else [1, 3]
        assert value["static_sum"] == value["dynamic_sum"] == value["comm_sum"] == sum(own)
        assert value["comm"] == [1 if rank % 2 == 0 else 2, own]
        assert value["comm_all_sets"] == [[0, 1, 2, 3], [0, 2], [1, 3]]
