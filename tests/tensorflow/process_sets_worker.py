"""dist_sync.tensorflow on process sets and with Adasum, under mpirun: every collective eagerly and
inside tf.function on sets of every shape against numpy float64 references built from the members'
regenerated inputs; gradients of the set's collectives; DistributedGradientTape and the Keras
DistributedOptimizer limited to a set; Adasum against the numpy combination tree; errors."""
import numpy as np
import tensorflow as tf

import dist_sync.tensorflow as hvd
from tests.collectives.test_adasum_local import adasum_tree
from tests.process_sets.process_sets_worker import data, reduce_ref, rows_of, shapes_of_sets
from tests.support.tf_checks import MODES, in_mode, tf_registry

check = tf_registry()
OPS = {"sum": hvd.Sum, "average": hvd.Average, "min": hvd.Min, "max": hvd.Max}


def exercise(ps, salt):
    """Every collective on `ps` (this rank is a member), in both modes; asserts against numpy."""
    me, members = hvd.rank(), ps.ranks
    k, position = len(members), members.index(me)
    for mode in MODES:
        reduce = in_mode(mode, lambda x, op: hvd.allreduce(x, op=op, process_set=ps))
        for op_name, op in OPS.items():
            got = reduce(tf.constant(data(me, (5, 3), np.float64, salt)), op)
            expected = reduce_ref([data(r, (5, 3), np.float64, salt) for r in members], op_name)
            np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
        grouped = in_mode(mode, lambda xs: hvd.grouped_allreduce(xs, op=hvd.Sum, process_set=ps))
        for i, got in enumerate(grouped([tf.constant(data(me, (i + 1,), np.float32, salt + i))
                                         for i in range(3)])):
            np.testing.assert_array_equal(got.numpy(), reduce_ref(
                [data(r, (i + 1,), np.float32, salt + i) for r in members], "sum"))
        for root in members:
            got = in_mode(mode, lambda x: hvd.broadcast(x, root, process_set=ps))(
                tf.constant(data(me, (4,), np.int32, salt)))
            np.testing.assert_array_equal(got.numpy(), data(root, (4,), np.int32, salt))
        got = in_mode(mode, lambda x: hvd.allgather(x, process_set=ps))(
            tf.constant(data(me, (rows_of(me, salt), 2), np.float64, salt)))
        np.testing.assert_array_equal(got.numpy(), np.concatenate(
            [data(r, (rows_of(r, salt), 2), np.float64, salt) for r in members]))
        splits = [(position + p) % 3 for p in range(k)]
        received, received_splits = in_mode(mode, lambda x: hvd.alltoall(
            x, splits=splits, process_set=ps))(tf.constant(data(me, (sum(splits), 2),
                                                                np.float64, salt)))
        pieces = []
        for r in members:
            theirs = [(members.index(r) + p) % 3 for p in range(k)]
            start = sum(theirs[:position])
            pieces.append(data(r, (sum(theirs), 2), np.float64, salt)[start:start
                                                                      + theirs[position]])
        np.testing.assert_array_equal(received.numpy(), np.concatenate(pieces))
        assert received_splits.numpy().tolist() == [p.shape[0] for p in pieces]
        rows = 2 * k + 1
        got = in_mode(mode, lambda x: hvd.reducescatter(x, op=hvd.Sum, process_set=ps))(
            tf.constant(data(me, (rows, 3), np.float64, salt)))
        full = reduce_ref([data(r, (rows, 3), np.float64, salt) for r in members], "sum")
        counts = [rows // k + (1 if p < rows % k else 0) for p in range(k)]
        start = sum(counts[:position])
        np.testing.assert_array_equal(got.numpy(), full[start:start + counts[position]])
    hvd.barrier(process_set=ps)
    assert hvd.broadcast_object({"from": me}, members[-1], process_set=ps) == {"from": members[-1]}
    assert hvd.allgather_object(me * 10 + salt, process_set=ps) == [r * 10 + salt for r in members]
    assert int(hvd.size_op(process_set_id=ps.process_set_id)) == k
    assert int(hvd.process_set_included_op(process_set_id=ps.process_set_id)) == 1


def exercise_gradients(ps, salt):
    """Gradients through the set's collectives: of the sum over the set's members of each
    member's loss sum(w * f(x_r)), with w a fixed weight vector, in float64."""
    me, members = hvd.rank(), ps.ranks
    weight = np.arange(1.0, 7.0).reshape(2, 3)
    x = tf.Variable(data(me, (2, 3), np.float64, salt))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(hvd.allreduce(x, op=hvd.Sum, process_set=ps) * weight)
    # Each member's loss depends on every member's x through the sum: d(sum of losses)/dx_me
    # is len(members) * weight.
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), len(members) * weight)
    root = members[0]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(hvd.broadcast(x, root, process_set=ps) * weight)
    expected = len(members) * weight if me == root else np.zeros_like(weight)
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), expected)
    with tf.GradientTape() as tape:
        gathered = hvd.allgather(x, process_set=ps)
        loss = tf.reduce_sum(gathered * np.tile(weight, (len(members), 1)))
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), len(members) * weight)
    # DistributedGradientTape on the set: each member's gradient of sum(x_me * (me + 1)) is
    # me + 1; averaged over the members.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(x * float(me + 1))
    tape = hvd.DistributedGradientTape(tape, process_set=ps)
    got = tape.gradient(loss, x).numpy()
    np.testing.assert_array_equal(got, np.full((2, 3), np.mean([r + 1.0 for r in members])))


