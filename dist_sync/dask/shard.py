"""What a rank's function receives: its partitions as one pandas or numpy object, a torch
Dataset, or the partitions as they are."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union

import numpy as np

FORMATS = ("pandas", "numpy", "torch", "partitions")
Target = Union[str, Sequence[str], None]


def check_format(kind: str, fmt: Optional[str], target: Target) -> str:
    """The format to use for a collection of ``kind`` (``"frame"``, ``"series"`` or
    ``"array"``): ``fmt``, or the natural one (pandas for frames and series, numpy for arrays)."""
    if fmt is None:
        fmt = "numpy" if kind == "array" else "pandas"
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(map(repr, FORMATS))}, got {fmt!r}")
    if fmt == "pandas" and kind == "array":
        raise ValueError("format='pandas' needs a Dask DataFrame or Series, got a Dask Array "
                         "(use format='numpy')")
    if target is not None and (fmt != "torch" or kind != "frame"):
        raise ValueError("target= names the label columns of a Dask DataFrame for "
                         "format='torch'; it means nothing here")
    return fmt


def make_shard(parts: List[Any], kind: str, fmt: str, target: Target, meta: Any) -> Any:
    """One rank's partitions (in partition order) in format ``fmt``; ``meta`` is an empty
    object of the collection's type, given to a rank that holds no partition."""
    if fmt == "partitions":
        return list(parts)
    if kind == "array":
        array = np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else meta)
        return array if fmt == "numpy" else _dataset([array])
    import pandas as pd
    frame = pd.concat(parts) if len(parts) > 1 else (parts[0] if parts else meta)
    if fmt == "pandas":
        return frame
    if fmt == "numpy":
        return frame.to_numpy()
    if kind == "series" or target is None:
        return _dataset([_numeric(frame, "the collection")])
    targets = [target] if isinstance(target, str) else list(target)
    missing = [t for t in targets if t not in frame.columns]
    if missing:
        raise KeyError(f"target column(s) {missing} not in the DataFrame's columns "
                       f"{list(frame.columns)}")
    features = frame.drop(columns=targets)
    labels = frame[targets[0]] if isinstance(target, str) else frame[targets]
    return _dataset([_numeric(features, "feature columns"), _numeric(labels, "target")])


def _numeric(frame: Any, what: str) -> np.ndarray:
    array = frame.to_numpy()
    if array.dtype.kind not in "biuf":
        raise TypeError(f"format='torch' needs numeric columns; the {what} "
                        f"({', '.join(map(str, getattr(frame, 'columns', [frame.name])))}) "
                        f"give dtype {array.dtype}: convert them first (ddf.astype(...))")
    return array


def _dataset(arrays: List[np.ndarray]) -> Any:
    """A TensorDataset over the arrays (no copy where numpy's memory is C-contiguous and
    writable). A DataLoader fetches whole batches from it at once when given a BatchSampler as
    its sampler and batch_size=None (README, "Data in Dask")."""
    import torch
    from torch.utils.data import TensorDataset
    return TensorDataset(*[torch.from_numpy(np.require(a, requirements=["C", "W"]))
                           for a in arrays])
