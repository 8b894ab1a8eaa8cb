"""Elastic training for PyTorch (``hvd.elastic``): training that survives lost ranks.

Horovod's API over dist_sync's engine and MPI's own fault tolerance: launch with ``mpirun
--with-ft ulfm``; wrap the training function in :func:`run`; keep what must survive in a
:class:`TorchState` and ``commit()`` it every few batches. When a rank dies the survivors go back
to the last commit, continue on a communicator of the survivors (``hvd.size()`` smaller, a new
rank 0 if rank 0 was lost) and call the function again. See the README, "Elastic training".

Survivors spawn replacements for lost ranks (``DIST_SYNC_ELASTIC_MAX_NP``, by default the size
the run started with) and merge them in at a later commit: :class:`HostsUpdatedInterrupt`, then
``sync()`` gives the replacements the state.

Differences from Horovod: replacements are started by ``mpirun`` through ``MPI_Comm_spawn``
where it has slots, and a host discovery script (``DIST_SYNC_ELASTIC_HOST_DISCOVERY_SCRIPT``)
only bounds how many, without adding hosts; the exceptions are dist_sync's
(``HorovodInternalError`` is :class:`RanksLostError`, a ``DistSyncError``); process sets other
than the global one end at a reset (add them again in a reset callback).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, Iterator, List, Optional, Sized

import torch
from torch.utils.data import Sampler

from .. import _core
from .._elastic import (HorovodInternalError, HostsUpdatedInterrupt, ObjectState, State, run)
from .._session import RanksLostError
from .functions import broadcast_optimizer_state, broadcast_parameters


class ElasticSampler(Sampler[int]):
    """Deals a dataset's samples to the ranks so that an epoch interrupted by a lost rank
    resumes where the last commit left it, dealt anew over the survivors.

    Each epoch walks one permutation of ``range(len(dataset))`` (drawn from ``seed + epoch``;
    the identity without ``shuffle``). Call :meth:`record_batch` after every batch: the sampler
    counts how far into the permutation all ranks together have got, and that count is what a
    :class:`TorchState` holding the sampler commits, restores and syncs. An iterator made after
    a reset starts at the committed position and deals the rest round-robin over the new
    ``size()``: no committed sample is seen again in that epoch and none is skipped. As with
    :class:`DistributedSampler`, the epoch's last batch is padded with fewer than ``size()``
    samples repeated from the start of the pass, so every rank runs the same number of steps.
    Call :meth:`set_epoch` at the start of every epoch.
    """

    def __init__(self, dataset: Sized, shuffle: bool = True, seed: int = 0) -> None:
        self.dataset_size = len(dataset)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.processed = 0  # samples of this epoch's permutation done by all ranks together
        self.num_replicas = 1
        self.rank = 0
        self.reset()

    def reset(self) -> None:
        """Takes the current rank and size (called after every elastic reset)."""
        self.num_replicas = _core.size()
        self.rank = _core.rank()

    def set_epoch(self, epoch: int) -> None:
        """Starts epoch ``epoch``: a new permutation, nothing processed yet."""
        self.epoch = int(epoch)
        self.processed = 0

    def record_batch(self, batch_idx: int, batch_size: int) -> None:
        """Records that every rank has finished one more batch of ``batch_size`` samples
        (``batch_idx`` is accepted for Horovod's signature; the count is what matters)."""
        self.processed = min(self.dataset_size, self.processed + int(batch_size) * self.num_replicas)

    def _order(self) -> List[int]:
        if not self.shuffle:
            return list(range(self.dataset_size))
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return torch.randperm(self.dataset_size, generator=generator).tolist()

    def remaining(self) -> List[int]:
        """The samples of this epoch not processed yet, in the order they will be dealt."""
        return self._order()[self.processed:]

    def __iter__(self) -> Iterator[int]:
        remaining = self.remaining()
        if remaining:
            padding = (-len(remaining)) % self.num_replicas
            remaining += (remaining * math.ceil(padding / len(remaining)))[:padding]
        return iter(remaining[self.rank::self.num_replicas])

    def __len__(self) -> int:
        return math.ceil((self.dataset_size - self.processed) / self.num_replicas)

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "processed": self.processed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.processed = int(state["processed"])


def _has_state_dict(value: Any) -> bool:
    return callable(getattr(value, "state_dict", None)) and \
        callable(getattr(value, "load_state_dict", None))


class TorchState(ObjectState):
    """A model, its optimizer and any other values, committed, restored and synced together.

    ``TorchState(model=model, optimizer=optimizer, sampler=sampler, epoch=0, batch=0)``: the
    model's ``state_dict()`` (parameters and buffers) and the optimizer's state are copied at
    every ``commit()`` and broadcast from rank 0 by ``sync()``. Other keyword values are
    attributes (``state.epoch = 3``); those with ``state_dict``/``load_state_dict`` (an
    :class:`ElasticSampler`, a learning-rate scheduler) are kept through those, the others as
    deep copies of picklable values.
    """

    _SYNC_NAME = "elastic.torch_state"

    def __init__(self, model: Optional[torch.nn.Module] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None, **other: Any) -> None:
        self.model = model
        self.optimizer = optimizer
        super().__init__(**other)

    def _values(self) -> Dict[str, Any]:
        """The other values as data: state dicts for objects that have them."""
        return {name: value.state_dict() if _has_state_dict(value) else value
                for name, value in super()._values().items()}

    def _assign(self, values: Dict[str, Any]) -> None:
        for name, value in values.items():
            current = getattr(self, name)
            if _has_state_dict(current):
                current.load_state_dict(value)
            else:
                setattr(self, name, value)

    def save(self) -> None:
        super().save()
        if self.model is not None:
            self._saved_model = {key: value.detach().clone()
                                 for key, value in self.model.state_dict().items()}
        if self.optimizer is not None:
            self._saved_optimizer = copy.deepcopy(self.optimizer.state_dict())

    def restore(self) -> None:
        if self.model is not None:
            self.model.load_state_dict(self._saved_model)
        if self.optimizer is not None:
            reset_reductions = getattr(self.optimizer, "_ds_reset", None)
            if reset_reductions is not None:
                reset_reductions()
            self.optimizer.load_state_dict(copy.deepcopy(self._saved_optimizer))
        super().restore()

    def sync(self) -> None:
        if self.model is not None:
            broadcast_parameters(self.model.state_dict(), root_rank=0)
        if self.optimizer is not None:
            broadcast_optimizer_state(self.optimizer, root_rank=0)
        self._sync_values()
        for name in self._names:
            value = getattr(self, name)
            if isinstance(value, ElasticSampler):
                value.reset()
        self.save()


__all__ = ["run", "State", "ObjectState", "TorchState", "ElasticSampler", "RanksLostError",
           "HorovodInternalError", "HostsUpdatedInterrupt"]
