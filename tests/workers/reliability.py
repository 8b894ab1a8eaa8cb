"""Misuse that must never crash, hang or return a wrong value (handles dropped without
synchronize, one handle synchronized from several threads, ...). Every check runs on every rank;
results are compared with numpy references."""
import gc
import threading

import numpy as np
import torch

import dist_sync as ds
import dist_sync.torch as hvd
from _common import main
from _torch_common import Registry

check = Registry()
BIG = 32 << 20  # elements: large enough that the ring is still reading when the handle goes


def _churn() -> float:
    """Allocates and fills memory so that freed buffers are reused (a dangling pointer into
    them would read garbage or crash)."""
    junk = [np.full(BIG // 4, 7.0) for _ in range(4)]
    return float(sum(j[0] for j in junk))


@check
def dropped_handles_keep_their_memory():
    rank, size = ds.rank(), ds.size()
    # Fire and forget, numpy in place and out of place, torch in place and out of place: the
    # only reference to each buffer is the dropped handle.
    ds.allreduce_async_(np.full(BIG, float(rank)), op=ds.Sum, name="dropped.numpy.inplace")
    ds.allreduce_async(np.full(BIG, float(rank)), op=ds.Sum, name="dropped.numpy.copy")
    hvd.allreduce_async_(torch.full((BIG,), float(rank)), op=hvd.Sum, name="dropped.torch.inplace")
    hvd.allreduce_async(torch.full((BIG,), float(rank)), op=hvd.Sum, name="dropped.torch.copy")
    hvd.allgather_async(torch.full((BIG // 8,), float(rank)), name="dropped.torch.allgather")
    gc.collect()
    _churn()
    # Later operations still work and give the right values.
    after = ds.allreduce(np.arange(5, dtype=np.float64) * (rank + 1), op=ds.Sum, name="after")
    expected = np.arange(5, dtype=np.float64) * sum(r + 1 for r in range(size))
    np.testing.assert_array_equal(after, expected)
    ds.barrier()
    return {"after": after.tolist()}


@check
def dropped_handle_with_a_duplicate_name():
    # Horovod's duplicate-name tests: the first handle is dropped, the second call raises.
    rank = ds.rank()
    tensor = torch.ones(17, 17, 17)
    errors = []
    for turn in (0, 1):
        if (rank == 0) == (turn == 0):
            hvd.allreduce_async(tensor, name="duplicate_name")
            try:
                hvd.allreduce_async(tensor, name="duplicate_name")
            except ValueError as error:
                errors.append(str(error))
            else:
                raise AssertionError("a second op named 'duplicate_name' was accepted")
        hvd.barrier()
    gc.collect()
    result = hvd.allreduce(torch.full((3,), float(rank)), op=hvd.Sum, name="after.duplicate")
    assert "already in flight" in errors[0], errors
    return {"errors": errors, "after": result.tolist()}


@check
def one_handle_synchronized_by_two_threads():
    rank, size = ds.rank(), ds.size()
    outcomes = {}
    for kind in ("allgather", "reducescatter", "numpy_allreduce"):
        if kind == "allgather":
            handle = hvd.allgather_async(torch.full((2, 3), float(rank)), name=f"twice.{kind}")
        elif kind == "reducescatter":
            handle = hvd.reducescatter_async(torch.full((size * 2, 3), float(rank)),
                                             op=hvd.Sum, name=f"twice.{kind}")
        else:
            handle = ds.allreduce_async(np.full(8, float(rank)), op=ds.Sum, name=f"twice.{kind}")
        results, errors = [], []
        start = threading.Barrier(2)

        def wait_for_it() -> None:
            start.wait()
            try:
                results.append(ds.synchronize(handle))
            except ValueError as error:
                errors.append(str(error))
        threads = [threading.Thread(target=wait_for_it) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 1 and len(errors) == 1, (kind, results, errors)
        assert "synchronized once" in errors[0], errors
        value = np.asarray(results[0])
        if kind == "allgather":
            expected = np.repeat(np.arange(size, dtype=np.float32), 2)[:, None] * np.ones(3)
        elif kind == "reducescatter":
            expected = np.full((2, 3), float(sum(range(size))))
        else:
            expected = np.full(8, float(sum(range(size))))
        np.testing.assert_array_equal(value, expected)
        outcomes[kind] = errors[0]
    return outcomes


@check
def object_collectives_after_a_pickling_error():
    # An object that cannot be pickled fails the call on every rank (the root re-raises its own
    # error); the next call pairs the right objects, never the failed call's with the next one's.
    rank, size = ds.rank(), ds.size()
    outcomes = {}
    for api in (ds, hvd):
        try:
            api.broadcast_object(threading.Lock() if rank == 0 else None, root_rank=0)
        except TypeError as error:
            assert rank == 0, error
            outcomes[f"{api.__name__}.broadcast.root"] = str(error)
        except ds.DistSyncError as error:
            assert rank != 0, error
            assert "root rank 0 could not pickle its object (TypeError: cannot pickle" in str(error)
            outcomes[f"{api.__name__}.broadcast.other"] = str(error)
        else:
            raise AssertionError("broadcast_object of an unpicklable object succeeded")
        assert api.broadcast_object({"step": 7} if rank == 0 else None, root_rank=0) == {"step": 7}
        last = size - 1
        try:
            api.allgather_object(threading.Lock() if rank == last else rank)
        except TypeError as error:
            assert rank == last, error
        except ds.DistSyncError as error:
            assert rank != last, error
            assert f"rank {last} could not pickle its object" in str(error), error
        else:
            raise AssertionError("allgather_object of an unpicklable object succeeded")
        assert api.allgather_object(("r", rank)) == [("r", r) for r in range(size)]
    return outcomes


if __name__ == "__main__":
    main(check.run)
