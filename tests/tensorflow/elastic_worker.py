"""Elastic training with dist_sync.tensorflow under `mpirun --with-ft ulfm` (test_elastic_mpi.py):
one job on 4 ranks, two elastic runs, a rank SIGKILLed in each (TensorFlow's start-up is the
cost of a launch). First a DistributedGradientTape loop kept in a TensorFlowState loses world
rank 0 mid run; then the survivors train a Keras model with model.fit, KerasState and the three
elastic callbacks, and lose one more rank mid-epoch. Ranks are named by MPI_COMM_WORLD rank
(stable across resets). The survivors record what the test compares with numpy.
"""
import hashlib
import os
import signal
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests.support.worker import Registry, world_rank  # noqa: E402

check = Registry()
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)


def _die():
    check.record({"killed_at": time.time(), "world_rank": world_rank()})
    os.kill(os.getpid(), signal.SIGKILL)


def _digest(arrays):
    h = hashlib.sha256()
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def tape_run(hvd, args):
    """Least squares y = x @ w_true by SGD on every rank's rows; world rank args["tape_kill"][0]
    dies before step args["tape_kill"][1]. Every step's global batch is the same rows whatever
    the size (each rank takes its share of them), so the result equals single-process full-batch
    gradient descent from the committed point, which the test recomputes in numpy."""
    data = np.random.default_rng(5).standard_normal((24, 3))
    targets = data @ np.array([1.5, -2.0, 0.5])
    w = tf.Variable(np.zeros(3), dtype=tf.float64)
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.1)
    optimizer.build([w])
    state = hvd.elastic.TensorFlowState(variables=[w] + list(optimizer.variables), step=0)
    victim, kill_step = args["tape_kill"]
    steps = int(args["tape_steps"])
    sizes = []

    @tf.function
    def step(x, y, size):
        with tf.GradientTape() as tape:
            # Sum over this rank's rows / global rows: the average over ranks is then the
            # full-batch mean-squared-error gradient whatever the number of ranks. (The size is
            # an argument: hvd.size() in the function would be fixed when it is traced.)
            loss = tf.reduce_sum((tf.linalg.matvec(x, w) - y) ** 2) / 24.0 * size
        tape = hvd.DistributedGradientTape(tape)
        optimizer.apply_gradients(zip(tape.gradient(loss, [w]), [w]))

    @hvd.elastic.run
    def train(state):
        while state.step < steps:
            if (world_rank(), state.step) == (victim, kill_step):
                _die()
            rank, size = hvd.rank(), hvd.size()
            step(tf.constant(data[rank::size]), tf.constant(targets[rank::size]),
                 tf.constant(float(size), tf.float64))
            sizes.append(size)
            state.step += 1
            state.commit()

    train(state)
    return {"w": w.numpy().tolist(), "sizes": sizes, "iterations": int(optimizer.iterations)}


def keras_run(hvd_keras, args, data_path):
    """Digits with a small Keras model: model.fit under hvd.elastic.run with KerasState and
    the three callbacks; world rank args["keras_kill"][0] dies before batch [2] of epoch [1]."""
    import keras

    data = np.load(data_path)
    train_x, train_y = data["train_x"], data["train_y"]
    keras.utils.set_random_seed(100 + world_rank())  # different everywhere: sync() fixes it
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10)])
    base_lr = 0.01
    model.compile(optimizer=hvd_keras.DistributedOptimizer(
                      keras.optimizers.Adam(base_lr * hvd_keras.size())),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    state = hvd_keras.elastic.KerasState(model, batch=0, epoch=0)
    resets = []

    def on_reset():
        model.optimizer.learning_rate.assign(base_lr * hvd_keras.size())
        resets.append({"size": hvd_keras.size(), "rank": hvd_keras.rank()})

    state.register_reset_callbacks([on_reset])
    victim, kill_epoch, kill_batch = args["keras_kill"]
    epochs, batch_size = int(args["keras_epochs"]), 32

    shrunk_sleep = float(args.get("shrunk_sleep", 0.0))
    sizes = []

    class Killer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if (world_rank(), state.epoch, batch) == (victim, kill_epoch, kill_batch):
                _die()
            if hvd_keras.size() < args["np"]:  # slow while shrunk: a replacement joins mid-run
                time.sleep(shrunk_sleep)

        def on_train_batch_end(self, batch, logs=None):
            sizes.append(hvd_keras.size())

    # Horovod's order; the commit holds the counts whatever the order.
    callbacks = [hvd_keras.elastic.CommitStateCallback(state),
                 hvd_keras.elastic.UpdateBatchStateCallback(state),
                 hvd_keras.elastic.UpdateEpochStateCallback(state), Killer()]

    @hvd_keras.elastic.run
    def train(state):
        rank, size = hvd_keras.rank(), hvd_keras.size()
        rows = len(train_y) // size  # the same number of steps on every rank
        model.fit(train_x[rank::size][:rows], train_y[rank::size][:rows], batch_size=batch_size,
                  epochs=epochs - state.epoch, callbacks=callbacks, verbose=0, shuffle=False)

    train(state)
    logits = model.predict(data["test_x"], verbose=0)
    weights = model.get_weights()
    return {"accuracy": float(np.mean(np.argmax(logits, axis=1) == data["test_y"])),
            "digest": _digest(weights), "epoch": state.epoch, "batch": state.batch,
            "resets": resets, "sizes": sizes}


@check.scenario
def keras_grows_back(args):
    """Keras model.fit loses a rank and grows back: the survivors spawn a replacement, which
    runs this scenario from the top (nothing communicates before hvd.elastic.run) and joins."""
    import dist_sync.tensorflow.keras as hvd_keras

    hvd_keras.init()
    result = keras_run(hvd_keras, args, args["data"])
    result["size"], result["rank"] = hvd_keras.size(), hvd_keras.rank()
    check.record(result)
    return result


@check.scenario
def elastic_tensorflow(args):
    import dist_sync.tensorflow as hvd
    import dist_sync.tensorflow.keras as hvd_keras

    hvd.init()

    @tf.function
    def mean_rank():
        return hvd.allreduce(tf.constant(float(world_rank()), tf.float64), op=hvd.Average,
                             name="mean_rank")

    shared, local = tf.Variable(0.0, dtype=tf.float64), tf.Variable(0.0, dtype=tf.float64)

    @tf.function
    def rank_gradients():
        # d/dv of v * world rank: the shared variable's gradient averaged over the ranks, the
        # local one's kept and divided by the number of ranks (scale_local_gradients).
        with tf.GradientTape() as tape:
            loss = (shared + local) * float(world_rank())
        tape = hvd.DistributedGradientTape(tape)
        tape.register_local_source(local)
        return tape.gradient(loss, [shared, local])

    mean_rank()  # both traced and run on every rank before any is lost
    rank_gradients()
    result = {"tape": tape_run(hvd, args)}
    # The graphs traced above run on the shrunk engine, over the survivors only.
    result["mean_rank_after"] = float(mean_rank())
    result["gradients_after"] = [float(g) for g in rank_gradients()]
    result["size_op_after"] = int(tf.function(hvd.size_op)())
    result["keras"] = keras_run(hvd_keras, {**args, "np": 4}, args["data"])
    result["size"] = hvd.size()
    result["world_rank"] = world_rank()
    check.record(result)
    return result


if __name__ == "__main__":
    check.main()
