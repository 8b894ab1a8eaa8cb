"""Training through dist_sync.tensorflow under mpirun: DistributedGradientTape and the Keras 3
DistributedOptimizer (model.fit, backward_passes_per_step) give the weights of single-process
training on the global batch in float64, bit-identical on every rank; the Keras callbacks and
SyncBatchNormalization against numpy."""
import keras
import numpy as np
import tensorflow as tf

import dist_sync.tensorflow.keras as hvd
from tests.support.tf_checks import MODES, digest, in_mode, tf_registry

check = tf_registry()
BATCH, STEPS, FEATURES = 4, 6, 5


def rank_size():
    return hvd.rank(), hvd.size()


def global_data(seed: int, batches: int, size: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batches * size * BATCH, FEATURES))
    y = np.tanh(x @ rng.normal(size=(FEATURES, 1))) + 0.1 * rng.normal(size=(len(x), 1))
    return x, y


def local_rows(n: int, rank: int, size: int, per: int = BATCH) -> np.ndarray:
    """This rank's rows when global batch k holds every rank's k-th local batch in rank
    order."""
    return np.concatenate([np.arange(k * size * per + rank * per, k * size * per + (rank + 1) * per)
                           for k in range(n // (size * per))])


# --- DistributedGradientTape -----------------------------------------------------------------

def _mlp_variables(seed: int):
    rng = np.random.default_rng(seed)
    return [tf.Variable(rng.normal(size=(FEATURES, 8)) * 0.5), tf.Variable(np.zeros(8)),
            tf.Variable(rng.normal(size=(8, 1)) * 0.5)]


def _mlp_loss(variables, x, y):
    w1, b1, w2 = variables
    return tf.reduce_mean(tf.square(tf.tanh(x @ w1 + b1) @ w2 - y))


def _train(variables, x, y, rows_per_step, distributed, mode, **options):
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = _mlp_loss(variables, xb, yb)
        if distributed:
            tape = hvd.DistributedGradientTape(tape, **options)
        grads = tape.gradient(loss, variables)
        for v, g in zip(variables, grads):
            v.assign_sub(0.1 * g)
    step = in_mode(mode, step)
    for k in range(len(x) // rows_per_step):
        rows = slice(k * rows_per_step, (k + 1) * rows_per_step)
        step(tf.constant(x[rows]), tf.constant(y[rows]))
    return [v.numpy() for v in variables]


@check
def gradient_tape_equals_large_batch():
    rank, size = rank_size()
    x, y = global_data(41, STEPS, size)
    mine = local_rows(len(x), rank, size)
    reference = _train(_mlp_variables(100), x, y, BATCH * size, False, "eager")
    results = []
    for mode in MODES:
        for options in ({}, {"groups": 2, "gradient_predivide_factor": 2.0},
                        {"compression": hvd.Compression.fp16}):
            variables = _mlp_variables(100 + rank)  # different on purpose: broadcast fixes it
            hvd.broadcast_variables(variables, root_rank=0)
            got = _train(variables, x[mine], y[mine], BATCH, True, mode, **options)
            tolerance = 1e-3 if "compression" in options else 1e-12
            for g, r in zip(got, reference):
                assert np.allclose(g, r, rtol=tolerance, atol=tolerance), (mode, options)
            results += got
    return {"digest": digest(results)}


@check
def gradient_tape_local_sources():
    """register_local_source: that variable's gradient stays this rank's (divided by size() with
    the default scale_local_gradients, as is without it); the others are averaged."""
    rank, size = rank_size()
    shared, own = tf.Variable(np.ones(3)), tf.Variable(np.ones(2))
    for scale, divisor in ((True, size), (False, 1)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(shared * (rank + 1.0)) + tf.reduce_sum(own * (rank + 1.0))
        tape = hvd.DistributedGradientTape(tape, scale_local_gradients=scale)
        tape.register_local_source(own)
        g_shared, g_own = tape.gradient(loss, [shared, own])
        assert g_shared.numpy().tolist() == [sum(r + 1.0 for r in range(size)) / size] * 3
        assert g_own.numpy().tolist() == [(rank + 1.0) / divisor] * 2, (scale, g_own)
    return {}


@check
def partial_tape_and_optimizer():
    """PartialDistributedGradientTape and the Keras PartialDistributedOptimizer: the local
    layer's gradients stay this rank's (divided by size()), the shared layer's are averaged,
    eagerly and in a tf.function."""
    rank, size = rank_size()
    mean = sum(r + 1.0 for r in range(size)) / size
    shared, own = keras.layers.Dense(2, dtype="float64"), keras.layers.Dense(2, dtype="float64")
    x = tf.constant(np.arange(6.0).reshape(2, 3) + 1.0)
    shared.build((None, 3))
    own.build((None, 3))
    variables = shared.trainable_weights + own.trainable_weights

    def loss_of(tape_type, **kwargs):
        with tf.GradientTape() as tape:
            loss = (rank + 1.0) * (tf.reduce_sum(shared(x)) + tf.reduce_sum(own(x)))
        return (tape_type(tape, **kwargs) if kwargs else tape).gradient(loss, variables)

    raw = [g.numpy() for g in loss_of(tf.GradientTape)]
    for mode in MODES:
        got = in_mode(mode, lambda: loss_of(hvd.PartialDistributedGradientTape,
                                            local_layers=[own]))()
        for g, r in zip(got[:2], raw[:2]):
            np.testing.assert_allclose(g.numpy(), r / (rank + 1.0) * mean, rtol=1e-14)
        for g, r in zip(got[2:], raw[2:]):
            np.testing.assert_allclose(g.numpy(), r / size, rtol=1e-14)
    optimizer = hvd.PartialDistributedOptimizer(keras.optimizers.SGD(learning_rate=1.0),
                                                local_layers=own)
    before = [v.numpy() for v in variables]
    optimizer.apply([tf.ones_like(v) * (rank + 1.0) for v in variables], variables)
    for i, (v, b) in enumerate(zip(variables, before)):
        step = mean if i < 2 else (rank + 1.0) / size
        np.testing.assert_allclose(v.numpy(), b - step, rtol=1e-14)
    return {}


@check
def gradient_tape_sparse_gradients():
    rank, size = rank_size()
    table0 = np.random.default_rng(42).normal(size=(10, 3))
    ids = [np.array([r, (r + 3) % 10, 7]) for r in range(size)]
    # Reference: the gradient of the mean over ranks of each rank's loss.
    table = tf.Variable(table0)
    with tf.GradientTape() as tape:
        loss = tf.add_n([tf.reduce_sum(tf.square(tf.gather(table, i))) for i in ids]) / size
    expected = tf.convert_to_tensor(tape.gradient(loss, table)).numpy()
    for mode in MODES:
        for sparse_as_dense in (False, True):
            def grad():
                with tf.GradientTape() as tape:
                    local = tf.reduce_sum(tf.square(tf.gather(table, ids[rank])))
                tape = hvd.DistributedGradientTape(tape, sparse_as_dense=sparse_as_dense)
                return tf.convert_to_tensor(tape.gradient(local, [table])[0])
            got = in_mode(mode, grad)()
            assert np.allclose(got.numpy(), expected), (mode, sparse_as_dense)
    return {}


# --- Keras -----------------------------------------------------------------------------------

def _keras_model() -> keras.Model:
    return keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(1)])


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epoch_logs, self.rates = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_logs.append(dict(logs or {}))

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate.numpy()))


def _fit_keras(passes: int):
    rank, size = rank_size()
    keras.config.set_floatx("float64")
    try:
        x, y = global_data(43, STEPS, size)
        keras.utils.set_random_seed(200 + rank)  # different per rank: the callback fixes it
        model = _keras_model()
        initial = hvd.broadcast_object(model.get_weights(), root_rank=0)
        model.compile(optimizer=hvd.DistributedOptimizer(
            keras.optimizers.SGD(0.05, momentum=0.9), backward_passes_per_step=passes,
            average_aggregated_gradients=True), loss="mse")
        before, after = _Recorder(), _Recorder()
        mine = local_rows(len(x), rank, size)
        model.fit(x[mine], y[mine], batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
                  callbacks=[before, hvd.BroadcastGlobalVariablesCallback(0),
                             hvd.MetricAverageCallback(), after])
        reference = _keras_model()
        reference.set_weights(initial)
        reference.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
        # With N passes per step, one update averages N local batches of every rank.
        order = local_rows(len(x), 0, 1, BATCH * size * passes)
        reference.fit(x[order], y[order], batch_size=BATCH * size * passes, epochs=2,
                      shuffle=False, verbose=0)
        for got, want in zip(model.get_weights(), reference.get_weights()):
            assert np.allclose(got, want, rtol=1e-10, atol=1e-12), passes
        assert int(model.optimizer.iterations.numpy()) == 2 * STEPS // passes
        local_losses = hvd.allgather_object([logs["loss"] for logs in before.epoch_logs])
        averaged = [logs["loss"] for logs in after.epoch_logs]
        assert np.allclose(averaged, np.mean(local_losses, axis=0), rtol=1e-12), averaged
        return model.get_weights() + [np.array(averaged)]
    finally:
        keras.config.set_floatx("float32")


@check
def keras_fit_equals_large_batch():
    return {"digest": digest(_fit_keras(1))}


@check
def broadcast_callback_keeps_local_variables():
    """BroadcastGlobalVariablesCallback(local_variables=...): those keep each rank's values, the
    rest become the root's (frozen layers, so fitting changes nothing else)."""
    rank, size = rank_size()
    root = size - 1
    init = keras.initializers.Constant(float(rank))
    model = keras.Sequential([keras.Input((3,))] + [
        keras.layers.Dense(3, kernel_initializer=init, bias_initializer=init, trainable=False)
        for _ in range(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    local = list(model.layers[0].variables)
    model.fit(np.ones((2, 3)), np.zeros((2, 3)), epochs=1, verbose=0,
              callbacks=[hvd.BroadcastGlobalVariablesCallback(root, local_variables=local)])
    for layer, expected in zip(model.layers, (rank, root, root)):
        for variable in layer.variables:
            assert np.all(np.asarray(variable) == expected), (layer.name, expected)
    return {}


@check
def keras_fit_backward_passes_per_step():
    return {"digest": digest(_fit_keras(2))}


@check
def keras_saved_model_keeps_distributed_optimizer():
    """A model saved with a DistributedOptimizer, loaded by hvd.load_model and by Keras's own
    load_model, trains on with the saved optimizer state, averaging gradients: bit-identical to
    the model that was never saved, on every rank. A model saved with a plain optimizer gets a
    distributed one from hvd.load_model."""
    import os
    import shutil
    import tempfile
    rank, size = rank_size()
    keras.config.set_floatx("float64")
    directory = hvd.broadcast_object(tempfile.mkdtemp(prefix="dist_sync_keras_") if rank == 0
                                     else None, root_rank=0)
    try:
        x, y = global_data(45, STEPS, size)
        mine = local_rows(len(x), rank, size)
        keras.utils.set_random_seed(7)
        model = _keras_model()
        model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(0.05, momentum=0.9)),
                      loss="mse")
        model.fit(x[mine], y[mine], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        distributed_path = os.path.join(directory, "distributed.keras")
        plain_path = os.path.join(directory, "plain.keras")
        if rank == 0:
            model.save(distributed_path)
            plain = _keras_model()
            plain.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
            plain.save(plain_path)
        hvd.barrier()
        ours = hvd.load_model(distributed_path, compression=hvd.Compression.fp16)
        theirs = keras.models.load_model(distributed_path)
        for loaded in (ours, theirs):
            optimizer = loaded.optimizer
            assert isinstance(optimizer, keras.optimizers.SGD), type(optimizer).__mro__
            assert hasattr(optimizer, "_dist_options"), type(optimizer).__mro__
            assert int(optimizer.iterations.numpy()) == STEPS
            assert np.allclose(float(optimizer.momentum), 0.9)
        assert ours.optimizer._dist_options["compression"] is hvd.Compression.fp16
        assert theirs.optimizer._dist_options["compression"] is hvd.Compression.none
        # Train on, all three the same way: the same weights (fp16 only changes the wire, and
        # these gradients are far from float16's range limits but not exactly representable,
        # so that one is compared loosely).
        results = []
        for trained in (model, theirs, ours):
            trained.fit(x[mine], y[mine], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
            results.append(trained.get_weights())
        for got, want in zip(results[1], results[0]):
            assert np.array_equal(got, want)
        for got, want in zip(results[2], results[0]):
            assert np.allclose(got, want, rtol=1e-2, atol=1e-3)
        adam = hvd.load_model(plain_path).optimizer
        assert isinstance(adam, keras.optimizers.Adam) and hasattr(adam, "_dist_options")
        return {"digest": digest(results[0] + results[1])}
    finally:
        keras.config.set_floatx("float32")
        hvd.barrier()
        if rank == 0:
            shutil.rmtree(directory, ignore_errors=True)


@check
def keras_learning_rate_callbacks():
    rank, size = rank_size()
    x, y = global_data(44, STEPS, size)
    model = _keras_model()
    initial_lr = 0.08
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(initial_lr)),
                  loss="mse")
    recorder = _Recorder()
    warmup = hvd.LearningRateWarmupCallback(initial_lr, warmup_epochs=2)
    schedule = hvd.LearningRateScheduleCallback(initial_lr, multiplier=0.5, start_epoch=2)
    mine = local_rows(len(x), rank, size)
    model.fit(x[mine], y[mine], batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
              callbacks=[hvd.BroadcastGlobalVariablesCallback(0), warmup, schedule, recorder])
    epoch = [e + b / STEPS for e in range(2) for b in range(STEPS)]
    expected = [initial_lr / size * (e * (size - 1) / 2 + 1) for e in epoch] + \
        [initial_lr * 0.5] * STEPS
    assert np.allclose(recorder.rates, expected, rtol=1e-6), (recorder.rates, expected)
    return {"digest": digest(model.get_weights())}


@check
def sync_batch_normalization():
    rank, size = rank_size()
    xs = [np.random.default_rng([45, r]).normal(size=(r + 2, 3)) for r in range(size)]
    stack = np.concatenate(xs)
    mean, var = stack.mean(0), stack.var(0)
    for mode in MODES:
        layer = hvd.SyncBatchNormalization(momentum=0.5, epsilon=1e-3, dtype="float64")
        out = in_mode(mode, lambda t: layer(t, training=True))(tf.constant(xs[rank]))
        assert np.allclose(out.numpy(), (xs[rank] - mean) / np.sqrt(var + 1e-3)), mode
        assert np.allclose(layer.moving_mean.numpy(), 0.5 * mean), mode
        assert np.allclose(layer.moving_variance.numpy(), 0.5 + 0.5 * var), mode
    return {}


if __name__ == "__main__":
    check.main()
