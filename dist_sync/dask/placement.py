"""Which rank reads which partitions: each stays on a worker that holds it, and partitions move
only to bring every rank's row count within one partition of every other's.

Note [Balancing partitions]
Partitions are never split: a Dask key moves whole or not at all, and a partition's rows
arrive in one transfer. First every partition goes to a worker that already holds it (of
several holders, the one with the fewest rows so far; a partition no participating worker
holds goes to the rank with the fewest rows). Then, while the rank with the most rows holds a
partition with fewer rows than the gap to the rank with the fewest, the partition that best
halves that gap moves there. Each move lowers the sum of squared row counts, so this ends,
and it ends only when every partition of the heaviest rank is at least as large as the gap:
the ranks' row counts differ by at most one partition. A collection that is already balanced
moves nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple


@dataclass(frozen=True)
class Partition:
    """A partition of a collection: its position, its number of rows, the workers holding it."""

    index: int
    rows: int
    holders: Tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    """The outcome: for each rank (in rank order) its worker and its partitions' indices."""

    workers: Tuple[str, ...]
    partitions: Tuple[Tuple[int, ...], ...]
    rows: Tuple[int, ...]
    moved: Tuple[int, ...]            # indices of partitions read from another worker

    def rank_of(self, index: int) -> int:
        for rank, indices in enumerate(self.partitions):
            if index in indices:
                return rank
        raise KeyError(index)


def place(partitions: Sequence[Partition], workers: Sequence[str]) -> Placement:
    """Assigns every partition to exactly one of ``workers`` (Note [Balancing partitions])."""
    if not workers:
        raise ValueError("no workers to place partitions on")
    if len(set(workers)) != len(workers):
        raise ValueError(f"workers are listed twice: {list(workers)}")
    slot = {worker: rank for rank, worker in enumerate(workers)}
    load = [0] * len(workers)
    owner: Dict[int, int] = {}
    held_by: Dict[int, Tuple[int, ...]] = {}
    for part in sorted(partitions, key=lambda p: p.index):
        if part.rows < 0:
            raise ValueError(f"partition {part.index} has {part.rows} rows")
        if part.index in owner:
            raise ValueError(f"partition {part.index} is listed twice")
        holders = tuple(slot[w] for w in part.holders if w in slot)
        held_by[part.index] = holders
        candidates = holders or tuple(range(len(workers)))
        rank = min(candidates, key=lambda r: (load[r], r))
        owner[part.index] = rank
        load[rank] += part.rows
    rows = {p.index: p.rows for p in partitions}
    while True:
        heavy = max(range(len(load)), key=lambda r: (load[r], -r))
        light = min(range(len(load)), key=lambda r: (load[r], r))
        gap = load[heavy] - load[light]
        movable = [i for i, r in owner.items() if r == heavy and 0 < rows[i] < gap]
        if not movable:
            break
        # Best halves the gap; a copy the light rank already holds costs no transfer.
        index = min(movable, key=lambda i: (abs(gap - 2 * rows[i]), light not in held_by[i], i))
        owner[index] = light
        load[heavy] -= rows[index]
        load[light] += rows[index]
    by_rank: List[List[int]] = [[] for _ in workers]
    for index in sorted(owner):
        by_rank[owner[index]].append(index)
    moved = tuple(sorted(i for i, r in owner.items() if r not in held_by[i]))
    return Placement(tuple(workers), tuple(tuple(p) for p in by_rank), tuple(load), moved)
