"""Misuse of the numpy API that tests/engine (mismatches) does not cover: each is a clear
exception at the call, and the engine keeps working afterwards. Zero-size arrays work for every
op."""
import numpy as np

import dist_sync as ds
from tests.support.bad_input import Cases
from tests.support.worker import Registry

check = Registry()


@check.scenario
def misuse():
    """case -> the message of the exception it raised, on this rank."""
    # Before init(): every operation says to call init() first.
    before = Cases(alive=lambda: None)
    before.expect("before_init_allreduce", ds.DistSyncError, lambda: ds.allreduce(np.ones(2)))
    before.expect("before_init_async", ds.DistSyncError, lambda: ds.allreduce_async(np.ones(2)))
    before.expect("before_init_rank", ds.DistSyncError, ds.rank)
    before.expect("before_init_broadcast", ds.DistSyncError, lambda: ds.broadcast(np.ones(2), 0))
    before.expect("before_init_barrier", ds.DistSyncError, ds.barrier)
    assert not ds.is_initialized()
    ds.shutdown()  # harmless before init

    ds.init()
    size = ds.size()
    ones = np.ones(3)

    def alive():
        np.testing.assert_array_equal(ds.allreduce(ones, op=ds.Sum, name="alive"), ones * size)

    cases = Cases(alive)
    # None and other wrong Python types.
    cases.expect("none", TypeError, lambda: ds.allreduce(None))
    cases.expect("none_inplace", TypeError, lambda: ds.allreduce_(None))
    cases.expect("none_broadcast", TypeError, lambda: ds.broadcast(None, 0))
    cases.expect("none_allgather", TypeError, lambda: ds.allgather(None))
    cases.expect("none_alltoall", TypeError, lambda: ds.alltoall(None))
    cases.expect("none_reducescatter", TypeError, lambda: ds.reducescatter(None))
    cases.expect("none_grouped", TypeError, lambda: ds.grouped_allreduce(None))
    cases.expect("none_in_group", TypeError, lambda: ds.grouped_allreduce([ones, None]))
    cases.expect("scalar", TypeError, lambda: ds.allreduce(3.0))
    cases.expect("name_type", TypeError, lambda: ds.allreduce(ones, name=5))
    cases.expect("op_string", ValueError, lambda: ds.allreduce(ones, op="sum"))
    cases.expect("root_type", TypeError, lambda: ds.broadcast(ones, "0"))
    cases.expect("prescale_type", TypeError, lambda: ds.allreduce(ones, prescale_factor="2"))
    # int() truncation would turn these into [1, 0, ...], which adds up to the one row.
    cases.expect("splits_float", TypeError,
                 lambda: ds.alltoall(np.ones(1), splits=[1.5, 0.5] + [0] * (size - 2)))
    cases.expect("splits_length", ValueError, lambda: ds.alltoall(np.ones(4), splits=[4] * (size + 1)))
    cases.expect("splits_negative", ValueError,
                 lambda: ds.alltoall(np.ones(1), splits=[2, -1] + [0] * (size - 2)))
    cases.expect("alltoall_uneven", ValueError, lambda: ds.alltoall(np.ones(size + 1)))
    # Unsupported dtypes.
    for dtype in ("complex64", "uint16", "uint64", "object", "<U3", "datetime64[D]", "longdouble"):
        cases.expect(f"dtype_{dtype}", TypeError, lambda: ds.allreduce(np.zeros(2, dtype=dtype)))
    # In-place forms need one writable, contiguous block.
    strided = np.ones((4, 4))[:, 1]
    cases.expect("non_contiguous_broadcast_", ValueError, lambda: ds.broadcast_(strided, 0))
    cases.expect("non_contiguous_grouped_", ValueError, lambda: ds.grouped_allreduce_([ones, strided]))
    read_only = np.ones(3)
    read_only.flags.writeable = False
    cases.expect("read_only_inplace", ValueError, lambda: ds.allreduce_(read_only))
    cases.expect("root_negative", ValueError, lambda: ds.broadcast(ones, -1))
    # Handles: of an earlier session, or never one at all.
    cases.expect("synchronize_none", TypeError, lambda: ds.synchronize(None))
    cases.expect("poll_foreign", TypeError, lambda: ds.poll("handle"))
    # Settings: init() twice is a no-op, but not a silent one when it asks for other settings.
    ds.init()
    cases.expect("init_other_settings", ValueError, lambda: ds.init(fusion_threshold_bytes=1))
    cases.expect("init_unknown_setting", TypeError, lambda: ds.init(fusion_treshold_bytes=1))

    # Zero-size arrays work for every op (and out-of-place non-contiguous inputs are copied).
    empty = np.zeros((0, 3), dtype=np.float32)
    assert ds.allreduce_(np.zeros(0)).shape == (0,)
    assert [g.shape for g in ds.grouped_allreduce([np.zeros(0), np.zeros((2, 0))])] == [(0,), (2, 0)]
    received, splits = ds.alltoall(empty)
    assert received.shape == (0, 3) and list(splits) == [0] * size
    assert ds.reducescatter(empty).shape == (0, 3)
    assert ds.broadcast_(np.zeros(0), 0).shape == (0,)
    np.testing.assert_array_equal(ds.allreduce(strided, op=ds.Sum), np.full(4, float(size)))

    old = ds.allreduce_async(ones, name="old.session")
    ds.synchronize(old)
    ds.shutdown()
    after = Cases(alive=lambda: None)
    after.expect("after_shutdown_rank", ds.DistSyncError, ds.rank)
    after.expect("after_shutdown_allreduce", ds.DistSyncError, lambda: ds.allreduce(ones))
    ds.init()
    cases.expect("handle_of_earlier_session", ValueError, lambda: ds.synchronize(old))
    ds.shutdown()
    return {**before.messages, **cases.messages, **after.messages}


if __name__ == "__main__":
    check.main()
