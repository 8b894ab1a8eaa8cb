"""Sharing picklable Python objects between ranks, for every front end.

Objects are serialized with cloudpickle (lambdas, local classes; Horovod uses it too) and travel
as uint8 arrays through the engine's broadcast and allgather. A header travels first: the
payload's length and whether serializing succeeded, so an object that cannot be pickled on one
rank fails the call on every rank instead of leaving the others to pair this call's collectives
with the next call's.
"""
from __future__ import annotations

import pickle
from typing import Any, List, Optional

import cloudpickle
import numpy as np

from . import _builders, _core
from ._numpy import NUMPY
from ._process_sets import resolve
from ._session import DistSyncError, synchronize
from ._validation import check_root

_OK, _FAILED = 0, 1


def _serialize(obj: Any) -> np.ndarray:
    return np.frombuffer(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL),
                         dtype=np.uint8).copy()


def _deserialize(payload: np.ndarray) -> Any:
    return pickle.loads(payload.tobytes())


def _encoded(obj: Any) -> "tuple[int, np.ndarray, Optional[BaseException]]":
    """(status, payload, error): the pickled object, or the error's description as payload."""
    try:
        return _OK, _serialize(obj), None
    except Exception as error:  # noqa: BLE001 - reported on every rank, re-raised here
        text = f"{type(error).__name__}: {error}".encode("utf-8", "replace")[:4000]
        return _FAILED, np.frombuffer(text, dtype=np.uint8).copy(), error


def _sub_name(name: Optional[str], part: str) -> Optional[str]:
    return f"{name}.{part}" if name else None


def broadcast_object(obj: Any = None, root_rank: int = 0, name: Optional[str] = None,
                     process_set: Any = None) -> Any:
    """Returns ``root_rank``'s ``obj`` on every rank. Other ranks may pass None (or anything:
    their value is ignored). The root gets its own object back. If the root cannot pickle
    ``obj``, the root raises that error and every other rank a DistSyncError quoting it.
    With ``process_set``, among its ranks (``root_rank`` is a rank of the global set)."""
    resolve(process_set, "broadcast_object")
    root = check_root(root_rank)
    is_root = _core.rank() == root
    header = np.zeros(2, dtype=np.int64)  # status, payload bytes
    payload = np.empty(0, dtype=np.uint8)
    error: Optional[BaseException] = None
    if is_root:
        status, payload, error = _encoded(obj)
        header[:] = (status, payload.size)
    synchronize(_builders.broadcast(NUMPY, header, root, _sub_name(name, "length"),
                                    in_place=True, what="broadcast_object",
                                    process_set=process_set))
    if not is_root:
        payload = np.empty(int(header[1]), dtype=np.uint8)
    synchronize(_builders.broadcast(NUMPY, payload, root, _sub_name(name, "payload"),
                                    in_place=True, what="broadcast_object",
                                    process_set=process_set))
    if header[0] != _OK:
        if error is not None:
            raise error
        raise DistSyncError(f"broadcast_object{f' {name!r}' if name else ''} failed: root rank "
                            f"{root} could not pickle its object "
                            f"({payload.tobytes().decode('utf-8', 'replace')})")
    return obj if is_root else _deserialize(payload)


def allgather_object(obj: Any, name: Optional[str] = None, process_set: Any = None) -> List[Any]:
    """Returns the list of every rank's ``obj`` (of ``process_set``'s ranks), in rank order. If a
    rank cannot pickle its object, that rank raises the error and every other rank a
    DistSyncError naming it."""
    ps = resolve(process_set, "allgather_object")
    status, payload, error = _encoded(obj)
    headers = synchronize(_builders.allgather(
        NUMPY, np.array([[status, payload.size]], dtype=np.int64), _sub_name(name, "lengths"),
        what="allgather_object", process_set=process_set))
    gathered = synchronize(_builders.allgather(NUMPY, payload, _sub_name(name, "payload"),
                                               what="allgather_object", process_set=process_set))
    pieces, offset = [], 0
    for length in headers[:, 1].tolist():
        pieces.append(gathered[offset:offset + length])
        offset += length
    ranks = ps.ranks if ps.ranks is not None else range(len(pieces))
    failed = [ranks[i] for i, code in enumerate(headers[:, 0].tolist()) if code != _OK]
    pieces_of = dict(zip(ranks, pieces))
    if failed:
        if error is not None:
            raise error
        reasons = "; ".join(f"rank {rank}: {pieces_of[rank].tobytes().decode('utf-8', 'replace')}"
                            for rank in failed)
        raise DistSyncError(f"allgather_object{f' {name!r}' if name else ''} failed: "
                            f"{'rank' if len(failed) == 1 else 'ranks'} "
                            f"{', '.join(map(str, failed))} could not pickle "
                            f"{'its object' if len(failed) == 1 else 'their objects'} ({reasons})")
    return [_deserialize(piece) for piece in pieces]
