"""dist_sync._core's contract with the Python front end: exported enums (the codes Python used
to mirror by hand), init()'s settings (complete, typed, shared ones agreed on rank 0's values),
and Adasum's checks. One mpirun launch, checked case by case."""
from functools import lru_cache

from tests.support import harness

WORKER = "tests.engine.core_api_worker"
# Rank 1 asks for other shared settings than rank 0 (core_api_worker.py).
WARNINGS = [
    "DIST_SYNC_CACHE_CAPACITY is 0 on this rank but 1024 on rank 0; using rank 0's",
    "DIST_SYNC_FUSION_THRESHOLD is 1048576 on this rank but 67108864 on rank 0; using rank 0's",
]


@lru_cache(maxsize=None)
def launch():
    run = harness.run(WORKER, 2, "contract", timeout=120)
    return run.values(), run.output


def test_enums_export_the_engine_codes():
    enums = launch()[0][0]["enums"]
    assert enums["OpType"] == {"ALLREDUCE": 0, "BROADCAST": 1, "ALLGATHER": 2, "ALLTOALL": 3,
                               "REDUCESCATTER": 4, "BARRIER": 5, "JOIN": 6}
    assert enums["DataType"] == {"UINT8": 0, "INT8": 1, "INT16": 2, "INT32": 3, "INT64": 4,
                                 "FLOAT16": 5, "BFLOAT16": 6, "FLOAT32": 7, "FLOAT64": 8}
    assert enums["DeviceKind"] == {"CPU": 0, "CUDA": 1}
    # Horovod's numbers; the negotiation's internal bitwise AND is not exported.
    assert enums["ReduceOp"] == {"AVERAGE": 0, "SUM": 1, "ADASUM": 2, "MIN": 3, "MAX": 4,
                                 "PRODUCT": 5}


def test_init_needs_every_setting():
    for rank in launch()[0]:
        assert rank["init_incomplete"] == (
            "ValueError: the settings lack 'cache_capacity', 'timeline': pass the complete dict "
            "dist_sync.config.load() returns")
        assert rank["init_wrong_type"] == "ValueError: setting 'cycle_time_ms' must be a number, got '5'"
        assert rank["init_unknown_shared"].startswith(
            "ValueError: unknown engine setting 'no_such' (known: fusion_threshold_bytes, ")


def test_shared_settings_follow_rank_0():
    values, output = launch()
    for warning in WARNINGS:
        assert f"[dist_sync rank 1] WARNING: {warning}" in output, output[-3000:]
        assert f"[dist_sync rank 0] WARNING: {warning}" not in output
    # Rank 1 asked for no cache, but runs rank 0's: its repeats are answered from the cache.
    assert all(rank["cache_hits"] >= 3 for rank in values), values


def test_adasum_checks_its_ranks_and_dtypes():
    for rank in launch()[0]:
        size = rank["size"]
        if size & (size - 1):
            assert rank["adasum"] == (f"ValueError: 'x': Adasum needs a power-of-two number of "
                                      f"ranks, got {size}")
        else:
            assert rank["adasum"] == "no error raised"
        assert rank["adasum_int"] == ("ValueError: 'x': Adasum needs float16, bfloat16, float32 "
                                      "or float64 tensors, got int32")


def test_c_table_submits_to_the_engine_and_reports_error_kinds():
    # dist_sync._core._c_api (csrc/capi/dist_sync_c_api.h), through ctypes: completion
    # callbacks from the engine's thread, outputs the engine allocates, and each error kind.
    for values in launch()[0]:
        size = values["size"]
        table = values["c_api"]
        assert table["version"] == 1
        assert list(table["allreduce"]) == [0, [float(size * i + sum(range(size)))
                                                for i in range(4)]], table
        status, shape, rows, data = table["allgather"]
        assert (status, shape, rows) == (0, [sum(range(1, size + 1)), 2],
                                         list(range(1, size + 1)))
        assert data == [r for r in range(size) for _ in range(2 * (r + 1))]
        status, message = table["mismatch"]
        assert status == 1, table  # DIST_SYNC_ERROR_MISMATCH
        assert message.startswith("Mismatched allreduce 'capi.mismatch': "), message
        assert "shape differs across ranks" in message, message
        status, message = table["splits"]
        assert status == 2, table  # DIST_SYNC_ERROR_INVALID, refused at submission
        assert message == f"splits sum to {2 * size} but the first dimension is 2", message
        status, message = table["after_shutdown"]
        assert status == 4 and message, table  # DIST_SYNC_ERROR_SHUTDOWN
