"""Making ranks agree at start-up: broadcasting parameters, optimizer state and Python objects
(``horovod.torch.functions``' names).

Differences from Horovod (each fixes a trap):

- ``broadcast_object`` names its collectives deterministically (by call order) when no name is
  given. Horovod names them after ``type(obj).__name__``, so the common pattern of non-root ranks
  passing ``None`` negotiates a different name on the root and waits forever.
- ``broadcast_optimizer_state`` sends the root's ``state_dict()`` as it is (structure, scalar
  state and hyperparameters pickled; tensors broadcast) and loads it on the other ranks. It
  works for every optimizer including LBFGS, and for an optimizer without state. Horovod
  instead runs a step with zero gradients to create missing state, which moves parameters for
  optimizers with weight decay, and it refuses LBFGS. What that step leaves behind visibly is
  kept: an optimizer without state comes out with a zero gradient on every parameter that
  requires one and has none (sparse for SparseAdam), as in Horovod, so code that reads
  ``p.grad`` right after start-up works unchanged.
- ``broadcast_parameters`` also accepts an iterator such as ``model.named_parameters()`` and
  non-contiguous tensors.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch

from .. import _core
from .._objects import allgather_object, broadcast_object
from .._process_sets import ProcessSet, global_process_set, resolve
from .._session import DistSyncError, synchronize
from .._validation import check_root
from ._adapter import TORCH_TO_CODE
from .mpi_ops import broadcast_async, broadcast_async_


def _named_tensors(params: Any) -> List[Tuple[Optional[str], torch.Tensor]]:
    if isinstance(params, dict):
        items: Iterable[Any] = sorted(params.items())
    elif not isinstance(params, (torch.Tensor, str, bytes)) and hasattr(params, "__iter__"):
        # model.parameters() gives bare tensors, named_parameters() (name, tensor) pairs.
        items = [(None, p) if isinstance(p, torch.Tensor) else p for p in params]
    else:
        raise ValueError(f"broadcast_parameters expects a state_dict, a list of tensors or of "
                         f"(name, tensor) pairs, got {type(params).__name__}")
    result = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor)):
            raise ValueError(f"broadcast_parameters expects tensors or (name, tensor) pairs, "
                             f"found {type(item).__name__}")
        result.append(item)
    return result


def broadcast_parameters(params: Any, root_rank: int, prefix: Optional[str] = None,
                         process_set: ProcessSet = global_process_set) -> None:
    """Overwrites ``params`` on every rank with ``root_rank``'s values, in place.

    ``params``: ``model.state_dict()`` (parameters and buffers), ``model.named_parameters()``
    (list or iterator) or a list of tensors. Every rank must pass the same structure. With
    ``process_set``, among its ranks (``root_rank`` is a rank of the global set).
    """
    resolve(process_set, "broadcast_parameters")
    root = check_root(root_rank)
    pending = []
    seen = set()
    for name, tensor in _named_tensors(params):
        # A state_dict lists tied weights under every name; broadcast the memory once.
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() > 0 and key in seen:
            continue
        seen.add(key)
        op_name = None if name is None else f"broadcast_parameters.{prefix or ''}{name}"
        if tensor.is_contiguous():
            pending.append((None, broadcast_async_(tensor, root, name=op_name,
                                                   process_set=process_set)))
        else:
            pending.append((tensor, broadcast_async(tensor, root, name=op_name,
                                                    process_set=process_set)))
    for target, handle in pending:
        result = synchronize(handle)
        if target is not None:
            with torch.no_grad():
                target.copy_(result)


@dataclass(frozen=True)
class _TensorSlot:
    """Stands in for a tensor of the root's optimizer state while the structure travels."""
    index: int
    shape: Tuple[int, ...]
    dtype: torch.dtype


def _strip(value: Any, tensors: List[torch.Tensor]) -> Any:
    """``value`` with every engine-compatible tensor replaced by a _TensorSlot (collected in
    ``tensors``)."""
    if isinstance(value, torch.Tensor):
        if value.dtype in TORCH_TO_CODE and value.layout == torch.strided and \
                value.device.type in ("cpu", "cuda"):
            # Sent from host memory: the other ranks receive into CPU tensors before they know
            # the device, and load_state_dict moves state to each parameter's device.
            tensors.append(value.detach().to("cpu").contiguous())
            return _TensorSlot(len(tensors) - 1, tuple(value.shape), value.dtype)
        return value  # pickled with the structure (complex, sparse, ...)
    if isinstance(value, dict):
        return type(value)((k, _strip(v, tensors)) for k, v in value.items())
    if isinstance(value, list):
        return [_strip(v, tensors) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_strip(v, tensors) for v in value)
    return value


