"""Argument checks every front end shares: roots, splits, scale factors. Each raises the
documented exception type with a message naming the argument and what was expected."""
from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np

from . import _core


class SplitsDtypeError(TypeError, ValueError):
    """alltoall ``splits`` of a non-integer dtype. A TypeError (a wrong dtype), and a ValueError
    too because Horovod raises ValueError for it and Horovod scripts catch that."""


def scale_args(prescale_factor: Any, postscale_factor: Any) -> Tuple[float, float]:
    """The two scale factors as floats; TypeError for anything but a real number."""
    if type(prescale_factor) is float and type(postscale_factor) is float:
        return prescale_factor, postscale_factor
    for label, value in (("prescale_factor", prescale_factor),
                         ("postscale_factor", postscale_factor)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"{label} must be a number, got {type(value).__name__}")
    return float(prescale_factor), float(postscale_factor)


def check_root(root_rank: Any) -> int:
    """``root_rank`` as an int naming an existing rank."""
    if isinstance(root_rank, bool) or not isinstance(root_rank, (int, np.integer)):
        raise TypeError(f"root_rank must be an int, got {type(root_rank).__name__}")
    size = _core.size()
    if not 0 <= int(root_rank) < size:
        raise ValueError(f"root_rank {int(root_rank)} does not exist: ranks are 0..{size - 1}")
    return int(root_rank)


def check_splits(splits: Any, rows: int, size: int) -> List[int]:
    """alltoall's rows per destination rank: ``splits`` checked against the first dimension, or
    an even division of it when ``splits`` is None."""
    if splits is None:
        if rows % size != 0:
            raise ValueError(f"alltoall without splits needs the first dimension ({rows}) to be "
                             f"divisible by the number of ranks ({size}); pass splits=")
        return [rows // size] * size
    if isinstance(splits, np.ndarray):
        splits = splits.tolist()
    try:
        items = list(splits)
    except TypeError:
        raise TypeError(f"splits must be a sequence of ints, got {splits!r}") from None
    # int() would truncate 1.5 to 1 and could make wrong splits add up: only integers pass.
    if isinstance(splits, (str, bytes)) or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in items):
        raise TypeError(f"splits must be a sequence of ints, got {splits!r}")
    values = [int(s) for s in items]
    if len(values) != size:
        raise ValueError(f"splits has {len(values)} entries but there are {size} ranks")
    if any(v < 0 for v in values):
        raise ValueError(f"splits must be non-negative, got {values}")
    if sum(values) != rows:
        raise ValueError(f"splits {values} sum to {sum(values)} but the first dimension is {rows}")
    return values
