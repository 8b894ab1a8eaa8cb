"""Partitioning a dataset between ranks."""
from __future__ import annotations

import math
from typing import Iterator, List, Optional, Sized

import torch
from torch.utils.data import Sampler

from .. import _core


class DistributedSampler(Sampler[int]):
    """Gives each rank its own shard of a dataset, reshuffled every epoch with a seed shared by
    all ranks; a drop-in for ``torch.utils.data.distributed.DistributedSampler`` that takes the
    rank and size from dist_sync instead of ``torch.distributed``.

    With the defaults it yields exactly the indices torch's sampler yields: a permutation of
    ``range(len(dataset))`` drawn from ``seed + epoch``, padded by repeating its start up to a
    multiple of the number of ranks (so every rank runs the same number of steps and no
    collective waits for a rank that ran out of data), then dealt round-robin. The shards are
    disjoint apart from those fewer-than-size padding samples. ``drop_last=True`` drops the tail
    instead (fully disjoint shards). ``even=False`` neither pads nor drops: shards are disjoint,
    cover every sample exactly once and differ in length by at most one. Use it for evaluation,
    combining per-rank sums with an allreduce after the loop.

    Call :meth:`set_epoch` at the start of every epoch, or every epoch sees the same order.
    """

    def __init__(self, dataset: Sized, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, even: bool = True) -> None:
        num_replicas = _core.size() if num_replicas is None else num_replicas
        rank = _core.rank() if rank is None else rank
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas must be a positive integer, got {num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank!r}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        if drop_last and not even:
            raise ValueError("drop_last=True and even=False contradict each other: even=False "
                             "keeps every sample exactly once")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.even = even
        self.epoch = 0
        total = len(dataset)
        if not even:
            self.num_samples = max(0, math.ceil((total - rank) / num_replicas))
            self.total_size = total
        elif drop_last and total % num_replicas != 0:
            self.num_samples = math.ceil((total - num_replicas) / num_replicas)
            self.total_size = self.num_samples * num_replicas
        else:
            self.num_samples = math.ceil(total / num_replicas)
            self.total_size = self.num_samples * num_replicas

    def _order(self) -> List[int]:
        total = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            return torch.randperm(total, generator=generator).tolist()
        return list(range(total))

    def __iter__(self) -> Iterator[int]:
        indices = self._order()
        if not self.even:
            return iter(indices[self.rank::self.num_replicas])
        if self.drop_last:
            indices = indices[:self.total_size]
        else:
            padding = self.total_size - len(indices)
            if indices and padding > 0:
                indices += (indices * math.ceil(padding / len(indices)))[:padding]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch, which reseeds the shuffle (the same on every rank)."""
        self.epoch = int(epoch)


__all__ = ["DistributedSampler"]
