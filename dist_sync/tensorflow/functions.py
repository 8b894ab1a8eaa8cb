"""Variables and Python objects across ranks: ``broadcast_variables``, ``broadcast_object``,
``allgather_object`` (Horovod's ``horovod.tensorflow.functions``)."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import tensorflow as tf

from .. import _builders, _objects
from .._process_sets import ProcessSet, global_process_set
from .._validation import check_root
from ._adapter import MOVABLE, TENSORFLOW, dtype_code
from . import _kernels
from ._eager import wait
from ._graph import kernel_node, op_name, run
from .mpi_ops import members_of


def _broadcast_all(values: Sequence[Any], root: int, name: Optional[str],
                   process_set: Any) -> List[Any]:
    """Every value's broadcast submitted before any is awaited, so the engine fuses them."""
    handles = [_builders.broadcast(TENSORFLOW, v, root,
                                   f"{name}.{i}" if name is not None else None,
                                   in_place=False, what="broadcast_variables",
                                   process_set=process_set)
               for i, v in enumerate(values)]
    return [wait(h) for h in handles]


def _is_variable(value: Any) -> bool:
    if isinstance(value, tf.Variable):
        return True
    try:
        import keras
    except ImportError:  # pragma: no cover - TensorFlow 2.21 depends on Keras
        return False
    return isinstance(value, keras.Variable)


def broadcast_variables(variables: Sequence[Any], root_rank: int = 0,
                        process_set: ProcessSet = global_process_set, inplace: bool = False,
                        name: Optional[str] = None) -> Any:
    """Assigns ``root_rank``'s values to ``variables`` on every rank of ``process_set`` (all
    broadcasts in flight together). Works eagerly and inside tf.function; returns the grouped
    assign op in graph mode, None eagerly. ``inplace`` exists for Horovod compatibility
    (assignment is always used)."""
    variables = list(variables)
    if not variables:
        return None
    root = check_root(root_rank)
    members = members_of(process_set, "broadcast_variables", root)
    for i, variable in enumerate(variables):
        if not _is_variable(variable):
            raise TypeError(f"broadcast_variables expects tf.Variable or keras.Variable "
                            f"objects, got {type(variable).__name__} at index {i}")
        dtype = tf.as_dtype(variable.dtype).base_dtype  # (TF1 reference variables: uint8_ref)
        if dtype not in MOVABLE:
            dtype_code(dtype,
                       f"broadcast_variables (variable {variable.name})")
    name = op_name("BroadcastVariables", name)
    current = [tf.convert_to_tensor(v) for v in variables]
    if tf.executing_eagerly():
        values = run(lambda *vs: _broadcast_all(vs, root, name, process_set), current,
                     [c.dtype for c in current], [c.shape for c in current])
    else:
        # One asynchronous node per variable: all in flight together, fused by the engine.
        position = members.position(root, "broadcast_variables")
        values = []
        for i, value in enumerate(current):
            out = _kernels.broadcast(value, f"{name}.{i}", position, members.id)
            kernel_node([out])
            out.set_shape(value.shape)
            values.append(out)
    assigns = [variable.assign(value) for variable, value in zip(variables, values)]
    return None if tf.executing_eagerly() else tf.group(*assigns)


def broadcast_global_variables(root_rank: int = 0) -> Any:
    """TensorFlow 1: the op that assigns ``root_rank``'s values to every global variable
    (``tf.compat.v1.global_variables()``) of the graph being built. Eagerly there is no such
    collection: RuntimeError, use :func:`broadcast_variables` with the model's variables."""
    if tf.executing_eagerly():
        raise RuntimeError("broadcast_global_variables() needs TensorFlow 1 graph mode (it reads "
                           "the graph's global-variables collection); eagerly or in Keras, use "
                           "hvd.broadcast_variables(model.variables, root_rank) instead")
    return broadcast_variables(tf.compat.v1.global_variables(), root_rank)


def broadcast_(variables: Sequence[Any], root_rank: int, name: Optional[str] = None,
               process_set: ProcessSet = global_process_set) -> List[Any]:
    """Horovod's in-place broadcast of variables: assigns ``root_rank``'s values and returns
    ``variables`` (in graph mode, their values read after the assignment)."""
    variables = list(variables)
    assigned = broadcast_variables(variables, root_rank, process_set=process_set, name=name)
    if assigned is None:
        return variables
    with tf.control_dependencies([assigned]):
        return [tf.identity(v) for v in variables]


def broadcast_object_fn(root_rank: int = 0, session: Any = None, name: Optional[str] = None,
                        process_set: ProcessSet = global_process_set) -> Any:
    """A function that broadcasts its argument from ``root_rank`` (Horovod's TF1 helper)."""
    root = check_root(root_rank)
    return lambda obj: broadcast_object(obj, root, name=name, process_set=process_set)


def broadcast_object(obj: Any = None, root_rank: int = 0, session: Any = None,
                     name: Optional[str] = None,
                     process_set: ProcessSet = global_process_set) -> Any:
    """``root_rank``'s picklable ``obj`` on every rank of ``process_set`` (eager only;
    ``session`` is ignored)."""
    return _objects.broadcast_object(obj, check_root(root_rank), name, process_set=process_set)


def allgather_object(obj: Any, session: Any = None, name: Optional[str] = None,
                     process_set: ProcessSet = global_process_set) -> List[Any]:
    """Every rank's picklable ``obj`` (of ``process_set``), as a list in rank order (eager
    only)."""
    return _objects.allgather_object(obj, name, process_set=process_set)


__all__ = ["broadcast_variables", "broadcast_global_variables", "broadcast_", "broadcast_object",
           "broadcast_object_fn",
           "allgather_object"]
