"""The compiled TensorFlow ops that run dist_sync's collectives inside graphs
(``tf.function``, TensorFlow 1 sessions): ``libdist_sync_tf_ops.so``, built from
csrc/tensorflow/ with the installed TensorFlow's flags (Note [Asynchronous collective kernels]
there). Loading it hands it the engine's C table (``dist_sync._core._c_api``), so its kernels
submit to the same engine as everything else in the process.

The functions here add one op node each to the graph being built; the public collectives of
mpi_ops.py call them in graph mode (eagerly they call the engine directly, _eager.py).
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import List, Optional, Sequence

import tensorflow as tf

from .. import _core

LIBRARY = Path(__file__).resolve().parent / "libdist_sync_tf_ops.so"
_CAPSULE = b"dist_sync._core._c_api"


def _load() -> object:
    """The op library, connected to this process's engine; ImportError saying how to rebuild
    when it is missing or was built against another TensorFlow or dist_sync."""
    rebuild = ("rebuild dist_sync with TensorFlow installed in the same environment: "
               "`pip install --no-build-isolation --force-reinstall --no-deps .` in the "
               "source tree (or `make install`), so that it compiles its TensorFlow ops against "
               "the TensorFlow you use")
    if not LIBRARY.exists():
        raise ImportError(f"dist_sync.tensorflow needs its compiled TensorFlow ops "
                          f"({LIBRARY.name}), which were not built: dist_sync was built without "
                          f"TensorFlow; {rebuild}")
    try:
        ops = tf.load_op_library(str(LIBRARY))
    except (tf.errors.NotFoundError, OSError) as error:
        raise ImportError(f"dist_sync.tensorflow could not load {LIBRARY.name} (built against "
                          f"another TensorFlow?): {error}; {rebuild}") from None
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    table = get_pointer(_core._c_api, _CAPSULE)
    # The same library TensorFlow loaded (dlopen of one path gives one handle).
    setter = ctypes.CDLL(str(LIBRARY)).dist_sync_tf_set_c_api
    setter.argtypes = [ctypes.c_void_p]
    setter.restype = ctypes.c_int
    if setter(table) != 0:
        raise ImportError(f"{LIBRARY.name} was built against another version of dist_sync's "
                          f"engine; {rebuild}")
    return ops


_OPS = _load()


def _scale(value: object) -> tf.Tensor:
    """A prescale/postscale factor as the float64 scalar the kernels take."""
    return tf.cast(value, tf.float64) if isinstance(value, tf.Tensor) else \
        tf.constant(float(value), dtype=tf.float64)


def allreduce(tensors: Sequence[tf.Tensor], name: str, tensor_names: Sequence[str],
              reduce_op: int, prescale: object, postscale: object,
              process_set: int) -> List[tf.Tensor]:
    """One DistSyncAllreduce node reducing ``tensors`` as one unit (one tensor: an allreduce;
    several: a grouped allreduce the engine negotiates and fuses together)."""
    return list(_OPS.dist_sync_allreduce(
        tensors=list(tensors), prescale=_scale(prescale), postscale=_scale(postscale),
        tensor_name=name, tensor_names=list(tensor_names), reduce_op=int(reduce_op),
        process_set=int(process_set)))


def broadcast(tensor: tf.Tensor, name: str, root_position: int,
              process_set: int) -> tf.Tensor:
    """``root_position``: the root's position in the process set."""
    return _OPS.dist_sync_broadcast(tensor=tensor, tensor_name=name, root=int(root_position),
                                    process_set=int(process_set))


def allgather(tensor: tf.Tensor, name: str, process_set: int) -> List[tf.Tensor]:
    """(gathered, rows from each rank as int32)."""
    gathered, rows = _OPS.dist_sync_allgather(tensor=tensor, tensor_name=name,
                                              process_set=int(process_set))
    return [gathered, rows]


def alltoall(tensor: tf.Tensor, splits: Optional[tf.Tensor], name: str,
             process_set: int) -> List[tf.Tensor]:
    """(received, rows received from each rank as int32); ``splits`` None divides evenly."""
    if splits is None:
        splits = tf.zeros([0], dtype=tf.int64)
    received, rows = _OPS.dist_sync_alltoall(tensor=tensor, splits=tf.cast(splits, tf.int64),
                                             tensor_name=name, process_set=int(process_set))
    return [received, rows]


def reducescatter(tensor: tf.Tensor, name: str, reduce_op: int, prescale: object,
                  postscale: object, process_set: int) -> tf.Tensor:
    return _OPS.dist_sync_reducescatter(tensor=tensor, prescale=_scale(prescale),
                                        postscale=_scale(postscale), tensor_name=name,
                                        reduce_op=int(reduce_op), process_set=int(process_set))
