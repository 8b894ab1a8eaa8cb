"""dist_sync.tensorflow collectives under mpirun with 2 and 3 ranks: every check of ops_worker.py
is its own test; all of them run in one launch per rank count (TensorFlow's import dominates
otherwise). Checks that return a digest must produce bit-identical results on every rank."""
from __future__ import annotations

from tests.support import harness

WORKER = "tests.tensorflow.ops_worker"
RANKS = [2, 3]


@harness.each_check(WORKER, RANKS)
def test_check(np_: int, name: str) -> None:
    values = harness.check_values(harness.launch(WORKER, np_, env=harness.FAIL_FAST), name)
    if name == "errors":
        size = np_
        for messages in values:
            assert messages["bool"].startswith("TypeError: allreduce: unsupported dtype bool; "
                                               "dist_sync supports tf.uint8"), messages
            assert messages["uint16"].startswith("TypeError: reducescatter: unsupported dtype "
                                                 "uint16; "), messages
            assert messages["list"] == ("TypeError: allreduce expects a tf.Tensor or "
                                        "tf.Variable, got list"), messages
            assert messages["op"].startswith("ValueError: op must be one of dist_sync.Average")
            assert messages["root"].startswith(f"ValueError: root_rank {size} does not exist")
            # Horovod's TensorFlow type, and a ValueError as in the other front ends.
            assert messages["splits"].startswith("InvalidArgumentError: splits ["), messages
            assert messages["even"].startswith("InvalidArgumentError: alltoall without splits "
                                               "needs the first dimension"), messages
            for mode in ("eager", "graph"):
                assert (f"Mismatched allreduce 'mismatch.{mode}'" in messages[f"shape_{mode}"]
                        and "shape differs across ranks" in messages[f"shape_{mode}"]), messages
            # Horovod's tf.errors.FailedPreconditionError in both modes; eagerly also the
            # DistSyncError of the other front ends.
            assert messages["kind_eager"] == [True, True], messages
            assert messages["kind_graph"] == [True, False], messages
    if name == "graph_mode_errors_are_tensorflow_statuses":
        for rank, messages in enumerate(values):
            # dist_sync's messages: the tensor, what differs, the values and the ranks.
            assert messages["allreduce_shape"].startswith("Mismatched allreduce 'e.ar'"), messages
            assert "shape differs across ranks" in messages["allreduce_shape"], messages
            assert messages["allgather_dtype"].startswith("Mismatched allgather 'e.ag'"), messages
            assert "float64" in messages["allgather_dtype"], messages
            assert messages["broadcast_root"].startswith("Mismatched broadcast 'e.bc'"), messages
            assert "root rank" in messages["broadcast_root"], messages
            assert messages["alltoall_shape"].startswith("Mismatched alltoall 'e.a2a'"), messages
            assert messages["reducescatter_op"].startswith("Mismatched reducescatter 'e.rs'")
            assert "reduction op" in messages["reducescatter_op"], messages
            assert messages["splits"].startswith(f"splits sum to {2 * np_} but the first "
                                                 f"dimension is 2"), messages
        # The same message on every rank.
        assert all(v == values[0] for v in values), values


def test_kernels_racing_shutdown_end_with_a_status() -> None:
    # Note [The engine pointer across threads]: kernels read the engine without the GIL.
    for value in harness.run_ok(WORKER, 2, "kernels_racing_shutdown", timeout=180):
        # A kernel in flight when the engine stops, or submitted after: a TensorFlow status
        # saying why (a rank whose peer stopped first may see the engine's fault instead).
        for kind, message in (value["loop"], value["after"]):
            assert kind in ("FailedPreconditionError", "AbortedError"), value
            assert "dist_sync" in message or "shut" in message, value
        assert value["after"][0] == "FailedPreconditionError", value
        assert "dist_sync is not initialized" in value["after"][1], value
