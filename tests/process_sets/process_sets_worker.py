"""Process sets under mpirun: every collective of dist_sync (numpy) and dist_sync.torch on sets of
every shape, against numpy float64 references computed from the members' regenerated inputs;
sets used at the same time; errors; static sets, sets from communicators, Horovod's examples.

The checks add and remove sets in the worker's session (no process_sets="dynamic" needed); the
scenarios start dist_sync themselves.
"""
import numpy as np

import dist_sync as ds
from tests.support.worker import Registry

check = Registry()


def shapes_of_sets(size):
    """Process sets of every shape for `size` ranks, as rank lists (as a user writes them)."""
    sets = [[r] for r in range(size)]                      # singletons
    sets.append(list(range(size)))                          # every rank
    sets.append(list(reversed(range(size))))                # every rank, listed reversed
    sets += [[r, (r + 1) % size] for r in range(size) if size > 2]  # overlapping pairs
    sets.append([r for r in range(size) if r % 2 == 0])     # evens
    if size > 1:
        sets.append([r for r in range(size) if r % 2 == 1])  # odds
        sets.append([size - 1, 0])                          # a pair listed reversed
    return sets


def data(rank, shape, dtype, salt):
    """Rank `rank`'s input: small integers, exact in every dtype, so sums are exact."""
    count = int(np.prod(shape)) if shape else 1
    values = (np.arange(count, dtype=np.int64) * (rank + 3) + salt * 7 + rank) % 23 - 11
    return values.reshape(shape).astype(dtype)


def reduce_ref(values, op):
    stack = np.stack([v.astype(np.float64) for v in values])
    if op == "sum":
        return stack.sum(0)
    if op == "average":
        return stack.sum(0) / len(values)
    if op == "min":
        return stack.min(0)
    if op == "max":
        return stack.max(0)
    raise ValueError(op)


OPS = {"sum": ds.Sum, "average": ds.Average, "min": ds.Min, "max": ds.Max}


def rows_of(rank, salt):
    return (rank * 5 + salt) % 4  # uneven first dimensions, zero included


