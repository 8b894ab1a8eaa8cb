"""Elastic training with Keras ``model.fit`` (``hvd.elastic`` of ``horovod.tensorflow.keras``).

:class:`KerasState` keeps the model, its optimizer and counters; three callbacks keep it up to
date during ``fit``: :class:`CommitStateCallback` commits every few batches and at every
epoch's end, :class:`UpdateBatchStateCallback` counts the batches done in the current epoch and
:class:`UpdateEpochStateCallback` the epochs done. After a lost rank, :func:`run` restores the
last commit and calls the training function again, which resumes with
``model.fit(..., epochs=epochs - state.epoch)``.

Difference from Horovod: Keras 3's ``fit`` runs every epoch for its full ``steps_per_epoch``
(callbacks cannot shorten one), so the epoch that a reset interrupted runs in full again rather
than only its remaining batches; ``state.batch`` says how many were committed, for an input
pipeline that wants to skip them.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import keras

from ..elastic import (HorovodInternalError, HostsUpdatedInterrupt, ObjectState, State,
                       TensorFlowKerasState, run)
from ..._session import RanksLostError


class KerasState(TensorFlowKerasState):
    """``KerasState(model, optimizer=None, **values)``: the model's weights, the optimizer's
    variables (``model.optimizer`` by default) and the keyword values (``epoch=0, batch=0``),
    committed, restored and synced together."""

    def __init__(self, model: Any, optimizer: Any = None, **values: Any) -> None:
        super().__init__(model, optimizer=optimizer, **values)


class CommitStateCallback(keras.callbacks.Callback):
    """Commits ``state`` every ``batches_per_commit`` batches and at the end of every epoch (a
    commit copies the model and optimizer: commit less often for a large model).

    A commit that falls due at a batch's or an epoch's end is made at the next callback hook
    (the next batch's or epoch's beginning, or the end of training), once every callback has
    seen the end: the commit then holds the counts that :class:`UpdateBatchStateCallback` and
    :class:`UpdateEpochStateCallback` set, whatever order the callbacks are listed in.
    """

    def __init__(self, state: State, batches_per_commit: int = 1) -> None:
        super().__init__()
        if isinstance(batches_per_commit, bool) or not isinstance(batches_per_commit, int) \
                or batches_per_commit < 1:
            raise ValueError(f"batches_per_commit must be an int >= 1, got {batches_per_commit!r}")
        self.state = state
        self.batches_per_commit = batches_per_commit
        self.batches_remaining = batches_per_commit
        self.commit_due = False

    def _commit_if_due(self) -> None:
        if self.commit_due:
            self.commit_due = False
            self.state.commit()

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        # Every rank counts from the same point after a reset.
        self.batches_remaining = self.batches_per_commit
        self.commit_due = False

    def on_train_batch_begin(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._commit_if_due()

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self.batches_remaining -= 1
        if self.batches_remaining == 0:
            self.commit_due = True
            self.batches_remaining = self.batches_per_commit

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._commit_if_due()

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self.commit_due = True

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self._commit_if_due()


class UpdateBatchStateCallback(keras.callbacks.Callback):
    """Keeps ``state.batch`` equal to the number of batches finished in the current epoch (0 at
    every epoch's end)."""

    def __init__(self, state: State) -> None:
        super().__init__()
        self.state = state

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self.state.batch = batch + 1

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self.state.batch = 0


class UpdateEpochStateCallback(keras.callbacks.Callback):
    """Keeps ``state.epoch`` equal to the number of epochs finished across resets: ``fit``
    numbers its epochs from 0 at every call, so the count continues from the value ``state``
    held when training (re)started."""

    def __init__(self, state: State) -> None:
        super().__init__()
        self.state = state
        self.initial_epoch = int(state.epoch)

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self.initial_epoch = int(self.state.epoch)

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self.state.epoch = self.initial_epoch + epoch + 1


__all__ = ["run", "State", "ObjectState", "KerasState", "TensorFlowKerasState",
           "CommitStateCallback", "UpdateBatchStateCallback", "UpdateEpochStateCallback",
           "RanksLostError", "HorovodInternalError", "HostsUpdatedInterrupt"]
