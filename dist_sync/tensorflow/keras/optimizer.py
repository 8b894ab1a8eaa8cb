"""``DistributedOptimizer`` for Keras 3: the wrapped optimizer's class, with ``apply`` averaging
the gradients over ranks first (Note [Keras optimizer wrapping])."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import keras
import tensorflow as tf

from ..._process_sets import ProcessSet, global_process_set, included
from ..._reduce_op import ReduceOp
from ..compression import Compression, Compressor
from ..gradients import local_variables_of, reduce_gradients, reduce_shared_gradients
from ..mpi_ops import resolve_op

# Note [Keras optimizer wrapping]
# Keras 3's training step calls optimizer.apply_gradients -> optimizer.apply(grads, variables).
# DistributedOptimizer builds a subclass of the user's optimizer class (so isinstance, the
# hyperparameters, get_config and checkpoints stay the optimizer's own) whose apply() reduces
# the gradients before the original apply() updates the variables. With
# backward_passes_per_step = N > 1, gradients are summed locally into accumulator variables
# (created in build()) and reduced and applied every N-th call only; the optimizer's iteration
# counter then counts applied updates.


class _DistributedMixin:
    """Methods placed in front of the wrapped optimizer's class."""

    _dist_base: type
    _dist_options: dict
    _dist_passes: int
    _dist_average_aggregated: bool

    def build(self, variables: Sequence[Any]) -> None:
        self._dist_base.build(self, variables)
        if self._dist_passes > 1:
            self._dist_accumulators = [
                self.add_variable_from_reference(v, name="dist_sync_accumulator")
                for v in variables]
            self._dist_counter = self.add_variable(shape=(), dtype="int64",
                                                   initializer="zeros",
                                                   name="dist_sync_passes")

    def _dist_reduce(self, grads: List[Any], variables: Sequence[Any]) -> List[Any]:
        if not self._dist_local:
            return reduce_gradients(grads, variables=variables, **self._dist_options)
        return reduce_shared_gradients(grads, list(variables), self._dist_local,
                                       self._dist_scale_local, self._dist_options,
                                       "DistributedOptimizer")

    def register_local_var(self, variable: Any) -> None:
        """Marks ``variable`` as this rank's own: its gradient is not reduced (Horovod's name;
        divided by the number of ranks unless made with ``scale_local_gradients=False``)."""
        self._dist_local[id(variable)] = variable

    def apply(self, grads: Sequence[Any], trainable_variables: Optional[Sequence[Any]] = None
              ) -> Any:
        grads = list(grads)
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        if self._dist_passes == 1:
            return self._dist_base.apply(self, self._dist_reduce(grads, trainable_variables),
                                         trainable_variables)
        if not self.built:
            self.build(trainable_variables)
        index = {self._var_key(v): i for i, v in enumerate(self._trainable_variables)}
        accumulators = [self._dist_accumulators[index[self._var_key(v)]]
                        for v in trainable_variables]
        for accumulator, grad in zip(accumulators, grads):
            if grad is not None:
                accumulator.assign_add(tf.convert_to_tensor(grad))
        self._dist_counter.assign_add(1)

        def update() -> tf.Tensor:
            summed = [tf.convert_to_tensor(a) for a in accumulators]
            if self._dist_average_aggregated:
                summed = [s / tf.cast(self._dist_passes, s.dtype) for s in summed]
            reduced = self._dist_reduce(summed, trainable_variables)
            self._dist_base.apply(self, reduced, trainable_variables)
            for accumulator in accumulators:
                accumulator.assign(tf.zeros_like(accumulator))
            return tf.constant(True)

        due = tf.equal(self._dist_counter % self._dist_passes, 0)
        if tf.executing_eagerly():
            if bool(due):
                update()
            return None
        tf.cond(due, update, lambda: tf.constant(False))
        return None


