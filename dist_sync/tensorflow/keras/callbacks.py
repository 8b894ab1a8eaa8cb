"""Keras callbacks of ``horovod.tensorflow.keras``: the initial state broadcast from one rank,
epoch metrics averaged over ranks, learning-rate warmup and schedules."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Union

import keras
import numpy as np

from ... import _builders, _core
from ..._numpy import NUMPY
from ..._reduce_op import Average
from ..._session import synchronize
from ..._validation import check_root
from ..functions import broadcast_variables


class BroadcastGlobalVariablesCallback(keras.callbacks.Callback):
    """At the start of training, sets every rank's model weights and optimizer state to
    ``root_rank``'s, so all ranks start from the same point. ``local_variables``: variables
    each rank keeps as they are (not broadcast)."""

    def __init__(self, root_rank: int = 0, device: str = "",
                 local_variables: Optional[Sequence[Any]] = None) -> None:
        super().__init__()
        self.root_rank = check_root(root_rank)
        self.local_variables = list(local_variables or [])
        self.broadcast_done = False

    def _broadcast(self) -> None:
        variables = list(self.model.variables)
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and optimizer.built:
            variables += list(optimizer.variables)
        local = {id(v) for v in self.local_variables}
        variables = [v for v in variables if id(v) not in local]
        broadcast_variables(variables, self.root_rank, name="keras.broadcast_global_variables")
        self.broadcast_done = True

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        if not self.broadcast_done:
            self._broadcast()


class MetricAverageCallback(keras.callbacks.Callback):
    """At the end of every epoch, replaces each metric in ``logs`` by its average over ranks
    (put it before callbacks that read the metrics: checkpoints, early stopping, logging)."""

    def __init__(self, device: str = "") -> None:
        super().__init__()

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if not logs:
            return
        names = sorted(logs)
        values = np.array([float(logs[name]) for name in names], dtype=np.float64)
        averaged = synchronize(_builders.allreduce(
            NUMPY, values, Average, f"keras.metric_average.{epoch}", 1.0, 1.0, in_place=False,
            what="MetricAverageCallback"))
        for name, value in zip(names, averaged):
            logs[name] = float(value)


def _set_lr(model: keras.Model, lr: float) -> None:
    model.optimizer.learning_rate.assign(lr)


class LearningRateScheduleCallback(keras.callbacks.Callback):
    """Sets the learning rate to ``initial_lr * multiplier`` from ``start_epoch`` up to (not
    including) ``end_epoch``; ``multiplier`` is a number or a function of the epoch (a float
    epoch, advancing every batch, unless ``staircase``)."""

    def __init__(self, initial_lr: float, multiplier: Union[float, Callable[[float], float]],
                 start_epoch: int = 0, end_epoch: Optional[int] = None, staircase: bool = True,
                 momentum_correction: bool = True, steps_per_epoch: Optional[int] = None,
                 verbose: int = 0) -> None:
        super().__init__()
        self.initial_lr = float(initial_lr)
        self.multiplier = multiplier if callable(multiplier) else (lambda epoch: multiplier)
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.staircase = staircase
        self.steps_per_epoch = steps_per_epoch
        self.verbose = verbose
        self.current_epoch = 0

    def _active(self, epoch: float) -> bool:
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch < self.end_epoch)

    def _steps(self) -> Optional[int]:
        return self.steps_per_epoch or (self.params or {}).get("steps")

    def _adjust(self, epoch: float) -> None:
        if self._active(epoch):
            _set_lr(self.model, self.initial_lr * self.multiplier(epoch))

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self.current_epoch = epoch
        if self.staircase:
            self._adjust(epoch)

    def on_train_batch_begin(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if not self.staircase and self._steps():
            self._adjust(self.current_epoch + batch / self._steps())


class LearningRateWarmupCallback(LearningRateScheduleCallback):
    """Ramps the learning rate from ``initial_lr / size()`` to ``initial_lr`` over the first
    ``warmup_epochs`` epochs, every batch (Goyal et al., "Accurate, Large Minibatch SGD")."""

    def __init__(self, initial_lr: float, warmup_epochs: int = 5,
                 momentum_correction: bool = True, steps_per_epoch: Optional[int] = None,
                 verbose: int = 0) -> None:
        size = _core.size()

        def multiplier(epoch: float) -> float:
            return 1.0 / size * (epoch * (size - 1) / warmup_epochs + 1)
        super().__init__(initial_lr, multiplier, start_epoch=0, end_epoch=warmup_epochs,
                         staircase=False, momentum_correction=momentum_correction,
                         steps_per_epoch=steps_per_epoch, verbose=verbose)
        self.warmup_epochs = warmup_epochs

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if epoch == self.warmup_epochs - 1:
            _set_lr(self.model, self.initial_lr)