def exercise_numpy(ps, salt):
    """Every numpy collective on `ps` (this rank is a member); asserts against numpy; returns
    a digest of the results."""
    me = ds.rank()
    members = ps.ranks
    digest = []
    # allreduce in every op, out of place and in place, float64 / float32 / int32
    for dtype in (np.float64, np.float32, np.int32):
        for op_name, op in OPS.items():
            if op_name == "average" and dtype == np.int32:
                continue
            mine = data(me, (5, 3), dtype, salt)
            expected = reduce_ref([data(r, (5, 3), dtype, salt) for r in members], op_name)
            got = ds.allreduce(mine, op=op, process_set=ps)
            np.testing.assert_allclose(got.astype(np.float64), expected, rtol=1e-6)
            inplace = mine.copy()
            ds.allreduce_(inplace, op=op, name=f"inplace.{salt}.{op_name}.{np.dtype(dtype).name}",
                          process_set=ps)
            np.testing.assert_array_equal(inplace, got)
            digest.append(float(got.astype(np.float64).sum()))
    # grouped allreduce (async)
    arrays = [data(me, (i + 1,), np.float64, salt + i) for i in range(4)]
    handle = ds.grouped_allreduce_async(arrays, op=ds.Sum, process_set=ps)
    for i, got in enumerate(ds.synchronize(handle)):
        np.testing.assert_array_equal(
            got, reduce_ref([data(r, (i + 1,), np.float64, salt + i) for r in members], "sum"))
    # broadcast from every member (roots are ranks of the global set)
    for root in members:
        got = ds.broadcast(data(me, (4,), np.float32, salt), root, process_set=ps)
        np.testing.assert_array_equal(got, data(root, (4,), np.float32, salt))
        inplace = data(me, (4,), np.float32, salt)
        ds.broadcast_(inplace, root, process_set=ps)
        np.testing.assert_array_equal(inplace, got)
    # allgather with uneven rows, in the set's rank order
    got = ds.allgather(data(me, (rows_of(me, salt), 2), np.float64, salt), process_set=ps)
    expected = np.concatenate([data(r, (rows_of(r, salt), 2), np.float64, salt) for r in members])
    np.testing.assert_array_equal(got, expected)
    # alltoall: position p of the set gets splits[p] rows
    k = len(members)
    splits = [(members.index(me) + p) % 3 for p in range(k)]
    send = data(me, (sum(splits), 2), np.float64, salt)
    received, received_splits = ds.alltoall(send, splits, process_set=ps)
    pieces = []
    for r in members:
        their_splits = [(members.index(r) + p) % 3 for p in range(k)]
        theirs = data(r, (sum(their_splits), 2), np.float64, salt)
        start = sum(their_splits[:members.index(me)])
        pieces.append(theirs[start:start + their_splits[members.index(me)]])
    np.testing.assert_array_equal(received, np.concatenate(pieces))
    assert list(received_splits) == [p.shape[0] for p in pieces]
    # reducescatter: the set's position p gets its share of rows
    rows = 2 * k + 1
    got = ds.reducescatter(data(me, (rows, 3), np.float64, salt), op=ds.Sum, process_set=ps)
    full = reduce_ref([data(r, (rows, 3), np.float64, salt) for r in members], "sum")
    counts = [rows // k + (1 if p < rows % k else 0) for p in range(k)]
    start = sum(counts[:members.index(me)])
    np.testing.assert_array_equal(got, full[start:start + counts[members.index(me)]])
    # barrier, objects
    ds.barrier(process_set=ps)
    root = members[-1]
    assert ds.broadcast_object({"from": me, "salt": salt}, root, process_set=ps) == \
        {"from": root, "salt": salt}
    assert ds.allgather_object((me, salt), process_set=ps) == [(r, salt) for r in members]
    digest.append(float(got.sum()))
    return digest


@check
def numpy_every_shape():
    """Every collective on every shape of set, one set at a time (all ranks add every set; the
    members use it), with a global allreduce between sets."""
    me, size = ds.rank(), ds.size()
    checked = []
    for index, ranks in enumerate(shapes_of_sets(size)):
        ps = ds.add_process_set(ranks)
        assert ps.ranks == sorted(ranks) and ps.size() == len(ranks)
        assert ps.included() == (me in ranks)
        if ps.included():
            assert ps.rank() == sorted(ranks).index(me)
            exercise_numpy(ps, index)
            checked.append(sorted(ranks))
        total = ds.allreduce(np.array([float(me)]), op=ds.Sum)
        assert total[0] == sum(range(size))
        assert ds.remove_process_set(ps) is True
    assert ds.remove_process_set(ds.global_process_set) is False
    return {"checked": checked}


@check
def sets_at_the_same_time():
    """Overlapping sets and the global set with operations in flight together, submitted in a
    different order on each rank: each set negotiates on its own, so nothing waits on another
    set's order."""
    me, size = ds.rank(), ds.size()
    pairs = [ds.add_process_set([r, (r + 1) % size]) if size > 1 else None for r in range(size)]
    mine = [ps for ps in pairs if ps is not None and ps.included()]
    work = [(ps, i) for ps in mine for i in range(6)] + [(None, i) for i in range(6)]
    if me % 2:
        work.reverse()
    handles = []
    for ps, i in work:
        array = data(me, (1000 + i,), np.float64, i)
        if ps is None:
            handles.append((None, i, ds.allreduce_async(array, op=ds.Sum, name=f"global.{i}")))
        else:
            handles.append((ps, i, ds.allreduce_async(array, op=ds.Sum, name=f"pair.{i}",
                                                      process_set=ps)))
    for ps, i, handle in handles:
        members = list(range(size)) if ps is None else ps.ranks
        expected = reduce_ref([data(r, (1000 + i,), np.float64, i) for r in members], "sum")
        np.testing.assert_array_equal(ds.synchronize(handle), expected)
    for ps in pairs:
        if ps is not None:
            ds.remove_process_set(ps)
    return {"sets": len(mine)}


def error_of(fn):
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - the message is the result
        return f"{type(error).__name__}: {error}"
    return "no error"


@check
def errors():
    """Clear exceptions at the call: a rank outside the set, a removed set, bad ranks, adds that
    differ between ranks, a mismatch inside a set (naming the set)."""
    me, size = ds.rank(), ds.size()
    out = {}
    first = ds.add_process_set([0])
    if me != 0:
        out["not_member"] = error_of(lambda: ds.allreduce(np.ones(2), process_set=first))
    ds.remove_process_set(first)
    out["removed"] = error_of(lambda: ds.allreduce(np.ones(2), process_set=first))
    out["duplicates"] = error_of(lambda: ds.ProcessSet([0, 0]))
    out["negative"] = error_of(lambda: ds.ProcessSet([-1]))
    out["out_of_range"] = error_of(lambda: ds.add_process_set([0, size]))
    out["not_int"] = error_of(lambda: ds.ProcessSet([0.5]))
    out["unregistered"] = error_of(lambda: ds.allreduce(np.ones(2), process_set=ds.ProcessSet([0])))
    out["differing_add"] = error_of(lambda: ds.add_process_set([me % 2]))
    everyone = ds.add_process_set(list(range(size)))
    if size > 1:
        # dtype differs by rank within the set: every rank fails, and the message names the set
        out["mismatch"] = error_of(lambda: ds.allreduce(
            np.ones(3, dtype=np.float32 if me == 0 else np.float64), name="m", process_set=everyone))
        out["bad_root"] = error_of(lambda: ds.broadcast(np.ones(2), size, process_set=everyone))
    pair = ds.add_process_set([0, size - 1])
    if size > 2 and me == 1:
        out["root_outside"] = error_of(lambda: ds.broadcast(np.ones(2), 1, process_set=pair))
    if me in (0, size - 1) and size > 1:
        out["root_not_member"] = error_of(lambda: ds.broadcast(np.ones(2), 1, process_set=pair)) \
            if size > 2 else "skipped"
        out["splits"] = error_of(lambda: ds.alltoall(np.ones((3, 1)), [1, 1, 1], process_set=pair))
    # the session still works after all of it
    np.testing.assert_array_equal(ds.allreduce(np.ones(2), op=ds.Sum, process_set=everyone),
                                  np.full(2, float(size)))
    ds.remove_process_set(pair)
    ds.remove_process_set(everyone)
    return out


# --- dist_sync.torch ---------------------------------------------------------------------------

@check
def torch_ops_and_training():
    """dist_sync.torch on a set: the collectives (autograd included), DistributedOptimizer
    averaging over the set only, broadcast_parameters / broadcast_optimizer_state from a member."""
    import torch

    import dist_sync.torch as hvd

    me, size = hvd.rank(), hvd.size()
    evens = hvd.add_process_set([r for r in range(size) if r % 2 == 0])
    odds = hvd.add_process_set([r for r in range(size) if r % 2 == 1]) if size > 1 else None
    ps = evens if me % 2 == 0 else odds
    members = ps.ranks
    out = {}
    # allreduce forms
    t = torch.tensor(data(me, (6,), np.float32, 1))
    expected = reduce_ref([data(r, (6,), np.float32, 1) for r in members], "average")
    np.testing.assert_allclose(hvd.allreduce(t, process_set=ps).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(hvd.synchronize(hvd.allreduce_async(t, process_set=ps)).numpy(),
                               expected, rtol=1e-6)
    inplace = t.clone()
    hvd.allreduce_(inplace, op=hvd.Sum, process_set=ps)
    np.testing.assert_array_equal(inplace.numpy(),
                                  reduce_ref([data(r, (6,), np.float32, 1) for r in members], "sum"))
    grouped = hvd.grouped_allreduce([t, t * 2], op=hvd.Sum, process_set=ps)
    np.testing.assert_array_equal(grouped[1].numpy(), 2 * inplace.numpy())
    # autograd: d/dx sum(allreduce_sum(x)) = set size
    x = torch.ones(3, requires_grad=True)
    hvd.allreduce(x, op=hvd.Sum, process_set=ps).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full(3, float(len(members))))
    # allgather, broadcast, alltoall, reducescatter
    gathered = hvd.allgather(torch.full((me + 1, 2), float(me)), process_set=ps)
    assert gathered.shape[0] == sum(r + 1 for r in members)
    root = members[0]
    got = hvd.broadcast(torch.full((3,), float(me)), root, process_set=ps)
    np.testing.assert_array_equal(got.numpy(), np.full(3, float(root)))
    received = hvd.alltoall(torch.arange(len(members), dtype=torch.float64) + 10 * me,
                            process_set=ps)
    position = members.index(me)
    np.testing.assert_array_equal(received.numpy(), [10.0 * r + position for r in members])
    piece = hvd.reducescatter(torch.ones(len(members), 2), op=hvd.Sum, process_set=ps)
    np.testing.assert_array_equal(piece.numpy(), np.full((1, 2), float(len(members))))
    hvd.barrier(process_set=ps)
    assert hvd.broadcast_object(me, root, process_set=ps) == root
    assert hvd.allgather_object(me, process_set=ps) == members

    # DistributedOptimizer over the set: each member's gradient is its rank's, so the step
    # applies the average over the set's members only.
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(float(me))  # differs by rank until broadcast
    hvd.broadcast_parameters(model.state_dict(), root, process_set=ps)
    assert float(model.weight.detach()[0, 0]) == float(root)
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.5),
                                         named_parameters=model.named_parameters(),
                                         process_set=ps)
    inputs = torch.full((1, 4), float(me + 1))
    model(inputs).sum().backward()  # gradient = inputs
    optimizer.step()
    mean = np.mean([r + 1.0 for r in members])
    np.testing.assert_allclose(model.weight.detach().numpy(), np.full((1, 4), root - 0.5 * mean),
                               rtol=1e-6)
    # optimizer state from the set's root (momentum buffers differ by rank before)
    momentum = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.weight.grad = torch.full_like(model.weight, float(me))
    momentum.step()
    hvd.broadcast_optimizer_state(momentum, root, process_set=ps)
    buffer = momentum.state_dict()["state"][0]["momentum_buffer"]
    np.testing.assert_array_equal(buffer.numpy(), np.full((1, 4), float(root)))
    # num_groups: Horovod's deprecated spelling of groups=<int>
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grouped_opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                               named_parameters=model.named_parameters(),
                                               num_groups=1, process_set=ps)
    assert any("num_groups" in str(w.message) for w in caught)
    assert len(grouped_opt._ds_units) == 1
    # An optimizer over a set this rank is not in steps locally (Horovod's semantics).
    local_model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        local_model.weight.zero_()
    local_opt = hvd.DistributedOptimizer(torch.optim.SGD(local_model.parameters(), lr=1.0),
                                         named_parameters=local_model.named_parameters(),
                                         process_set=evens)
    local_model(torch.full((1, 2), float(me + 1))).sum().backward()
    local_opt.step()
    expected = -np.mean([r + 1.0 for r in evens.ranks]) if evens.included() else -(me + 1.0)
    np.testing.assert_allclose(local_model.weight.detach().numpy(), np.full((1, 2), expected))
    # SyncBatchNorm over the set: statistics of the members' concatenated batch
    norm = hvd.SyncBatchNorm(2, process_set=ps)
    batch = torch.tensor(data(me, (me + 2, 2), np.float32, 7))
    normalized = norm(batch)
    everything = np.concatenate([data(r, (r + 2, 2), np.float64, 7) for r in members])
    expected = (data(me, (me + 2, 2), np.float64, 7) - everything.mean(0)) / \
        np.sqrt(everything.var(0) + 1e-5)
    np.testing.assert_allclose(normalized.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    out["members"] = members
    hvd.remove_process_set(evens)
    if odds is not None:
        hvd.remove_process_set(odds)
    return out


@check
def grouped_allgather_reducescatter_sparse():
    """grouped_allgather / grouped_reducescatter (one request per group) on the global set and on
    a set, numpy and torch (autograd included), and torch's sparse_allreduce_async, against
    numpy."""
    import torch

    import dist_sync.torch as hvd

    me, size = ds.rank(), ds.size()
    upper = ds.add_process_set(list(range(1, size)) if size > 1 else [0])
    out = {}
    for ps in (ds.global_process_set, upper):
        if not ps.included():
            continue
        members = list(range(size)) if ps is ds.global_process_set else ps.ranks
        k = len(members)
        salt = 0 if ps is ds.global_process_set else 1
        # numpy grouped allgather: uneven rows, mixed dtypes, a scalar, an empty tensor
        specs = [((rows_of(me, salt), 3), np.float64), ((2,), np.int32), ((), np.float32),
                 ((0, 2), np.float16)]
        arrays = [data(me, shape, dtype, salt + i) for i, (shape, dtype) in enumerate(specs)]
        gathered = ds.grouped_allgather(arrays, name=f"ga.{salt}", process_set=ps)
        for i, (shape, dtype) in enumerate(specs):
            pieces = []
            for r in members:
                theirs_shape = (rows_of(r, salt), 3) if i == 0 else shape
                pieces.append(np.atleast_1d(data(r, theirs_shape, dtype, salt + i)))
            np.testing.assert_array_equal(gathered[i], np.concatenate(pieces))
            assert gathered[i].dtype == dtype
        # numpy grouped reducescatter, uneven row counts
        shapes = [(2 * k + 1, 2), (k,), (3 * k + 2, 1, 2)]
        arrays = [data(me, shape, np.float64, salt + i) for i, shape in enumerate(shapes)]
        pieces = ds.synchronize(ds.grouped_reducescatter_async(arrays, op=ds.Sum,
                                                               process_set=ps))
        position = members.index(me)
        for i, shape in enumerate(shapes):
            full = reduce_ref([data(r, shape, np.float64, salt + i) for r in members], "sum")
            counts = [shape[0] // k + (1 if p < shape[0] % k else 0) for p in range(k)]
            start = sum(counts[:position])
            np.testing.assert_array_equal(pieces[i], full[start:start + counts[position]])
        # torch: grouped allgather's gradient is the allgather's (each rank gets back the sum
        # over ranks of its rows' gradients)
        xs = [torch.full((me + 1, 2), float(me), requires_grad=True),
              torch.full((3,), 1.0, requires_grad=True)]
        ys = hvd.grouped_allgather(xs, process_set=ps)
        assert ys[0].shape[0] == sum(r + 1 for r in members)
        (ys[0].sum() * 2 + ys[1].sum() * 3).backward()
        np.testing.assert_array_equal(xs[0].grad.numpy(), np.full((me + 1, 2), 2.0 * k))
        np.testing.assert_array_equal(xs[1].grad.numpy(), np.full(3, 3.0 * k))
        # torch grouped reducescatter (Average): d/dx of sum of pieces = 1/k everywhere
        zs = [torch.ones(2 * k, 2, requires_grad=True), torch.ones(k, requires_grad=True)]
        rs = hvd.grouped_reducescatter(zs, process_set=ps)
        np.testing.assert_array_equal(rs[0].detach().numpy(), np.ones((2, 2)))
        (rs[0].sum() + rs[1].sum()).backward()
        np.testing.assert_allclose(zs[0].grad.numpy(), np.full((2 * k, 2), 1.0 / k))
        np.testing.assert_allclose(zs[1].grad.numpy(), np.full(k, 1.0 / k))
        mins = hvd.grouped_reducescatter([torch.full((k,), float(me))], op=hvd.Min,
                                         process_set=ps)
        assert float(mins[0][0]) == float(min(members))
        # sparse allreduce against the dense one
        dense = torch.tensor(data(me, (6, 4), np.float32, salt))
        dense[dense.abs() < 6] = 0
        handle = hvd.sparse_allreduce_async(dense.to_sparse(), name=f"sparse.{salt}",
                                            op=hvd.Average, process_set=ps)
        reduced = handle()
        expected = np.mean([np.where(np.abs(data(r, (6, 4), np.float32, salt)) < 6, 0,
                                     data(r, (6, 4), np.float32, salt)) for r in members], axis=0)
        np.testing.assert_allclose(reduced.to_dense().numpy(), expected, rtol=1e-6)
        out[str(salt)] = k
    ds.remove_process_set(upper)
    return out


# --- scenarios: static sets and Horovod's documentation examples --------------------------------

@check.scenario
def static_sets():
    """init(process_sets=[...]) with Horovod's example sets (even / odd ranks), plus every rank
    as a singleton; the ids follow the list."""
    me, size = _world()
    even = ds.ProcessSet([r for r in range(size) if r % 2 == 0])
    odd = ds.ProcessSet([r for r in range(size) if r % 2 == 1]) if size > 1 else None
    singles = [ds.ProcessSet([r]) for r in range(size)]
    listed = [even] + ([odd] if odd else []) + singles
    ds.init(process_sets=listed)
    ids = [p.process_set_id for p in listed]
    mine = even if me % 2 == 0 else odd
    result = ds.allreduce(np.array([float(me)]), op=ds.Sum, process_set=mine)
    assert result[0] == sum(mine.ranks)
    own = singles[me]
    assert ds.allreduce(np.array([float(me)]), process_set=own)[0] == me
    dynamic = _error(lambda: ds.remove_process_set(ds.add_process_set([0])))
    ds.shutdown()
    return {"ids": ids, "dynamic": dynamic}


@check.scenario
def static_sets_differ():
    """Ranks that list different sets get a ValueError on every rank."""
    me, size = _world()
    listed = [ds.ProcessSet([0, 1])] if me == 0 else [ds.ProcessSet([0])]
    error = _error(lambda: ds.init(process_sets=listed))
    return {"error": error, "initialized": ds.is_initialized()}


@check.scenario
def horovod_docs_examples():
    """The three examples of Horovod's process-set documentation, as written there (numpy
    arrays in place of TensorFlow tensors), one after the other in one process: static sets,
    a set from an MPI communicator, dynamic sets."""
    import dist_sync as hvd
    from mpi4py import MPI

    results = {}
    # 1) static process sets
    even_set = hvd.ProcessSet([0, 2])
    odd_set = hvd.ProcessSet([1, 3])
    hvd.init(process_sets=[even_set, odd_set])
    results["static"] = [str(p) for p in [hvd.global_process_set, even_set, odd_set]]
    tensor = np.array([float(hvd.rank())])
    if hvd.rank() in (0, 2):
        results["static_sum"] = float(hvd.allreduce(tensor, op=hvd.Sum, process_set=even_set)[0])
    else:
        results["static_sum"] = float(hvd.allreduce(tensor, op=hvd.Sum, process_set=odd_set)[0])
    hvd.shutdown()
    # 2) static process sets from MPI communicators
    comm = MPI.COMM_WORLD
    subcomm = MPI.COMM_WORLD.Split(color=MPI.COMM_WORLD.rank % 2, key=MPI.COMM_WORLD.rank)
    split_process_set = hvd.ProcessSet(subcomm)
    hvd.init(comm, process_sets=[split_process_set])
    results["comm"] = [split_process_set.process_set_id, split_process_set.ranks]
    results["comm_sum"] = float(hvd.allreduce(tensor, op=hvd.Sum, process_set=split_process_set)[0])
    results["comm_all_sets"] = [p.ranks for p in hvd.process_sets()]
    hvd.shutdown()
    # 3) dynamic process sets
    hvd.init(process_sets="dynamic")
    even_set = hvd.add_process_set([0, 2])
    odd_set = hvd.add_process_set([1, 3])
    results["dynamic"] = [str(p) for p in [hvd.global_process_set, even_set, odd_set]]
    mine = even_set if hvd.rank() in (0, 2) else odd_set
    results["dynamic_sum"] = float(hvd.allreduce(tensor, op=hvd.Sum, process_set=mine)[0])
    hvd.shutdown()
    return results


def _world():
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


def _error(fn):
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - the message is the result
        return f"{type(error).__name__}: {error}"
    return "no error"


if __name__ == "__main__":
    check.main()
