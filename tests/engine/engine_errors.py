"""Mismatches found in negotiation fail on every rank with the tensor and the differing values,
and the engine keeps serving other tensors afterwards."""
import time

import numpy as np

import dist_sync as ds
from tests.support.worker import main


def expect_error(fn, exception=ds.DistSyncError):
    try:
        fn()
    except exception as error:
        return str(error)
    raise AssertionError("no error raised")


def run(args):
    ds.init()
    rank, size = ds.rank(), ds.size()
    odd = rank == size - 1  # the last rank disagrees
    messages = {}
    messages["dtype"] = expect_error(lambda: ds.allreduce(
        np.ones(4, dtype=np.int32 if odd else np.float32), name="w.dtype"))
    messages["shape"] = expect_error(lambda: ds.allreduce(np.ones(5 if odd else 4), name="w.shape"))
    messages["op"] = expect_error(lambda: ds.allreduce(
        np.ones(4), op=ds.Max if odd else ds.Sum, name="w.op"))
    messages["prescale"] = expect_error(lambda: ds.allreduce(
        np.ones(4), prescale_factor=2.0 if odd else 1.0, name="w.pre"))
    messages["postscale"] = expect_error(lambda: ds.allreduce(
        np.ones(4), postscale_factor=3.0 if odd else 1.0, name="w.post"))
    messages["root"] = expect_error(lambda: ds.broadcast(np.ones(4), root_rank=1 if odd else 0,
                                                         name="w.root"))
    messages["type"] = expect_error(lambda: ds.broadcast(np.ones(4), 0, name="w.type") if odd
                                    else ds.allreduce(np.ones(4), name="w.type"))
    messages["allgather_shape"] = expect_error(lambda: ds.allgather(
        np.ones((2, 3 if odd else 4)), name="w.gather"))
    # The same name twice while the first is in flight: the second is refused at once. The last
    # rank submits late, so on every other rank the first is certainly still in flight.
    if odd:
        time.sleep(0.5)
        first = ds.allreduce_async(np.ones(3), name="w.twice")
        messages["duplicate"] = None
    else:
        first = ds.allreduce_async(np.ones(3), name="w.twice")
        messages["duplicate"] = expect_error(lambda: ds.allreduce_async(np.ones(3), name="w.twice"),
                                             ValueError)
    np.testing.assert_array_equal(ds.synchronize(first), np.ones(3))
    # The engine still works, and a name that failed can be used again correctly.
    np.testing.assert_array_equal(ds.allreduce(np.ones(4), op=ds.Sum, name="w.dtype"),
                                  np.full(4, float(size)))
    # Bad input is refused before it reaches the engine.
    messages["bad_type"] = expect_error(lambda: ds.allreduce([1, 2, 3]), TypeError)
    messages["bad_dtype"] = expect_error(lambda: ds.allreduce(np.ones(3, dtype=bool)), TypeError)
    messages["non_contiguous"] = expect_error(lambda: ds.allreduce_(np.ones((4, 4))[:, 1]), ValueError)
    messages["bad_root"] = expect_error(lambda: ds.broadcast(np.ones(2), root_rank=size), ValueError)
    messages["bad_splits"] = expect_error(lambda: ds.alltoall(np.ones(5), splits=[1] * size), ValueError)
    messages["bad_op"] = expect_error(lambda: ds.allreduce(np.ones(2), op=17), ValueError)
    handle = ds.allreduce_async(np.ones(2), name="w.handle")
    ds.synchronize(handle)
    messages["twice"] = expect_error(lambda: ds.synchronize(handle), ValueError)
    messages["foreign"] = expect_error(lambda: ds.synchronize(42), TypeError)
    np.testing.assert_array_equal(ds.allreduce(np.arange(3.0), op=ds.Sum), np.arange(3.0) * size)
    ds.shutdown()
    messages["after_shutdown"] = expect_error(lambda: ds.allreduce(np.ones(2)))
    ds.init()  # a new session works
    ds.init()  # and init is idempotent
    np.testing.assert_array_equal(ds.allreduce(np.ones(2), op=ds.Sum), np.full(2, float(size)))
    ds.shutdown()
    return messages


if __name__ == "__main__":
    main(run)
