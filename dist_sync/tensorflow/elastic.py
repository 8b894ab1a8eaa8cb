"""Elastic training for TensorFlow (``hvd.elastic``): training that survives lost ranks.

The same run loop as :mod:`dist_sync.torch.elastic` (launch with ``mpirun --with-ft ulfm``, wrap
the training function in :func:`run`, ``commit()`` the state every few batches; when a rank dies
the survivors go back to the last commit and continue with ``hvd.size()`` smaller), with
Horovod's TensorFlow state objects: :class:`TensorFlowState` for a list of variables (a
``DistributedGradientTape`` loop) and :class:`TensorFlowKerasState` for a Keras model and its
optimizer. ``dist_sync.tensorflow.keras.elastic`` adds ``KerasState`` and the ``model.fit``
callbacks. README, "Elastic training".
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from .._elastic import (HorovodInternalError, HostsUpdatedInterrupt, ObjectState, State, run)
from .._session import RanksLostError
from .functions import broadcast_variables

_SYNC_NAME = "elastic.tensorflow_state"


def _values_of(variables: Sequence[Any]) -> List[np.ndarray]:
    return [np.array(variable.numpy(), copy=True) for variable in variables]


def _assign(variables: Sequence[Any], values: Sequence[np.ndarray]) -> None:
    for variable, value in zip(variables, values):
        variable.assign(value)


class TensorFlowState(ObjectState):
    """A list of ``tf.Variable`` (or Keras variables) and any other values, committed, restored
    and synced together.

    ``TensorFlowState(variables=model.trainable_variables + optimizer.variables, epoch=0)``: the
    variables' values are copied at every ``commit()`` and broadcast from rank 0 by ``sync()``;
    the keyword values are attributes (``state.epoch += 1``) kept as deep copies. Eager mode only
    (Horovod's TF1 ``session=`` is not supported).
    """

    _SYNC_NAME = _SYNC_NAME

    def __init__(self, variables: Optional[Sequence[Any]] = None, session: Any = None,
                 **values: Any) -> None:
        if session is not None:
            raise ValueError("dist_sync.tensorflow.elastic.TensorFlowState works in eager mode; "
                             "TensorFlow 1 sessions (session=) are not supported")
        if variables is None:
            raise ValueError("TensorFlowState needs variables= (the tf.Variable objects to keep "
                             "consistent across ranks)")
        self.variables = list(variables)
        self._saved_variables: List[np.ndarray] = []
        super().__init__(**values)

    def save(self) -> None:
        super().save()
        self._saved_variables = _values_of(self.variables)

    def restore(self) -> None:
        _assign(self.variables, self._saved_variables)
        super().restore()

    def sync(self) -> None:
        if self.variables:
            broadcast_variables(self.variables, root_rank=0, name=f"{_SYNC_NAME}.variables")
        self._sync_values()
        self.save()


def _optimizer_variables(optimizer: Any, model: Any) -> List[Any]:
    """The optimizer's variables, built first if it has not taken a step yet: a rank that joins
    after a reset must hold the same slots as the others before rank 0's values arrive."""
    if optimizer is None:
        return []
    if not getattr(optimizer, "built", True):
        optimizer.build(model.trainable_variables)
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)


class TensorFlowKerasState(ObjectState):
    """A Keras model, its optimizer (by default ``model.optimizer``) and any other values,
    committed, restored and synced together.

    The model's weights and the optimizer's variables (iteration count, slots) are copied at
    every ``commit()``, written back by ``restore()`` and broadcast from rank 0 by ``sync()``;
    keyword values (``epoch=0, batch=0``) are attributes kept as deep copies. ``backend`` is
    accepted for Horovod's signature and unused.
    """

    _SYNC_NAME = _SYNC_NAME

    def __init__(self, model: Any, optimizer: Any = None, backend: Any = None,
                 **values: Any) -> None:
        self.model = model
        self.optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
        self._saved_weights: List[np.ndarray] = []
        self._saved_optimizer: List[np.ndarray] = []
        super().__init__(**values)

    def _model_variables(self) -> List[Any]:
        return list(self.model.weights)

    def save(self) -> None:
        super().save()
        self._saved_weights = _values_of(self._model_variables())
        self._saved_optimizer = _values_of(_optimizer_variables(self.optimizer, self.model))

    def restore(self) -> None:
        _assign(self._model_variables(), self._saved_weights)
        variables = _optimizer_variables(self.optimizer, self.model)
        if len(variables) == len(self._saved_optimizer):
            _assign(variables, self._saved_optimizer)
        super().restore()

    def sync(self) -> None:
        variables = self._model_variables() + _optimizer_variables(self.optimizer, self.model)
        if variables:
            broadcast_variables(variables, root_rank=0, name=f"{_SYNC_NAME}.keras")
        self._sync_values()
        self.save()


__all__ = ["run", "State", "ObjectState", "TensorFlowState", "TensorFlowKerasState",
           "RanksLostError", "HorovodInternalError", "HostsUpdatedInterrupt"]
