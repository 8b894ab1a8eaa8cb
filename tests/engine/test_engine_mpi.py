"""The engine under mpirun: negotiation, fusion, every collective, errors, join, shutdown,
stalls and idle cost. Every run has a subprocess timeout, so a hang fails instead of blocking."""
import pytest

from tests.support import harness

WORKER = "tests.engine.engine_worker"


@pytest.mark.parametrize("np_", [1, 2, 3, 4])
def test_every_collective(np_):
    results = harness.run_ok(WORKER, np_, "every_collective", timeout=240)
    for rank, checks in enumerate(results):
        assert checks["fused_requests"] == 300
        if np_ > 1:
            # Reversed submission order on odd ranks: tensors become ready in batches, which
            # are fused into far fewer ring passes than tensors.
            assert checks["fused_executions"] < 300, checks
        assert checks["cache_hits"] == 300, checks  # the second round is answered by the cache
        local_rank, local_size, cross_rank, cross_size = checks["topology"]
        assert (local_rank, local_size, cross_rank, cross_size) == (rank, np_, 0, 1)


@pytest.mark.parametrize("np_", [2, 3])
def test_mismatches_fail_on_every_rank(np_):
    results = harness.run_ok(WORKER, np_, "mismatches", timeout=180)
    last = np_ - 1
    for rank, messages in enumerate(results):
        assert "w.dtype" in messages["dtype"] and "float32" in messages["dtype"] \
            and "int32" in messages["dtype"] and f"rank {last}" in messages["dtype"]
        assert "shape" in messages["shape"] and "(4,)" in messages["shape"] and "(5,)" in messages["shape"]
        assert "reduction op" in messages["op"] and "Max" in messages["op"] and "Sum" in messages["op"]
        assert "prescale_factor" in messages["prescale"] and "2" in messages["prescale"]
        assert "postscale_factor" in messages["postscale"] and "3" in messages["postscale"]
        assert "root rank" in messages["root"] and "w.root" in messages["root"]
        assert "collective type" in messages["type"] and "broadcast" in messages["type"] \
            and "allreduce" in messages["type"]
        assert "shape after the first dimension" in messages["allgather_shape"]
        if rank != last:
            assert "w.twice" in messages["duplicate"] and "already in flight" in messages["duplicate"]
        assert "numpy.ndarray" in messages["bad_type"] and "list" in messages["bad_type"]
        assert "unsupported dtype bool" in messages["bad_dtype"]
        assert "C-contiguous" in messages["non_contiguous"]
        assert f"root_rank {np_} does not exist" in messages["bad_root"]
        assert "sum to" in messages["bad_splits"]
        assert "op must be one of" in messages["bad_op"]
        assert "already synchronized" in messages["twice"]
        assert "expected a dist_sync handle" in messages["foreign"]
        assert "not running" in messages["after_shutdown"] or "shut down" in messages["after_shutdown"]


@pytest.mark.parametrize("np_", [2, 3, 4])
def test_join(np_):
    results = harness.run_ok(WORKER, np_, "join", timeout=120)
    for rank, out in enumerate(results):
        assert out["last"] == np_ - 1  # the rank with the most data joins last
        assert out["after"] == [float(np_)]
        for step in range(rank + 1):
            active = [r for r in range(np_) if r >= step]
            assert out["results"][2 * step] == [float(sum(r + 1 for r in active))] * 3
            # Average divides by the full size: joined ranks contribute zeros.
            assert out["results"][2 * step + 1] == pytest.approx([len(active) / np_] * 2)


def test_shutdown_by_one_rank_fails_the_others_with_its_name():
    run = harness.run(WORKER, 2, "shutdown_by_rank_0", timeout=60)
    values = run.values()
    assert "rank 0 called dist_sync.shutdown()" in values[1]["message"], run.describe()
    assert "left.behind" in values[1]["message"]
    assert "rank 0 called dist_sync.shutdown()" in values[1]["later"]


def test_stall_warning_names_tensor_and_missing_rank():
    run = harness.run(WORKER, 2, "stall", {"sleep": 4}, timeout=90,
                      env={"DIST_SYNC_STALL_WARNING_SECONDS": "1"})
    values = run.values()
    assert values[0]["error"] is None and values[1]["error"] is None
    assert "Stalled operations" in run.output, run.output
    assert "stalled.tensor" in run.output
    assert "submitted by rank 0 but not by rank 1" in run.output


def test_stall_timeout_fails_every_rank_and_ends_the_job():
    env = {"DIST_SYNC_STALL_WARNING_SECONDS": "1", "DIST_SYNC_STALL_TIMEOUT_SECONDS": "3",
           "DIST_SYNC_FATAL_GRACE_SECONDS": "2"}
    run = harness.run(WORKER, 2, "stall", {"sleep": 600}, timeout=90, env=env)
    assert not run.timed_out, run.describe()
    assert run.returncode != 0, run.describe()
    # The rank that was waiting fails with the stall message naming tensor and missing rank.
    assert 0 in run.ranks and run.ranks[0].ok, run.describe()
    error = run.ranks[0].value["error"]
    assert "Stall timeout" in error and "stalled.tensor" in error and "not by rank 1" in error
    assert "Stall timeout" in run.output


def test_idle_engine_is_cheap():
    results = harness.run_ok(WORKER, 2, "idle", {"seconds": 4.0}, timeout=60)
    for rank, out in enumerate(results):
        assert out["cpu_fraction"] < 0.03, f"rank {rank} used {out['cpu_fraction']:.1%} of a core idle"


def test_exception_on_one_rank_reaches_the_others():
    run = harness.run(WORKER, 2, "exception_on_rank_1", timeout=60)
    assert not run.timed_out, run.describe()
    assert run.returncode != 0  # rank 1 died of the exception
    assert 0 in run.ranks, run.describe()
    error = run.ranks[0].value["error"]
    assert error is not None, run.describe()
    assert "rank 1 exited with an uncaught ValueError: bad batch 17" in error, error
    assert "grad.fc" in error


def test_completed_result_survives_a_peer_shutdown():
    results = harness.run_ok(WORKER, 2, "late_synchronize", timeout=60)
    assert results[0]["value"] == results[1]["value"] == [3.0, 3.0, 3.0]
    assert "rank 0 called dist_sync.shutdown()" in results[1]["later"]


@pytest.mark.parametrize("np_", [2, 3])
def test_fusion_across_different_memory_layouts(np_):
    # Rank 0: separate arrays; rank 1: views into one array at an odd offset; rank 2: 4 KiB
    # pages only. Segment plans must agree although the ranks send from different memory.
    results = harness.run_ok(WORKER, np_, "fused_layouts", timeout=180)
    assert [r["layout"] for r in results] == [rank % 3 for rank in range(np_)]
