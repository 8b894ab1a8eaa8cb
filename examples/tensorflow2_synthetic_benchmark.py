"""Synthetic Keras 3 training benchmark with Horovod's tensorflow2_synthetic_benchmark.py flags,
on CPU: the same Keras training step (a ``tf.function`` with a gradient tape and
``optimizer.apply_gradients``) through dist_sync's DistributedOptimizer, through TensorFlow's own
MultiWorkerMirroredStrategy (``strategy.run``), or with no communication at all.

    mpirun -np 2 --bind-to none python examples/tensorflow2_synthetic_benchmark.py --mode dist_sync
    mpirun -np 2 --bind-to none python examples/tensorflow2_synthetic_benchmark.py --mode mwms
    mpirun -np 2 --bind-to none python examples/tensorflow2_synthetic_benchmark.py --mode none

``--model mlp`` (default) is a communication-heavy 4 x Dense(2048) + Dense(10) network on
2048-wide inputs (16.8 M parameters, 67 MB of float32 gradients per step); ``--model
resnet50`` is keras.applications' ResNet50. ``--mode mwms`` starts MultiWorkerMirroredStrategy
with one worker per MPI rank on localhost (TF_CONFIG made from the rank; ``--port`` is the first
of size() consecutive ports); ``--mode none`` runs the same step on every rank without any
communication. Every rank uses ``--threads`` intra-op threads (default 1). Prints img/sec per
rank as Horovod's script does, and the median step time.
"""
import argparse
import json
import os
import sys
import timeit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def mpi_rank_size():
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", 0)))
    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("PMI_SIZE", 1)))
    return rank, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["dist_sync", "mwms", "none"], default="dist_sync")
    parser.add_argument("--fp16-allreduce", action="store_true", default=False)
    parser.add_argument("--model", default="mlp", help="mlp or resnet50")
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--num-warmup-batches", type=int, default=3)
    parser.add_argument("--num-batches-per-iter", type=int, default=5)
    parser.add_argument("--num-iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--port", type=int, default=23456)
    args = parser.parse_args()

    rank, size = mpi_rank_size()
    if args.mode == "mwms":
        # TF_CONFIG must be set before TensorFlow starts its runtime.
        workers = [f"localhost:{args.port + r}" for r in range(size)]
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers},
                                              "task": {"type": "worker", "index": rank}})
    # Threads by environment: MultiWorkerMirroredStrategy must be created before anything
    # else configures TensorFlow's runtime.
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(args.threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "2"
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if args.mode == "mwms" else None
    import keras
    import numpy as np

    if args.mode == "dist_sync":
        import dist_sync.tensorflow.keras as hvd
        hvd.init()
        rank, size = hvd.rank(), hvd.size()

    def build():
        if args.model == "mlp":
            layers = [keras.Input((2048,))] + [keras.layers.Dense(2048, activation="relu")
                                               for _ in range(4)] + [keras.layers.Dense(10)]
            return keras.Sequential(layers)
        return keras.applications.ResNet50(weights=None)

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if args.mode == "mwms":
        with strategy.scope():
            model = build()
            optimizer = keras.optimizers.SGD(0.01)
            optimizer.build(model.trainable_variables)
    else:
        model = build()
        optimizer = keras.optimizers.SGD(0.01)
        if args.mode == "dist_sync":
            compression = hvd.Compression.fp16 if args.fp16_allreduce else hvd.Compression.none
            optimizer = hvd.DistributedOptimizer(optimizer, compression=compression)
        optimizer.build(model.trainable_variables)
    shape = (2048,) if args.model == "mlp" else (224, 224, 3)
    rng = np.random.default_rng(rank)
    data = tf.constant(rng.normal(size=(args.batch_size,) + shape).astype(np.float32))
    target = tf.constant(rng.integers(0, 10 if args.model == "mlp" else 1000, args.batch_size))
    if args.mode == "dist_sync":
        hvd.broadcast_variables(model.variables, root_rank=0)

    # The step of a Keras custom training loop; under the strategy each worker runs it on its
    # own batch and the optimizer sums the gradients across workers.
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True)) / size
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    if args.mode == "mwms":
        step = tf.function(lambda x, y: strategy.run(train_step, args=(x, y)))
    else:
        step = tf.function(train_step)

    def benchmark_step():
        step(data, target)

    def log(text):
        if rank == 0:
            print(text, flush=True)

    log(f"Model: {args.model}, mode: {args.mode}, batch size {args.batch_size} per rank, "
        f"{size} ranks, {args.threads} intra-op thread(s) each")
    timeit.timeit(benchmark_step, number=args.num_warmup_batches)
    img_secs, step_times = [], []
    for x in range(args.num_iters):
        seconds = timeit.timeit(benchmark_step, number=args.num_batches_per_iter)
        img_secs.append(args.batch_size * args.num_batches_per_iter / seconds)
        step_times.append(seconds / args.num_batches_per_iter)
        log(f"Iter #{x}: {img_secs[-1]:.1f} img/sec per rank")
    log(f"Img/sec per rank: {np.mean(img_secs):.1f} +-{1.96 * np.std(img_secs):.1f}")
    log(f"Median step: {1000 * np.median(step_times):.1f} ms ({args.mode})")
    if args.mode == "dist_sync":
        hvd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