@check
def every_shape():
    """Every collective on every shape of set, one set at a time (every rank adds each set, the
    members use it), with a global allreduce between sets."""
    me, size = hvd.rank(), hvd.size()
    checked = []
    for index, ranks in enumerate(shapes_of_sets(size)):
        ps = hvd.add_process_set(ranks)
        if ps.included():
            exercise(ps, index)
            exercise_gradients(ps, index)
            checked.append(sorted(ranks))
        else:
            assert int(hvd.process_set_included_op(process_set_id=ps.process_set_id)) == 0
        total = hvd.allreduce(tf.constant([float(me)]), op=hvd.Sum)
        assert total.numpy()[0] == sum(range(size))
        assert hvd.remove_process_set(ps) is True
    return {"checked": checked}


@check
def keras_optimizer_on_a_set():
    """The Keras DistributedOptimizer and DistributedGradientTape average over the set's members
    only: ranks of the set end with identical weights moved by the members' mean gradient; a rank
    outside the set (wrapping the same way, as in Horovod) trains on its own gradients."""
    import keras

    from dist_sync.tensorflow.keras import DistributedOptimizer

    me, size = hvd.rank(), hvd.size()
    members = [r for r in range(size) if r != size - 1] or [0]
    ps = hvd.add_process_set(members)
    variable = keras.Variable(np.zeros(4, dtype=np.float32))
    gradient = tf.constant(np.full(4, float(me + 1), dtype=np.float32))
    optimizer = DistributedOptimizer(keras.optimizers.SGD(learning_rate=0.5), process_set=ps)
    optimizer.apply([gradient], [variable])
    mean = np.mean([r + 1.0 for r in members]) if ps.included() else me + 1.0
    np.testing.assert_array_equal(variable.numpy(), np.full(4, -0.5 * mean, dtype=np.float32))
    x = tf.Variable(np.ones(3))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(x * float(me + 1))
    got = hvd.DistributedGradientTape(tape, process_set=ps).gradient(loss, x).numpy()
    np.testing.assert_array_equal(got, np.full(3, mean))
    expected = -0.5 * mean
    hvd.barrier()
    hvd.remove_process_set(ps)
    return {"value": float(variable.numpy()[0])}


@check
def adasum():
    """allreduce(op=Adasum) against the numpy tree on a two-rank set (and on every rank when
    their number is a power of two), eagerly and in a tf.function; its gradient is refused;
    DistributedGradientTape(op=Adasum) combines the gradients with Adasum."""
    me, size = hvd.rank(), hvd.size()
    pair = hvd.add_process_set([0, 1])
    sets = [pair] + ([hvd.global_process_set] if size & (size - 1) == 0 else [])
    rng = [np.random.default_rng([7, r]) for r in range(size)]
    inputs = [g.uniform(-1.0, 1.0, 33) for g in rng]
    for ps in sets:
        members = ps.ranks if ps.ranks is not None else list(range(size))
        if me not in members:
            continue
        expected = adasum_tree([inputs[r] for r in members])
        for mode in MODES:
            for dtype, tol in ((tf.float64, 1e-12), (tf.float32, 1e-5)):
                got = in_mode(mode, lambda x: hvd.allreduce(x, op=hvd.Adasum, process_set=ps))(
                    tf.constant(inputs[me], dtype=dtype))
                np.testing.assert_allclose(got.numpy().astype(np.float64), expected, rtol=tol,
                                           atol=tol)
        x = tf.Variable(inputs[me])
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(x * x)
        tape = hvd.DistributedGradientTape(tape, op=hvd.Adasum, process_set=ps)
        np.testing.assert_allclose(tape.gradient(loss, x).numpy(),
                                   adasum_tree([2.0 * inputs[r] for r in members]), rtol=1e-12)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(hvd.allreduce(x, op=hvd.Adasum, process_set=ps))
        try:
            tape.gradient(loss, x)
        except RuntimeError as error:
            assert "has no gradient" in str(error), error
        else:
            raise AssertionError("the gradient of allreduce(op=Adasum) was not refused")
    hvd.barrier()
    hvd.remove_process_set(pair)
    return {"sets": len(sets)}


@check
def errors():
    """Misuse of a set raises at the call, on the rank that misuses it."""
    me, size = hvd.rank(), hvd.size()
    ps = hvd.add_process_set([0, 1])
    messages = {}

    def caught(key, fn):
        try:
            fn()
        except Exception as error:  # the type is part of what is checked
            both = isinstance(error, ValueError) and \
                isinstance(error, tf.errors.InvalidArgumentError)
            kind = "ValueError+InvalidArgumentError" if both else type(error).__name__
            messages[key] = f"{kind}: {error}"
    if me not in ps.ranks:
        caught("not_member", lambda: hvd.allreduce(tf.ones(2), process_set=ps))
    caught("root_outside", lambda: hvd.broadcast(tf.ones(2), size - 1, process_set=ps))
    caught("not_a_set", lambda: hvd.allgather(tf.ones(2), process_set=[0, 1]))
    hvd.barrier()
    hvd.remove_process_set(ps)
    caught("removed", lambda: hvd.allreduce(tf.ones(2), process_set=ps))
    return messages


if __name__ == "__main__":
    check.main()
