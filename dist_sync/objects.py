"""Sharing arbitrary picklable Python objects between ranks."""
from __future__ import annotations

import io
import pickle
from typing import Any, List, Optional

import numpy as np

from . import _core
from .ops import allgather, broadcast_


def _serialize(obj: Any) -> np.ndarray:
    buffer = io.BytesIO()
    pickle.dump(obj, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    return np.frombuffer(buffer.getbuffer(), dtype=np.uint8).copy()


def broadcast_object(obj: Any = None, root_rank: int = 0, name: Optional[str] = None) -> Any:
    """Returns ``root_rank``'s ``obj`` on every rank. Other ranks may pass None (or anything:
    their value is ignored). The object must be picklable."""
    base = name or "broadcast_object"
    is_root = _core.rank() == root_rank
    payload = _serialize(obj) if is_root else np.empty(0, dtype=np.uint8)
    length = np.array([payload.size], dtype=np.int64)
    broadcast_(length, root_rank, name=f"{base}.length" if name else None)
    if not is_root:
        payload = np.empty(int(length[0]), dtype=np.uint8)
    broadcast_(payload, root_rank, name=f"{base}.payload" if name else None)
    if is_root:
        return obj
    return pickle.loads(payload.tobytes())


def allgather_object(obj: Any, name: Optional[str] = None) -> List[Any]:
    """Returns the list of every rank's ``obj``, in rank order. Objects must be picklable."""
    payload = _serialize(obj)
    lengths = allgather(np.array([payload.size], dtype=np.int64),
                        name=f"{name}.lengths" if name else None)
    gathered = allgather(payload, name=f"{name}.payload" if name else None)
    objects, offset = [], 0
    for length in lengths.tolist():
        objects.append(pickle.loads(gathered[offset:offset + length].tobytes()))
        offset += length
    return objects
