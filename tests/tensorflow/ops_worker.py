"""dist_sync.tensorflow collectives under mpirun, eagerly and inside tf.function: every dtype and
op against numpy references, every gradient against the exact gradient of the sum of all ranks'
losses computed in numpy float64 from every rank's inputs, tf.IndexedSlices, objects, variables,
errors, and torch with TensorFlow in one process."""
import threading
import time

import numpy as np
import tensorflow as tf

import dist_sync.tensorflow as hvd
from tests.support.reference import DTYPES, OPS, compare, make_input
from tests.support.tf_checks import MODES, OP, digest, in_mode, tf_registry, to_storage, to_tf

check = tf_registry()
FLOATS = ["float16", "bfloat16", "float32", "float64"]


def rank_size():
    return hvd.rank(), hvd.size()


def rows_input(seed: int, rank: int, rows: int, dtype: str, width: int = 3) -> tf.Tensor:
    return tf.reshape(to_tf(make_input(seed, rank, rows * width, dtype, "sum"), dtype),
                      [rows, width])


# --- values against numpy --------------------------------------------------------------------

@check
def allreduce_every_dtype_op_and_mode():
    rank, size = rank_size()
    failures, outputs = [], []
    for mode in MODES:
        reduce = in_mode(mode, lambda x, op, pre, post: hvd.allreduce(
            x, op=op, prescale_factor=pre, postscale_factor=post))
        for dtype in DTYPES:
            for op in OPS:
                scales = [(1.0, 1.0)] + ([(0.5, 3.0)] if dtype in FLOATS else [])
                for count in (37,) if mode == "graph" else (0, 37):
                    inputs = [make_input(21, r, count, dtype, op) for r in range(size)]
                    for pre, post in scales:
                        out = reduce(to_tf(inputs[rank], dtype), OP[op], pre, post)
                        problem = compare(to_storage(out, dtype), inputs, dtype, op, pre, post)
                        if problem:
                            failures.append(f"{mode}/{dtype}/{op}/{count}/{pre}: {problem}")
                        outputs.append(out)
    variable = tf.Variable([1.0, 2.0])
    assert hvd.allreduce(variable, op=hvd.Sum).numpy().tolist() == [size, 2.0 * size]
    assert not failures, failures[:5]
    return {"digest": digest(outputs)}


@check
def grouped_allreduce_and_compression():
    rank, size = rank_size()
    spec = [("float32", 7), ("int32", 5), ("bfloat16", 6), ("float64", 1), ("float16", 0)]
    outputs = []
    for mode in MODES:
        grouped = in_mode(mode, lambda xs, op: hvd.grouped_allreduce(xs, op=op))
        for op in ("sum", "max", "average"):
            inputs = [[make_input(22, r, n, dtype, op) for r in range(size)] for dtype, n in spec]
            mine = [to_tf(per_rank[rank], dtype) for per_rank, (dtype, _) in zip(inputs, spec)]
            results = grouped(mine, OP[op])
            for out, per_rank, (dtype, _) in zip(results, inputs, spec):
                problem = compare(to_storage(out, dtype), per_rank, dtype, op)
                assert not problem, f"{mode}/{op}/{dtype}: {problem}"
                outputs.append(out)
    # Compression: float32 travels as float16/bfloat16 and comes back as float32.
    x = tf.constant(np.linspace(-1, 1, 11) * (rank + 1), dtype=tf.float32)
    exact = np.linspace(-1, 1, 11) * sum(range(1, size + 1))
    for compression, tolerance in ((hvd.Compression.fp16, 2e-3), (hvd.Compression.bf16, 2e-2)):
        out = hvd.allreduce(x, op=hvd.Sum, compression=compression)
        assert out.dtype == tf.float32
        assert np.allclose(out.numpy(), exact, rtol=tolerance, atol=tolerance), out
    return {"digest": digest(outputs)}


