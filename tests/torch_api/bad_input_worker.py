"""The bad-input list of the numpy API, for torch tensors through dist_sync.torch: each misuse is
a clear exception at the call (or, for disagreements between ranks, from negotiation on every
rank), and the engine keeps working afterwards. Zero-size tensors work for every op."""
import time

import numpy as np
import torch

import dist_sync.torch as hvd
from tests.support.bad_input import Cases
from tests.support.worker import Registry

check = Registry()


@check.scenario
def misuse():
    """case -> the message of the exception it raised, on this rank."""
    before = Cases(alive=lambda: None)
    before.expect("before_init_allreduce", hvd.DistSyncError, lambda: hvd.allreduce(torch.ones(2)))
    before.expect("before_init_async", hvd.DistSyncError, lambda: hvd.allreduce_async(torch.ones(2)))
    before.expect("before_init_rank", hvd.DistSyncError, hvd.rank)
    hvd.init()
    hvd.init()  # idempotent
    rank, size = hvd.rank(), hvd.size()
    last = rank == size - 1
    ones = torch.ones(3)

    def alive():
        torch.testing.assert_close(hvd.allreduce(ones, op=hvd.Sum, name="alive"), ones * size)

    cases = Cases(alive)
    # Unsupported dtypes, wrong Python types, None.
    for dtype in (torch.complex64, torch.bool, torch.uint16, torch.float8_e4m3fn):
        cases.expect(f"dtype_{dtype}", TypeError, lambda: hvd.allreduce(torch.zeros(2, dtype=dtype)))
    cases.expect("none", TypeError, lambda: hvd.allreduce(None))
    cases.expect("none_inplace", TypeError, lambda: hvd.allreduce_(None))
    cases.expect("none_broadcast", TypeError, lambda: hvd.broadcast(None, 0))
    cases.expect("none_allgather", TypeError, lambda: hvd.allgather(None))
    cases.expect("none_grouped", TypeError, lambda: hvd.grouped_allreduce(None))
    cases.expect("numpy_array", TypeError, lambda: hvd.allreduce(np.ones(2)))
    cases.expect("list", TypeError, lambda: hvd.allreduce([1.0, 2.0]))
    cases.expect("sparse", TypeError, lambda: hvd.allreduce_(torch.eye(2).to_sparse()))
    cases.expect("name_type", TypeError, lambda: hvd.allreduce(ones, name=5))
    cases.expect("root_type", TypeError, lambda: hvd.broadcast(ones, "0"))
    cases.expect("op_and_average", ValueError, lambda: hvd.allreduce(ones, average=True, op=hvd.Sum))
    cases.expect("op_unknown", ValueError, lambda: hvd.allreduce(ones, op=17))
    # In place needs one contiguous block.
    transposed = torch.ones(4, 3).t()
    cases.expect("non_contiguous_allreduce_", ValueError, lambda: hvd.allreduce_(transposed))
    cases.expect("non_contiguous_broadcast_", ValueError, lambda: hvd.broadcast_(transposed, 0))
    cases.expect("non_contiguous_grouped_", ValueError,
                 lambda: hvd.grouped_allreduce_([ones, transposed]))
    # A root that does not exist; alltoall splits that don't add up.
    cases.expect("root_missing", ValueError, lambda: hvd.broadcast(ones, size))
    cases.expect("root_negative", ValueError, lambda: hvd.broadcast_(ones.clone(), -1))
    cases.expect("splits_sum", ValueError, lambda: hvd.alltoall(torch.ones(5), splits=[1] * size))
    cases.expect("splits_float_tensor", TypeError,
                 lambda: hvd.alltoall(torch.ones(size), splits=torch.ones(size)))
    cases.expect("splits_length", ValueError, lambda: hvd.alltoall(torch.ones(4), splits=[4] * (size + 1)))
    # Disagreements between ranks fail on every rank from negotiation.
    cases.expect("shape_mismatch", hvd.DistSyncError,
                 lambda: hvd.allreduce(torch.ones(5 if last else 4), name="w.shape"))
    cases.expect("dtype_mismatch", hvd.DistSyncError,
                 lambda: hvd.allreduce(torch.ones(4, dtype=torch.float64 if last else torch.float32),
                                       name="w.dtype"))
    # A name reused while its first operation is in flight (the last rank submits late, so the
    # first is certainly still pending on the others).
    if last:
        time.sleep(0.5)
        first = hvd.allreduce_async(ones, name="w.twice")
        cases.messages["duplicate_name"] = ""
    else:
        first = hvd.allreduce_async(ones, name="w.twice")
        cases.expect("duplicate_name", ValueError, lambda: hvd.allreduce_async(ones, name="w.twice"),
                     check_alive=False)
    torch.testing.assert_close(hvd.synchronize(first), ones)
    # Handles: twice, foreign.
    handle = hvd.allreduce_async(ones, name="w.handle")
    hvd.synchronize(handle)
    cases.expect("synchronize_twice", ValueError, lambda: hvd.synchronize(handle))
    cases.expect("synchronize_foreign", TypeError, lambda: hvd.synchronize(42))
    cases.expect("synchronize_none", TypeError, lambda: hvd.synchronize(None))

    # Zero-size tensors work for every op.
    empty = torch.zeros(0, 3)
    assert hvd.allreduce(empty).shape == (0, 3)
    assert hvd.allreduce_(torch.zeros(0)).shape == (0,)
    assert [tuple(t.shape) for t in hvd.grouped_allreduce([torch.zeros(0), torch.zeros(2, 0)])] \
        == [(0,), (2, 0)]
    assert hvd.broadcast(empty, 0).shape == (0, 3)
    assert hvd.allgather(empty).shape == (0, 3)
    assert hvd.alltoall(empty).shape == (0, 3)
    received, splits = hvd.alltoall(empty, splits=[0] * size)
    assert received.shape == (0, 3) and splits.tolist() == [0] * size
    assert hvd.reducescatter(empty).shape == (0, 3)
    torch.testing.assert_close(hvd.allreduce(transposed, op=hvd.Sum), torch.full((3, 4), float(size)))

    unsynchronized = hvd.allreduce_async(ones, name="w.unsynchronized")
    hvd.shutdown()
    after = Cases(alive=lambda: None)
    after.expect("after_shutdown_allreduce", hvd.DistSyncError, lambda: hvd.allreduce(ones))
    after.expect("after_shutdown_synchronize", hvd.DistSyncError,
                 lambda: hvd.synchronize(unsynchronized))
    return {**before.messages, **cases.messages, **after.messages}


if __name__ == "__main__":
    check.main()
