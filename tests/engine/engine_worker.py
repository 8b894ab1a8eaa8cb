"""Every collective through the engine against numpy, for whatever N the test launches."""
import numpy as np

import dist_sync as ds
from tests.support import hooks
from tests.support.worker import main


def rows_of(rank, salt):
    return (rank * 7 + salt) % 5  # uneven first dimensions, zero included


def run(args):
    ds.init()
    rank, size = ds.rank(), ds.size()
    checks = {}

    # Submission order differs by rank: negotiation by name must still pair them up.
    count = 300
    order = list(range(count)) if rank % 2 == 0 else list(reversed(range(count)))
    inputs = {i: np.arange(i % 17 + 1, dtype=np.float32) * (rank + 1) + i for i in range(count)}
    before = hooks.engine_stats()
    handles = {i: ds.allreduce_async(inputs[i], op=ds.Sum, name=f"t{i}") for i in order}
    results = {i: ds.synchronize(h) for i, h in handles.items()}
    after = hooks.engine_stats()
    for i in range(count):
        expected = sum(np.arange(i % 17 + 1, dtype=np.float64) * (r + 1) + i for r in range(size))
        np.testing.assert_array_equal(results[i], expected.astype(np.float32))
    checks["fused_executions"] = after["executions"] - before["executions"]
    checks["fused_requests"] = after["requests"] - before["requests"]

    # The same names again hit the response cache.
    before = hooks.engine_stats()
    handles = [ds.allreduce_async(inputs[i], op=ds.Sum, name=f"t{i}") for i in order]
    for h in handles:
        ds.synchronize(h)
    checks["cache_hits"] = hooks.engine_stats()["cache_hits"] - before["cache_hits"]

    # Every op and dtype on an odd size.
    for dtype in (np.float32, np.float64, np.int32, np.float16, np.int8):
        base = (np.arange(11) % 5).astype(dtype)
        mine = base + dtype(rank)
        everyone = [base + dtype(r) for r in range(size)]
        stack = np.stack([e.astype(np.float64) for e in everyone])
        for op, ref in ((ds.Sum, stack.sum(0)), (ds.Min, stack.min(0)), (ds.Max, stack.max(0))):
            got = ds.allreduce(mine, op=op)
            np.testing.assert_allclose(got.astype(np.float64), ref, rtol=1e-3)
    avg = ds.allreduce(np.full(5, float(rank), dtype=np.float64), op=ds.Average)
    np.testing.assert_allclose(avg, np.full(5, (size - 1) / 2.0))
    scaled = ds.allreduce(np.ones(3, dtype=np.float32), op=ds.Sum, prescale_factor=2.0,
                          postscale_factor=0.5)
    np.testing.assert_allclose(scaled, np.full(3, float(size)))

    # grouped_allreduce: one unit, mixed dtypes.
    group = [np.full(3, rank, dtype=np.float32), np.full((2, 2), rank, dtype=np.int64),
             np.full(1, rank, dtype=np.float64)]
    reduced = ds.grouped_allreduce(group, op=ds.Sum, name="group")
    total = size * (size - 1) // 2
    for got, original in zip(reduced, group):
        assert got.dtype == original.dtype and got.shape == original.shape
        np.testing.assert_array_equal(got, np.full(original.shape, total))
    in_place = [np.full(4, rank + 1.0)]
    ds.grouped_allreduce_(in_place, op=ds.Sum)
    np.testing.assert_array_equal(in_place[0], np.full(4, size * (size + 1) / 2))

    # broadcast from every root, in place and not.
    for root in range(size):
        value = np.arange(6, dtype=np.int16).reshape(2, 3) + 10 * rank
        np.testing.assert_array_equal(ds.broadcast(value, root), np.arange(6).reshape(2, 3) + 10 * root)
        buffer = np.full(7, float(rank))
        ds.broadcast_(buffer, root_rank=root, name=f"bcast{root}")
        np.testing.assert_array_equal(buffer, np.full(7, float(root)))

    # allgather with first dimensions differing by rank (zero rows included).
    mine = np.full((rows_of(rank, 1), 3), rank, dtype=np.float32)
    gathered = ds.allgather(mine, name="gather")
    expected = np.concatenate([np.full((rows_of(r, 1), 3), r, dtype=np.float32) for r in range(size)])
    np.testing.assert_array_equal(gathered, expected)
    np.testing.assert_array_equal(ds.allgather(np.array(rank)), np.arange(size))

    # alltoall with per-rank splits.
    splits = [(rank + p) % 3 for p in range(size)]
    data = np.concatenate([np.full(s, 100 * rank + p, dtype=np.int64) for p, s in enumerate(splits)])
    received, received_splits = ds.alltoall(data.reshape(-1, 1), splits=splits)
    expected_splits = [(p + rank) % 3 for p in range(size)]
    np.testing.assert_array_equal(received_splits, expected_splits)
    expected = np.concatenate([np.full(expected_splits[p], 100 * p + rank) for p in range(size)])
    np.testing.assert_array_equal(received.reshape(-1), expected)
    even = np.arange(2 * size, dtype=np.float32) + rank
    out, out_splits = ds.alltoall(even)
    np.testing.assert_array_equal(out_splits, [2] * size)

    # reducescatter over an odd number of rows.
    rows = 2 * size + 1
    contribution = np.arange(rows * 2, dtype=np.float64).reshape(rows, 2) * (rank + 1)
    part = ds.reducescatter(contribution, op=ds.Sum, name="rs")
    full = np.arange(rows * 2, dtype=np.float64).reshape(rows, 2) * (size * (size + 1) / 2)
    bounds = np.cumsum([0] + [rows // size + (1 if r < rows % size else 0) for r in range(size)])
    np.testing.assert_array_equal(part, full[bounds[rank]:bounds[rank + 1]])
    averaged = ds.reducescatter(contribution)
    np.testing.assert_allclose(averaged, full[bounds[rank]:bounds[rank + 1]] / size)

    # Zero-size tensors work for every op.
    empty = np.zeros((0, 4), dtype=np.float32)
    assert ds.allreduce(empty).shape == (0, 4)
    assert ds.broadcast(empty, 0).shape == (0, 4)
    assert ds.allgather(empty).shape == (0, 4)

    # Objects.
    assert ds.broadcast_object({"rank": rank} if rank == 0 else None) == {"rank": 0}
    assert ds.allgather_object(("r", rank)) == [("r", r) for r in range(size)]

    # poll() eventually reports completion; barrier() returns.
    handle = ds.allreduce_async(np.ones(2), name="polled")
    while not ds.poll(handle):
        pass
    np.testing.assert_array_equal(ds.synchronize(handle), np.ones(2))
    ds.barrier()
    checks["topology"] = [ds.local_rank(), ds.local_size(), ds.cross_rank(), ds.cross_size()]
    ds.shutdown()
    return checks


if __name__ == "__main__":
    main(run)