@check
def allgather_broadcast_every_dtype():
    rank, size = rank_size()
    outputs = []
    for mode in MODES:
        gather = in_mode(mode, hvd.allgather)
        bcast = in_mode(mode, lambda x, root: hvd.broadcast(x, root))
        for dtype in DTYPES:
            parts = [rows_input(23, r, r, dtype) for r in range(size)]  # rank 0 sends no rows
            out = gather(parts[rank])
            assert np.array_equal(to_storage(out, dtype),
                                  np.concatenate([to_storage(p, dtype) for p in parts])), dtype
            outputs.append(out)
            values = [rows_input(24, r, 4, dtype) for r in range(size)]
            for root in range(size):
                out = bcast(values[rank], root)
                assert np.array_equal(to_storage(out, dtype), to_storage(values[root], dtype))
                outputs.append(out)
        scalar = gather(tf.constant(float(rank)))
        assert scalar.numpy().tolist() == [float(r) for r in range(size)], scalar
        # Types that only move (Horovod moves them too): their bytes travel as integers.
        for dtype in (tf.bool, tf.uint16, tf.uint32, tf.uint64):
            parts = [tf.cast(tf.constant([[r % 2, 1, 7 * r]]), dtype) for r in range(size)]
            out = gather(parts[rank])
            assert out.dtype == dtype and np.array_equal(
                out.numpy(), np.concatenate([p.numpy() for p in parts])), (mode, dtype)
            out = bcast(parts[rank], size - 1)
            assert np.array_equal(out.numpy(), parts[size - 1].numpy()), (mode, dtype)
    return {"digest": digest(outputs)}