def DistributedOptimizer(optimizer: keras.optimizers.Optimizer, name: Optional[str] = None,
                         device_dense: str = "", device_sparse: str = "",
                         compression: type[Compressor] = Compression.none,
                         sparse_as_dense: bool = False, gradient_predivide_factor: float = 1.0,
                         op: Optional[ReduceOp] = None, backward_passes_per_step: int = 1,
                         average_aggregated_gradients: bool = False, num_groups: int = 0,
                         groups: Any = None, process_set: ProcessSet = global_process_set,
                         scale_local_gradients: bool = True) -> keras.optimizers.Optimizer:
    """``optimizer`` (a Keras 3 optimizer) as one that averages gradients over all ranks (of
    ``process_set``; a rank outside it applies its own gradients) before each update; use it
    in ``model.compile`` and ``model.fit`` as usual.

    ``compression``: Compression.none/fp16/bf16 for the wire. ``sparse_as_dense``: reduce
    tf.IndexedSlices as dense tensors. ``op``: Average (default), Sum or Adasum (gradients
    combined with Adasum; docs/tensorflow.md).
    ``gradient_predivide_factor``: gradients are divided by it before the sum and the sum by
    size()/factor after. ``backward_passes_per_step`` N: gradients are summed locally over N
    calls and reduced and applied every N-th (divided by N with
    ``average_aggregated_gradients``). ``groups``: an int or lists of variables reduced
    together. Variables passed to ``register_local_var`` keep this rank's gradient (divided by
    the number of ranks with ``scale_local_gradients``). Returns a new optimizer of a subclass
    of ``optimizer``'s class with the same configuration (Note [Keras optimizer wrapping]).
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(f"DistributedOptimizer wraps a keras.optimizers.Optimizer, got "
                        f"{type(optimizer).__name__}")
    if isinstance(backward_passes_per_step, bool) or not isinstance(backward_passes_per_step, int) \
            or backward_passes_per_step < 1:
        raise ValueError(f"backward_passes_per_step must be an int >= 1, got "
                         f"{backward_passes_per_step!r}")
    resolve_op(op, None)
    included(process_set, "DistributedOptimizer")
    base = type(optimizer)
    cls = type(base.__name__, (_DistributedMixin, base), {"_dist_base": base})
    config = optimizer.get_config()
    if name is not None:
        config["name"] = name
    wrapped = cls.from_config(config)
    # Plain attributes, out of reach of Keras's attribute tracking (which would wrap the dict).
    object.__setattr__(wrapped, "_dist_options", dict(
        compression=compression, sparse_as_dense=sparse_as_dense, op=op,
        gradient_predivide_factor=gradient_predivide_factor,
        groups=groups if groups is not None else (num_groups or None), process_set=process_set))
    object.__setattr__(wrapped, "_dist_passes", backward_passes_per_step)
    object.__setattr__(wrapped, "_dist_average_aggregated", bool(average_aggregated_gradients))
    # id -> variable (kept alive, so ids stay unique) of variables whose gradients stay local.
    object.__setattr__(wrapped, "_dist_local", {})
    object.__setattr__(wrapped, "_dist_scale_local", bool(scale_local_gradients))
    return wrapped


def PartialDistributedOptimizer(optimizer: keras.optimizers.Optimizer,
                                name: Optional[str] = None, device_dense: str = "",
                                device_sparse: str = "",
                                compression: type[Compressor] = Compression.none,
                                sparse_as_dense: bool = False,
                                gradient_predivide_factor: float = 1.0,
                                op: Optional[ReduceOp] = None, backward_passes_per_step: int = 1,
                                average_aggregated_gradients: bool = False, groups: Any = None,
                                process_set: ProcessSet = global_process_set,
                                local_layers: Any = None, scale_local_gradients: bool = True
                                ) -> keras.optimizers.Optimizer:
    """A :func:`DistributedOptimizer` whose ``local_layers`` (Keras layers: model-parallel parts
    each rank trains on its own) keep this rank's gradients, divided by the number of ranks
    when ``scale_local_gradients`` (Horovod's rule, so a learning rate scaled by the number of
    ranks suits them too)."""
    wrapped = DistributedOptimizer(
        optimizer, name=name, compression=compression, sparse_as_dense=sparse_as_dense,
        gradient_predivide_factor=gradient_predivide_factor, op=op,
        backward_passes_per_step=backward_passes_per_step,
        average_aggregated_gradients=average_aggregated_gradients, groups=groups,
        process_set=process_set, scale_local_gradients=scale_local_gradients)
    for variable in local_variables_of(local_layers, "PartialDistributedOptimizer"):
        wrapped.register_local_var(variable)
    return wrapped