def _fill(value: Any, tensors: List[torch.Tensor]) -> Any:
    if isinstance(value, _TensorSlot):
        return tensors[value.index]
    if isinstance(value, dict):
        return type(value)((k, _fill(v, tensors)) for k, v in value.items())
    if isinstance(value, list):
        return [_fill(v, tensors) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_fill(v, tensors) for v in value)
    return value


def broadcast_optimizer_state(optimizer: torch.optim.Optimizer, root_rank: int,
                              process_set: ProcessSet = global_process_set) -> None:
    """Makes every rank's optimizer state (per-parameter state, scalar or tensor, and the
    param-group hyperparameters such as the learning rate) equal to ``root_rank``'s.

    Works with any ``torch.optim`` optimizer, wrapped by DistributedOptimizer or not, with or
    without state yet. Every rank's optimizer must manage the same parameters. With
    ``process_set``, among its ranks.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"broadcast_optimizer_state expects a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    ps = resolve(process_set, "broadcast_optimizer_state")
    root = check_root(root_rank)
    ps.position(root, "broadcast_optimizer_state")
    is_root = _core.rank() == root
    _check_same_optimizers(optimizer, process_set)
    if not optimizer.state:
        _zero_missing_grads(optimizer)
    tensors: List[torch.Tensor] = []
    skeleton = _strip(optimizer.state_dict(), tensors) if is_root else None
    skeleton = broadcast_object(skeleton, root, process_set=process_set)
    if not is_root:
        slots: List[_TensorSlot] = []
        _collect_slots(skeleton, slots)
        tensors = [torch.empty(s.shape, dtype=s.dtype) for s in sorted(slots, key=lambda s: s.index)]
    handles = [broadcast_async_(t, root, process_set=process_set) for t in tensors]
    for handle in handles:
        synchronize(handle)
    failure = ""
    previous = None
    if not is_root:
        previous = copy.deepcopy(optimizer.state_dict())
        try:
            optimizer.load_state_dict(_fill(skeleton, tensors))
        except Exception as error:  # noqa: BLE001 - reported on every rank below
            failure = f"{type(error).__name__}: {error}"
    ranks = ps.ranks if ps.ranks is not None else range(ps.size)
    failures = [(rank, text) for rank, text in
                zip(ranks, allgather_object(failure, process_set=process_set)) if text]
    if failures:
        if previous is not None:  # all or nothing: no rank keeps a state the others lack
            optimizer.load_state_dict(previous)
        raise DistSyncError("broadcast_optimizer_state: loading root rank "
                            f"{root}'s state failed on " + "; ".join(
                                f"rank {rank} ({text})" for rank, text in failures) +
                            "; every optimizer keeps its previous state")


def _zero_missing_grads(optimizer: torch.optim.Optimizer) -> None:
    """Gives every parameter that requires a gradient and has none a zero one: the gradients
    Horovod's initialisation step leaves behind, without the step itself."""
    sparse = isinstance(optimizer, torch.optim.SparseAdam)
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad and p.grad is None:
                zeros = torch.zeros_like(p, memory_format=torch.preserve_format)
                p.grad = zeros.to_sparse() if sparse else zeros


def _describe(optimizer: torch.optim.Optimizer) -> str:
    """What must agree across ranks for one optimizer's state to load into another's."""
    base = next(c for c in type(optimizer).__mro__ if c.__module__ != "dist_sync.torch.optimizer")
    groups = [len(group["params"]) for group in optimizer.param_groups]
    shapes = [list(p.shape) for group in optimizer.param_groups for p in group["params"]]
    return f"{base.__name__} with parameter groups of {groups} parameters, shapes {shapes}"


def _check_same_optimizers(optimizer: torch.optim.Optimizer, process_set: Any = None) -> None:
    """Every rank fails, naming the difference, unless all ranks have the same kind of
    optimizer over the same parameters (before anything is loaded anywhere)."""
    described = allgather_object(_describe(optimizer), process_set=process_set)
    if len(set(described)) == 1:
        return
    by_kind: Dict[str, List[int]] = {}
    for rank, text in enumerate(described):
        by_kind.setdefault(text, []).append(rank)
    raise DistSyncError("broadcast_optimizer_state: the optimizers differ across ranks: " +
                        "; ".join(f"{text} on {'rank' if len(ranks) == 1 else 'ranks'} "
                                  f"{', '.join(map(str, ranks))}"
                                  for text, ranks in by_kind.items()) +
                        "; no optimizer was changed")


def _collect_slots(value: Any, slots: List[_TensorSlot]) -> None:
    if isinstance(value, _TensorSlot):
        slots.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _collect_slots(v, slots)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect_slots(v, slots)


__all__ = ["broadcast_parameters", "broadcast_optimizer_state", "broadcast_object",
           "allgather_object"]
