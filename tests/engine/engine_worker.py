"""The engine under mpirun, through the numpy API: every collective, negotiation by name, the
response cache, fusion across memory layouts, mismatches, join, idle cost, shutdown by one rank,
stalls, an exception on one rank, a result synchronized after a peer shut down."""
import mmap
import os
import time

import numpy as np

import dist_sync as ds
from tests.support import hooks
from tests.support.worker import Registry

check = Registry()


def rows_of(rank, salt):
    return (rank * 7 + salt) % 5  # uneven first dimensions, zero included


@check
def every_collective():
    """Every collective against numpy, for whatever N the test launches."""
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
    return checks


# Large (own segments), medium, tiny (packed together) and a large one after tiny ones.
COUNTS = [3_000_001, 17, 5, 262_147, 1, 40_000, 1_500_000, 3, 2_000_003, 16_385, 7]


def small_page_array(count: int) -> np.ndarray:
    region = mmap.mmap(-1, max(1, count * 4), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(region, dtype=np.float32, count=count)


def tensors_for(layout: int) -> list:
    if layout == 0:  # separate arrays: numpy puts the >= 4 MiB ones on huge pages
        return [np.empty(c, dtype=np.float32) for c in COUNTS]
    if layout == 1:  # views into one large array, starting one element in
        backing = np.empty(sum(COUNTS) + 1, dtype=np.float32)
        offsets = np.cumsum([1] + COUNTS)
        return [backing[offsets[i]:offsets[i + 1]] for i in range(len(COUNTS))]
    return [small_page_array(c) for c in COUNTS]  # every byte on 4 KiB pages


@check
def fused_layouts():
    """Fused allreduces whose tensors lie in different kinds of memory on different ranks.

    Segments are planned from tensor sizes and sent straight from a tensor only where it lies on
    huge pages (Note [Segments follow tensors], Note [Small pages and single-copy transfers]), so
    ranks take different paths through the same ring pass: on one rank a tensor is its own array
    (large ones on huge pages), on another it is a view at an odd offset into one shared array, on
    a third it sits on 4 KiB pages. Every rank must still get the exact sums."""
    rank, size = ds.rank(), ds.size()
    checks = {}
    tensors = tensors_for(rank % 3)
    for repetition in range(3):  # the second and later passes come from the response cache
        for i, tensor in enumerate(tensors):
            tensor[:] = (np.arange(tensor.size) % 1000 + i + rank + repetition).astype(np.float32)
        handles = [ds.allreduce_async_(t, op=ds.Sum, name=f"layout.{i}") for i, t in enumerate(tensors)]
        for handle in handles:
            ds.synchronize(handle)
        for i, tensor in enumerate(tensors):
            base = (np.arange(tensor.size) % 1000 + i + repetition).astype(np.float64)
            expected = base * size + size * (size - 1) / 2
            np.testing.assert_array_equal(tensor.astype(np.float64), expected,
                                          err_msg=f"tensor {i}, repetition {repetition}")
    checks["layout"] = rank % 3
    checks["executions"] = hooks.engine_stats()["executions"]
    return checks


def expect_error(fn, exception=ds.DistSyncError):
    try:
        fn()
    except exception as error:
        return str(error)
    raise AssertionError("no error raised")


@check.scenario
def mismatches():
    """Mismatches found in negotiation fail on every rank with the tensor and the differing
    values, and the engine keeps serving other tensors afterwards; then a new session."""
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


def cpu_seconds():
    with open(f"/proc/{os.getpid()}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


@check
def join():
    """Rank r runs out of data after r+1 steps and joins; the others' allreduces go on."""
    rank, size = ds.rank(), ds.size()
    batches = rank + 1  # rank r runs out of data after r+1 steps
    results = []
    for step in range(batches):
        results.append(ds.allreduce(np.full(3, float(rank + 1)), op=ds.Sum, name="grad").tolist())
        results.append(ds.allreduce(np.full(2, 1.0), op=ds.Average, name="avg").tolist())
    last = ds.join()
    after = ds.allreduce(np.ones(1), op=ds.Sum).tolist()  # everyone is back
    return {"results": results, "last": last, "after": after}


@check
def idle(args):
    """CPU time of an initialised engine with nothing to do, as a fraction of a core."""
    time.sleep(0.5)
    start_cpu, start = cpu_seconds(), time.monotonic()
    time.sleep(args.get("seconds", 4.0))
    used = (cpu_seconds() - start_cpu) / (time.monotonic() - start)
    ds.barrier()
    return {"cpu_fraction": used}


@check.scenario
def shutdown_by_rank_0():
    """Rank 0 shuts down while the others wait for it in an allreduce."""
    ds.init()
    if ds.rank() == 0:
        time.sleep(0.5)
        ds.shutdown()
        return {}
    try:
        ds.allreduce(np.ones(2), name="left.behind")
    except ds.DistSyncError as error:
        message = str(error)
    else:
        raise AssertionError("allreduce succeeded although rank 0 shut down")
    try:
        ds.allreduce(np.ones(2), name="after")
    except ds.DistSyncError as error:
        later = str(error)
    return {"message": message, "later": later}


@check.scenario
def stall(args):
    """The last rank sleeps args["sleep"] seconds before a tensor the others wait for."""
    ds.init()
    rank = ds.rank()
    np.testing.assert_array_equal(ds.allreduce(np.ones(2), op=ds.Sum, name="warmup"),
                                  np.full(2, float(ds.size())))
    if rank == ds.size() - 1:
        time.sleep(args["sleep"])  # the stalled rank
    try:
        ds.allreduce(np.ones(2), name="stalled.tensor")
        ds.allreduce(np.ones(2), name="warmup")  # cached path too
    except ds.DistSyncError as error:
        ds.shutdown()
        return {"error": str(error)}
    ds.shutdown()
    return {"error": None}


@check.scenario
def exception_on_rank_1():
    """Rank 1 dies of an uncaught exception while rank 0 waits for it in an allreduce."""
    ds.init()
    if ds.rank() == 1:
        check.record({"raised": True})
        raise ValueError("bad batch 17")  # uncaught: excepthook, then atexit shuts the engine down
    try:
        ds.allreduce(np.ones(2), name="grad.fc")
        return {"error": None}
    except ds.DistSyncError as error:
        return {"error": str(error)}


@check.scenario
def late_synchronize():
    """Rank 1 synchronizes a completed operation only after rank 0 has shut down."""
    ds.init()
    handle = ds.allreduce_async(np.full(3, ds.rank() + 1.0), op=ds.Sum, name="last.step")
    if ds.rank() == 0:
        value = ds.synchronize(handle)
        ds.shutdown()
        return {"value": value.tolist()}
    while not ds.poll(handle):
        time.sleep(0.01)
    time.sleep(1.0)  # rank 0 shuts down meanwhile
    value = ds.synchronize(handle)
    try:
        ds.allreduce(np.ones(1))
    except ds.DistSyncError as error:
        later = str(error)
    return {"value": value.tolist(), "later": later}


if __name__ == "__main__":
    check.main()
