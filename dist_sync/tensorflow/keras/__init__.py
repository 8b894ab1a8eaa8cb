"""dist_sync for Keras 3 (TensorFlow backend): a drop-in for ``horovod.tensorflow.keras``.

``DistributedOptimizer`` wraps any ``keras.optimizers.Optimizer`` so that ``model.fit`` averages
gradients over ranks; the callbacks broadcast the initial state, average the epoch's metrics
and warm up or schedule the learning rate. Everything of dist_sync.tensorflow (init, rank,
allreduce, ...) is available here too.
"""
from __future__ import annotations

import importlib

from .. import *  # noqa: F401,F403 - Horovod's keras module re-exports the TF API
from .. import __all__ as _tf_all
from .callbacks import (BroadcastGlobalVariablesCallback, LearningRateScheduleCallback,
                        LearningRateWarmupCallback, MetricAverageCallback)
from .optimizer import DistributedOptimizer, PartialDistributedOptimizer, load_model
from .sync_batch_norm import SyncBatchNormalization

# Keras's own elastic module (KerasState, the fit callbacks), replacing dist_sync.tensorflow's
# that the * import above bound to the same name (`from . import` would keep that one).
elastic = importlib.import_module(".elastic", __name__)

__all__ = list(_tf_all) + [
    "DistributedOptimizer", "PartialDistributedOptimizer", "load_model",
    "BroadcastGlobalVariablesCallback",
    "MetricAverageCallback",
    "LearningRateWarmupCallback", "LearningRateScheduleCallback", "SyncBatchNormalization",
]
