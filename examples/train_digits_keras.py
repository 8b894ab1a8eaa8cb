"""Data-parallel Keras 3 training of a small CNN on scikit-learn's bundled digits (8x8 images,
no download) with dist_sync's Horovod-style TensorFlow/Keras API.

    mpirun -np 2 python examples/train_digits_keras.py

Each rank fits on its own shard with ``model.fit``; DistributedOptimizer averages the gradients;
BroadcastGlobalVariablesCallback starts every rank from rank 0's weights; MetricAverageCallback
averages the epoch's metrics over ranks; LearningRateWarmupCallback ramps the learning rate up
over the first epochs. Rank 0 alone writes the checkpoint. Exits non-zero unless the final test
accuracy (every test image scored once across the ranks) exceeds --target (default 0.95).
"""
import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import dist_sync.tensorflow.keras as hvd  # noqa: E402


def build_model() -> keras.Model:
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--lr", type=float, default=0.02, help="per rank; scaled by size()")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--checkpoint", default=os.path.join(tempfile.gettempdir(),
                                                             "digits_keras.weights.h5"))
    args = parser.parse_args()

    hvd.init()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    keras.utils.set_random_seed(args.seed + hvd.rank())  # different on purpose: the broadcast fixes it

    digits = load_digits()
    images = (digits.images[..., None] / 16.0).astype(np.float32)
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=0.2, random_state=args.seed, stratify=digits.target)
    shard = slice(hvd.rank(), None, hvd.size())  # every rank its own share of both sets

    model = build_model()
    lr = args.lr * hvd.size()
    optimizer = hvd.DistributedOptimizer(keras.optimizers.SGD(learning_rate=lr, momentum=0.9))
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    callbacks = [
        hvd.BroadcastGlobalVariablesCallback(0),
        hvd.MetricAverageCallback(),
        hvd.LearningRateWarmupCallback(initial_lr=lr, warmup_epochs=2),
    ]
    model.fit(train_x[shard], train_y[shard], batch_size=args.batch_size, epochs=args.epochs,
              callbacks=callbacks, shuffle=True, verbose=0)
    if hvd.rank() == 0:
        model.save_weights(args.checkpoint)

    logits = model.predict(test_x[shard], verbose=0)
    correct, tested = hvd.allreduce(
        tf.constant([float((logits.argmax(1) == test_y[shard]).sum()), float(len(logits))],
                    dtype=tf.float64), op=hvd.Sum, name="test_accuracy").numpy()
    accuracy = correct / tested
    ok = accuracy > args.target
    if hvd.rank() == 0:
        print(f"final test accuracy {accuracy:.4f} ({int(correct)}/{int(tested)}, "
              f"{hvd.size()} ranks; {'above' if ok else 'BELOW'} the {args.target:.2f} target); "
              f"checkpoint {args.checkpoint}", flush=True)
    hvd.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