@check
def alltoall_and_reducescatter():
    rank, size = rank_size()
    for mode in MODES:
        exchange = in_mode(mode, lambda x, s: hvd.alltoall(x, splits=s))
        even = in_mode(mode, lambda x: hvd.alltoall(x))
        scatter = in_mode(mode, lambda x, op: hvd.reducescatter(x, op=op))
        for dtype in ("int32", "bfloat16", "float32", "float64"):
            # Rank r sends p + 1 rows to rank p.
            sent = [rows_input(25, r, sum(p + 1 for p in range(size)), dtype)
                    for r in range(size)]
            splits = tf.constant([p + 1 for p in range(size)], dtype=tf.int32)
            received, rows = exchange(sent[rank], splits)
            start = sum(p + 1 for p in range(rank))
            expected = np.concatenate([to_storage(sent[r], dtype)[start:start + rank + 1]
                                       for r in range(size)])
            assert np.array_equal(to_storage(received, dtype), expected), f"{mode}/{dtype}"
            assert rows.numpy().tolist() == [rank + 1] * size
            received = even(rows_input(26, rank, 2 * size, dtype))  # no splits: no rows
            expected = np.concatenate([to_storage(rows_input(26, r, 2 * size, dtype), dtype)
                                       [2 * rank:2 * rank + 2] for r in range(size)])
            assert np.array_equal(to_storage(received, dtype), expected), f"{mode}/{dtype}"
            for op in ("sum", "average", "max"):
                count = 2 * size + 1
                inputs = [make_input(27, r, count * 2, dtype, op) for r in range(size)]
                piece = scatter(tf.reshape(to_tf(inputs[rank], dtype), [count, 2]), OP[op])
                full = np.stack([x.reshape(count, 2) for x in inputs])
                mine = [count // size + (1 if r < count % size else 0) for r in range(size)]
                begin = sum(mine[:rank])
                wanted = [x[begin:begin + mine[rank]].reshape(-1) for x in full]
                problem = compare(to_storage(piece, dtype).reshape(-1), wanted, dtype, op)
                assert not problem, f"{mode}/{dtype}/{op}: {problem}"
    return {}


@check
def many_independent_collectives_in_one_graph():
    # More unrelated collectives than inter-op threads, with inputs ready in a different order
    # on each rank: they must not deadlock (Note [Collectives inside tf.function]).
    rank, size = rank_size()

    @tf.function
    def many(x):
        heavy = tf.reduce_sum(tf.linalg.matmul(tf.ones([300, 300]), tf.ones([300, 300]))) * 0.0
        # Inputs ready early or late, differently on each rank.
        inputs = [x * (i + 1) + (heavy if (i < 6) == (rank % 2 == 0) else 0.0)
                  for i in range(12)]
        outs = [hvd.allreduce(t, op=hvd.Sum) for t in inputs]
        outs += [hvd.allgather(t) for t in inputs[:4]] + [hvd.broadcast(t, 0) for t in inputs[:4]]
        return outs
    outs = many(tf.constant([float(rank + 1)]))
    total = sum(range(1, size + 1))
    assert [float(o.numpy()[0]) for o in outs[:12]] == [total * (i + 1) for i in range(12)]
    assert [float(o.numpy()[0]) for o in outs[16:]] == [float(i + 1) for i in range(4)]
    return {}


@check
def graph_mode_runs_compiled_kernels_in_any_order():
    # Inside tf.function every collective is an asynchronous kernel (no py_function node), and
    # two of them whose nodes start in opposite orders on different ranks complete (Note
    # [Collectives inside tf.function]): rank 0 submits A long before B, rank 1 the reverse.
    rank, size = rank_size()

    def late(x: tf.Tensor) -> tf.Tensor:
        # A node that finishes 0.3 s after it starts (no collective in it).
        def wait(v):
            time.sleep(0.3)
            return v
        out = tf.py_function(wait, [x], x.dtype)
        out.set_shape(x.shape)
        return out

    @tf.function
    def crossed(x):
        a_in, b_in = x + 1.0, x * 10.0
        if rank % 2 == 0:
            b_in = late(b_in)
        else:
            a_in = late(a_in)
        a = hvd.allreduce(a_in, op=hvd.Sum, name="order.a")
        b = hvd.grouped_allreduce([b_in, b_in * 2.0], op=hvd.Sum, name="order.b")
        return [a] + b

    x = tf.constant([float(rank)])
    a, b, b2 = crossed(x)
    ranks = np.arange(size, dtype=np.float64)
    assert a.numpy().tolist() == [float((ranks + 1).sum())], a
    assert b.numpy().tolist() == [float((ranks * 10).sum())], b
    assert b2.numpy().tolist() == [float((ranks * 20).sum())], b2

    @tf.function
    def every_op(x):
        return [hvd.allreduce(x, op=hvd.Sum), hvd.allgather(x), hvd.broadcast(x, 0),
                hvd.alltoall(tf.tile(x, [size])), hvd.reducescatter(tf.tile(x, [size]))]
    graph = every_op.get_concrete_function(tf.TensorSpec([1], tf.float32)).graph
    types = {op.type for op in graph.get_operations()}
    kernels = {"DistSyncAllreduce", "DistSyncAllgather", "DistSyncBroadcast", "DistSyncAlltoall",
               "DistSyncReducescatter"}
    assert kernels <= types and "EagerPyFunc" not in types, sorted(types)

    # Their gradients too (all but those of Min/Max/Product reductions) are kernels.
    @tf.function
    def every_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = [hvd.allreduce(x, op=hvd.Sum), hvd.allgather(x), hvd.broadcast(x, 0),
                       hvd.alltoall(tf.tile(x, [size])),
                       hvd.reducescatter(tf.tile(x, [size]), op=hvd.Sum)]
            loss = tf.add_n([tf.reduce_sum(o) for o in outputs])
        return tape.gradient(loss, x)
    graph = every_gradient.get_concrete_function(tf.TensorSpec([1], tf.float32)).graph
    types = {op.type for op in graph.get_operations()}
    assert "EagerPyFunc" not in types, sorted(types)
    # d/dx of the five outputs summed over every rank's loss: size (allreduce), size (allgather:
    # every rank's sum holds this rank's row), size on the root and 0 elsewhere (broadcast),
    # size (alltoall: each copy goes to one rank), size (reducescatter: each rank's share).
    got = every_gradient(tf.constant([1.0 + rank])).numpy().tolist()
    assert got == [float(4 * size + (size if rank == 0 else 0))], got

    # The reduced gradients are differentiable again (the kernel node's registered gradient):
    # z = sum(average over ranks of 3 x^2) gives dz/dx = 6 x on each rank.
    @tf.function
    def second_order(x):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf.reduce_sum(x ** 3)
            g = hvd.DistributedGradientTape(inner).gradient(y, x)
            z = tf.reduce_sum(g)
        return outer.gradient(z, x)
    x = tf.constant([1.0 + rank, -2.0], dtype=tf.float64)
    assert np.allclose(second_order(x).numpy(), 6.0 * x.numpy(), rtol=1e-12), second_order(x)
    return {}


def dist_sync_part(message: str, start: str) -> str:
    """dist_sync's message inside TensorFlow's, which adds the node and where it was defined."""
    begin = message.find(start)
    assert begin >= 0, f"no {start!r} in {message!r}"
    line = message[begin:].splitlines()[0]
    return line.split("[[")[0].strip()


@check
def graph_mode_errors_are_tensorflow_statuses():
    # A mismatch found in negotiation is tf.errors.FailedPreconditionError on every rank (what
    # Horovod's TensorFlow binding raises) with dist_sync's message; a bad argument known only
    # when the graph runs is InvalidArgumentError. The engine goes on serving afterwards.
    rank, size = rank_size()
    last = rank == size - 1
    messages = {}
    cases = {
        "allreduce_shape": lambda: hvd.allreduce(tf.zeros([5 if last else 4]), name="e.ar"),
        "allgather_dtype": lambda: hvd.allgather(
            tf.zeros([2], tf.float64 if last else tf.float32), name="e.ag"),
        "broadcast_root": lambda: hvd.broadcast(tf.zeros([3]), rank, name="e.bc"),
        "alltoall_shape": lambda: hvd.alltoall(tf.zeros([2 * size, 3 if last else 2]),
                                               name="e.a2a"),
        "reducescatter_op": lambda: hvd.reducescatter(
            tf.zeros([size, 2]), op=hvd.Max if last else hvd.Sum, name="e.rs"),
    }
    for label, call in cases.items():
        try:
            tf.function(call)()
        except tf.errors.FailedPreconditionError as error:
            messages[label] = dist_sync_part(error.message, "Mismatched ")
        else:
            raise AssertionError(f"{label} did not raise")

    @tf.function
    def bad_splits(x):
        splits = tf.ones([size], tf.int32) * tf.cast(tf.shape(x)[0], tf.int32)  # sums too high
        return hvd.alltoall(x, splits=splits, name="e.splits")
    try:
        bad_splits(tf.zeros([2]))
    except tf.errors.InvalidArgumentError as error:
        messages["splits"] = dist_sync_part(error.message, "splits ")
    else:
        raise AssertionError("bad splits did not raise")
    assert tf.function(lambda: hvd.allreduce(tf.ones([2]), op=hvd.Sum))().numpy().tolist() == \
        [size, size]
    return messages


# --- gradients against numpy ------------------------------------------------------------------

def _weights(seed: int, rank: int, shape) -> np.ndarray:
    return np.random.default_rng([seed, rank]).uniform(-1, 1, shape)


def _grad(mode, forward, x, w):
    """d(sum(w * forward(x)))/dx through a tape, eagerly or inside tf.function."""
    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward(x)
            loss = tf.reduce_sum(tf.cast(y, tf.float64) * w)
        return tape.gradient(loss, x)
    return in_mode(mode, step)(x, tf.constant(w))


@check
def gradients_match_numpy():
    rank, size = rank_size()
    xs = [np.random.default_rng([31, r]).uniform(0.5, 1.5, (4, 3)) for r in range(size)]
    x = tf.constant(xs[rank])
    stack = np.stack(xs)
    failures = []
    for mode in MODES:
        # allreduce: each loss sees y = reduce(pre * x) * post.
        ws = [_weights(32, r, (4, 3)) for r in range(size)]
        wsum = np.sum(ws, axis=0)
        pre, post = 0.5, 3.0
        for op in OPS:
            got = _grad(mode, lambda t: hvd.allreduce(t, op=OP[op], prescale_factor=pre,
                                                     postscale_factor=post), x, ws[rank])
            if op in ("sum", "average"):
                expected = wsum * pre * post / (size if op == "average" else 1)
            elif op == "product":
                others = np.prod(np.delete(stack, rank, axis=0), axis=0)
                expected = wsum * post * pre ** size * others
            else:
                winner = stack.min(0) if op == "min" else stack.max(0)
                mask = (stack[rank] == winner)
                expected = wsum * pre * post * mask / (stack == winner).sum(0)
            if not np.allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12):
                failures.append(f"{mode}/allreduce/{op}")
        # grouped allreduce (Sum) of two tensors.
        got = _grad(mode, lambda t: hvd.grouped_allreduce([t, 2.0 * t], op=hvd.Sum)[1], x,
                    ws[rank])
        if not np.allclose(got.numpy(), 2.0 * wsum):
            failures.append(f"{mode}/grouped")
        # allgather: rank r has r + 1 rows.
        mine = tf.constant(np.random.default_rng([33, rank]).uniform(-1, 1, (rank + 1, 3)))
        total = sum(r + 1 for r in range(size))
        wg = [_weights(34, r, (total, 3)) for r in range(size)]
        start = sum(r + 1 for r in range(rank))
        got = _grad(mode, hvd.allgather, mine, wg[rank])
        if not np.allclose(got.numpy(), np.sum(wg, axis=0)[start:start + rank + 1]):
            failures.append(f"{mode}/allgather")
        # broadcast from rank 1: the root gets everyone's weights, others zeros.
        got = _grad(mode, lambda t: hvd.broadcast(t, 1), x, ws[rank])
        if not np.allclose(got.numpy(), wsum if rank == 1 else 0.0):
            failures.append(f"{mode}/broadcast")
        # alltoall: rank r sends p + 1 rows to rank p; rank p's loss weighs what it received.
        send_rows = sum(p + 1 for p in range(size))
        src = tf.constant(np.random.default_rng([35, rank]).uniform(-1, 1, (send_rows, 2)))
        wa = [_weights(36, p, ((p + 1) * size, 2)) for p in range(size)]
        splits = [p + 1 for p in range(size)]
        got = _grad(mode, lambda t: hvd.alltoall(t, splits=splits)[0], src, wa[rank])
        expected = np.concatenate([wa[p][rank * (p + 1):(rank + 1) * (p + 1)]
                                   for p in range(size)])
        if not np.allclose(got.numpy(), expected):
            failures.append(f"{mode}/alltoall")
        # reducescatter: rank r's loss weighs its rows of the reduction.
        count = 2 * size + 1
        xr = tf.constant(np.random.default_rng([37, rank]).uniform(-1, 1, (count, 2)))
        pieces = [count // size + (1 if r < count % size else 0) for r in range(size)]
        wr = [_weights(38, r, (pieces[r], 2)) for r in range(size)]
        for op in ("sum", "average"):
            got = _grad(mode, lambda t: hvd.reducescatter(t, op=OP[op]), xr, wr[rank])
            expected = np.concatenate(wr) / (size if op == "average" else 1)
            if not np.allclose(got.numpy(), expected):
                failures.append(f"{mode}/reducescatter/{op}")
    assert not failures, failures
    return {}


# --- sparse, objects, variables, barrier, join ------------------------------------------------

@check
def indexed_slices():
    rank, size = rank_size()
    for mode in MODES:
        fn = in_mode(mode, lambda v, i, op: hvd.allreduce(
            tf.IndexedSlices(v, i, tf.constant([10, 2], tf.int64)), op=op))
        values = tf.constant(np.full((2, 2), rank + 1.0))
        indices = tf.constant([rank, 9], tf.int64)
        for op, scale in ((hvd.Sum, 1.0), (hvd.Average, 1.0 / size)):
            out = fn(values, indices, op)
            assert isinstance(out, tf.IndexedSlices)
            expected_values = np.concatenate([np.full((2, 2), r + 1.0) for r in range(size)])
            assert np.allclose(out.values.numpy(), expected_values * scale), mode
            assert out.indices.numpy().tolist() == sum([[r, 9] for r in range(size)], [])
            dense = tf.convert_to_tensor(out).numpy()
            assert np.isclose(dense[9].sum(), 2 * scale * sum(range(1, size + 1)))
        # grouped_allreduce of slices and dense tensors together, as Horovod allows.
        grouped = in_mode(mode, lambda v, i, d: hvd.grouped_allreduce(
            [tf.IndexedSlices(v, i, tf.constant([10, 2], tf.int64)), d], op=hvd.Sum))
        out, summed = grouped(values, indices, tf.constant([float(rank)] * 3))
        assert isinstance(out, tf.IndexedSlices) and out.indices.numpy().tolist() == \
            sum([[r, 9] for r in range(size)], []), mode
        assert summed.numpy().tolist() == [float(sum(range(size)))] * 3, mode
        try:
            hvd.grouped_allreduce([tf.IndexedSlices(values, indices), values], op=hvd.Max)
        except NotImplementedError as error:
            assert "op=Average and Sum" in str(error)
        else:
            raise AssertionError("grouped_allreduce of slices with op=Max did not raise")
    return {}


@check
def objects_variables_barrier_join():
    rank, size = rank_size()
    assert hvd.broadcast_object({"from": rank}, root_rank=size - 1) == {"from": size - 1}
    assert hvd.allgather_object(("r", rank)) == [("r", r) for r in range(size)]
    variables = [tf.Variable(np.full((3,), float(rank))), tf.Variable(rank, dtype=tf.int32)]
    hvd.broadcast_variables(variables, root_rank=1)
    assert variables[0].numpy().tolist() == [1.0] * 3 and int(variables[1].numpy()) == 1
    graph_vars = [tf.Variable(np.full((2,), float(rank)))]

    @tf.function
    def broadcast_in_graph():
        hvd.broadcast_variables(graph_vars, root_rank=0)
    broadcast_in_graph()
    assert graph_vars[0].numpy().tolist() == [0.0, 0.0]
    # TensorFlow 1: the graph's global variables, in a Session; eagerly refused.
    try:
        hvd.broadcast_global_variables(0)
    except RuntimeError as error:
        assert "hvd.broadcast_variables" in str(error), error
    else:
        raise AssertionError("broadcast_global_variables ran eagerly")
    with tf.Graph().as_default():
        v1 = tf.compat.v1.Variable(np.full((2,), float(rank + 5)), use_resource=True)
        assign = hvd.broadcast_global_variables(size - 1)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(assign)
            assert session.run(v1).tolist() == [float(size + 4)] * 2
    assert int(hvd.rank_op()) == rank and int(hvd.size_op()) == size
    hvd.barrier()
    assert hvd.join() in range(size)
    return {}


@check
def torch_and_tensorflow_in_one_process():
    import torch

    import dist_sync.torch as hvd_torch
    rank, size = rank_size()
    a = hvd_torch.allreduce(torch.tensor([float(rank)]), op=hvd_torch.Sum)
    b = hvd.allreduce(tf.constant([float(rank)]), op=hvd.Sum)
    assert a.item() == b.numpy()[0] == sum(range(size))
    return {}


# --- errors ----------------------------------------------------------------------------------

@check
def errors():
    rank, size = rank_size()
    messages = {}
    for name, call in {
        "bool": lambda: hvd.allreduce(tf.constant([True])),
        "uint16": lambda: hvd.reducescatter(tf.constant([1, 2], tf.uint16)),
        "list": lambda: hvd.allreduce([1.0, 2.0]),
        "op": lambda: hvd.allreduce(tf.constant([1.0]), op=17),
        "root": lambda: hvd.broadcast(tf.constant([1.0]), size),
        "splits": lambda: hvd.alltoall(tf.zeros([5]), splits=[1] * size),
        "even": lambda: hvd.alltoall(tf.zeros([2 * size + 1])),
    }.items():
        try:
            call()
        except (TypeError, ValueError) as error:
            messages[name] = f"{type(error).__name__}: {error}"
        else:
            raise AssertionError(f"{name} did not raise")
    # A shape that differs across ranks fails on every rank, eagerly and in a tf.function,
    # with the engine's message naming the tensor.
    for mode in MODES:
        fn = in_mode(mode, lambda x: hvd.allreduce(x, name=f"mismatch.{mode}"))
        try:
            fn(tf.zeros([4 if rank < size - 1 else 5]))
        except Exception as error:  # noqa: BLE001 - the types are what the test checks
            messages[f"shape_{mode}"] = str(error)
            messages[f"kind_{mode}"] = [isinstance(error, tf.errors.FailedPreconditionError),
                                        isinstance(error, hvd.DistSyncError)]
        else:
            raise AssertionError(f"{mode} shape mismatch did not raise")
    # The engine works afterwards.
    assert hvd.allreduce(tf.constant([1.0]), op=hvd.Sum).numpy()[0] == size
    return messages


@check.scenario
def kernels_racing_shutdown():
    """A thread keeps running a tf.function whose allreduce kernel submits from TensorFlow's
    own threads (no GIL) while the main thread shuts dist_sync down: the loop ends with a
    TensorFlow status, nothing crashes or hangs, and a kernel after shutdown is refused."""
    hvd.init()
    reduce = tf.function(lambda x: hvd.allreduce(x, name="race", op=hvd.Sum))
    x = tf.ones([4096])
    assert float(reduce(x)[0]) == hvd.size()
    ended = []

    def loop() -> None:
        while True:
            try:
                reduce(x)
            except tf.errors.OpError as error:
                ended.append([type(error).__name__, error.message])
                return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    time.sleep(0.5)
    hvd.shutdown()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the kernel loop still runs 60 s after shutdown()"
    try:
        reduce(x)
    except tf.errors.OpError as error:
        after = [type(error).__name__, error.message]
    else:
        raise AssertionError("an allreduce kernel ran after shutdown()")
    return {"loop": ended[0], "after": after}


if __name__ == "__main__":
    check.main()
