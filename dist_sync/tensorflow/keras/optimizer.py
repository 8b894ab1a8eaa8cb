"""``DistributedOptimizer`` for Keras 3: the wrapped optimizer's class, with ``apply`` averaging
the gradients over ranks first (Note [Keras optimizer wrapping])."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

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
#
# Note [Saved models keep their DistributedOptimizer]
# Keras's loader only imports classes from Keras's own packages; any other class must be
# registered. Every wrapped class is registered as "dist_sync>SGD" (a built-in Keras optimizer)
# or "dist_sync>module.Class" (any other), and the wrapped classes of Keras's built-in
# optimizers exist from import on, so keras.models.load_model of a model saved with a
# DistributedOptimizer (in a process that imported dist_sync.tensorflow.keras) gives back a
# model whose optimizer still averages gradients: from_config gives it the default options.
# load_model() also wraps the optimizer of a model saved with a plain Keras optimizer
# (Horovod's behaviour) by making the loaded optimizer an instance of the wrapped subclass,
# which keeps its restored state, and sets the caller's compression.


class _DistributedMixin:
    """Methods placed in front of the wrapped optimizer's class."""

    _dist_base: type
    _dist_options: dict
    _dist_passes: int
    _dist_average_aggregated: bool

    @classmethod
    def from_config(cls, config: dict, custom_objects: Optional[dict] = None) -> Any:
        """The wrapped optimizer with its default options (Note [Saved models keep their
        DistributedOptimizer]); DistributedOptimizer() then sets the ones it was given."""
        optimizer = super().from_config(config, custom_objects=custom_objects)
        _configure(optimizer)
        return optimizer

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
    base = getattr(type(optimizer), "_dist_base", type(optimizer))  # wrapping twice: once
    config = optimizer.get_config()
    if name is not None:
        config["name"] = name
    wrapped = _wrapped_class(base).from_config(config)
    _configure(wrapped, compression=compression, sparse_as_dense=sparse_as_dense, op=op,
               gradient_predivide_factor=gradient_predivide_factor,
               groups=groups if groups is not None else (num_groups or None),
               process_set=process_set, passes=backward_passes_per_step,
               average_aggregated=average_aggregated_gradients,
               scale_local_gradients=scale_local_gradients)
    return wrapped


_wrapped_classes: Dict[type, type] = {}


def _wrapped_class(base: type) -> type:
    """The subclass of ``base`` that reduces gradients in apply(), one per base class (so
    isinstance checks and saved models see one class per optimizer type), registered with
    Keras's serialization (Note [Saved models keep their DistributedOptimizer])."""
    cls = _wrapped_classes.get(base)
    if cls is None:
        cls = type(base.__name__, (_DistributedMixin, base),
                   {"_dist_base": base, "__module__": __name__})
        cls = keras.saving.register_keras_serializable(
            package="dist_sync", name=_registered_name(base))(cls)
        _wrapped_classes[base] = cls
    return cls


def _registered_name(base: type) -> str:
    if getattr(keras.optimizers, base.__name__, None) is base:
        return base.__name__
    return f"{base.__module__}.{base.__qualname__}"


def _keras_optimizer_classes() -> List[type]:
    classes = [getattr(keras.optimizers, name) for name in dir(keras.optimizers)]
    return [c for c in classes if isinstance(c, type) and issubclass(c, keras.optimizers.Optimizer)
            and c is not keras.optimizers.Optimizer]


def _configure(wrapped: Any, *, compression: type[Compressor] = Compression.none,
               sparse_as_dense: bool = False, op: Optional[ReduceOp] = None,
               gradient_predivide_factor: float = 1.0, groups: Any = None,
               process_set: ProcessSet = global_process_set, passes: int = 1,
               average_aggregated: bool = False, scale_local_gradients: bool = True) -> None:
    # Plain attributes, out of reach of Keras's attribute tracking (which would wrap the dict).
    object.__setattr__(wrapped, "_dist_options", dict(
        compression=compression, sparse_as_dense=sparse_as_dense, op=op,
        gradient_predivide_factor=gradient_predivide_factor, groups=groups,
        process_set=process_set))
    object.__setattr__(wrapped, "_dist_passes", passes)
    object.__setattr__(wrapped, "_dist_average_aggregated", bool(average_aggregated))
    # id -> variable (kept alive, so ids stay unique) of variables whose gradients stay local.
    object.__setattr__(wrapped, "_dist_local", {})
    object.__setattr__(wrapped, "_dist_scale_local", bool(scale_local_gradients))


def load_model(filepath: Any, custom_optimizers: Optional[Sequence[type]] = None,
               custom_objects: Optional[Dict[str, Any]] = None,
               compression: type[Compressor] = Compression.none, **kwargs: Any) -> keras.Model:
    """Loads a model saved with ``model.save`` (``keras.models.load_model``'s formats) with its
    optimizer wrapped in :func:`DistributedOptimizer` (``compression`` for the wire), whether it
    was saved with a plain Keras optimizer or a distributed one; its state (iterations,
    momentum, ...) is the saved one. ``custom_optimizers``: optimizer classes of your own the
    file may name; ``custom_objects`` and other keyword arguments go to Keras's loader."""
    for cls in custom_optimizers or ():
        if not (isinstance(cls, type) and issubclass(cls, keras.optimizers.Optimizer)):
            raise TypeError(f"custom_optimizers takes keras.optimizers.Optimizer subclasses, "
                            f"got {cls!r}")
        _wrapped_class(cls)  # registered, so a file naming it distributed can be read
    model = keras.models.load_model(filepath, custom_objects=custom_objects, **kwargs)
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        if not isinstance(optimizer, _DistributedMixin):
            # Saved with a plain optimizer: the same object, its state untouched, becomes an
            # instance of the wrapped subclass (which adds methods only, no instance layout).
            optimizer.__class__ = _wrapped_class(type(optimizer))
            _configure(optimizer)
        optimizer._dist_options["compression"] = compression
    return model


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


for _builtin in _keras_optimizer_classes():
    _wrapped_class(_builtin)
