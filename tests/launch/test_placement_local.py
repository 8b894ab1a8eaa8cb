"""dist_sync.dask's placement of partitions on ranks (pure; no Dask needed): every partition is
read by exactly one rank, stays where it is held unless moving it is needed, and the ranks'
row counts end within one partition of each other."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dist_sync.dask.placement import Partition, place

WORKERS = ["w0", "w1", "w2"]


def test_a_balanced_collection_moves_nothing():
    parts = [Partition(i, 10, (WORKERS[i % 3],)) for i in range(12)]
    placement = place(parts, WORKERS)
    assert placement.moved == ()
    assert placement.partitions == ((0, 3, 6, 9), (1, 4, 7, 10), (2, 5, 8, 11))
    assert placement.rows == (40, 40, 40)


def test_everything_on_one_worker_moves_only_what_balances():
    parts = [Partition(i, 10, ("w0",)) for i in range(6)]
    placement = place(parts, WORKERS)
    assert placement.rows == (20, 20, 20) and len(placement.moved) == 4


def test_a_replica_on_the_light_rank_is_moved_first():
    parts = [Partition(0, 10, ("w0",)), Partition(1, 10, ("w0", "w1")),
             Partition(2, 10, ("w0",))]
    placement = place(parts, ["w0", "w1"])
    # Partition 1 goes to w1, which already holds a copy: no transfer at all.
    assert placement.partitions == ((0, 2), (1,)) and placement.moved == ()


def test_partitions_of_workers_that_take_no_part_go_to_the_lightest_rank():
    parts = [Partition(0, 5, ("elsewhere",)), Partition(1, 7, ("w1",))]
    placement = place(parts, ["w0", "w1"])
    assert placement.partitions == ((0,), (1,)) and placement.moved == (0,)
    assert placement.rank_of(1) == 1


def test_bad_input():
    with pytest.raises(ValueError, match="no workers"):
        place([], [])
    with pytest.raises(ValueError, match="listed twice"):
        place([], ["a", "a"])
    with pytest.raises(ValueError, match="partition 3 is listed twice"):
        place([Partition(3, 1, ("a",)), Partition(3, 1, ("a",))], ["a"])
    with pytest.raises(ValueError, match="has -1 rows"):
        place([Partition(0, -1, ("a",))], ["a"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.sets(st.integers(0, 4), max_size=3)),
                max_size=40),
       st.integers(1, 5))
def test_properties(spec, workers):
    names = [f"w{i}" for i in range(workers)]
    parts = [Partition(i, rows, tuple(f"w{h}" for h in sorted(holders)))
             for i, (rows, holders) in enumerate(spec)]
    placement = place(parts, names)
    assigned = sorted(i for indices in placement.partitions for i in indices)
    assert assigned == list(range(len(parts)))                       # each exactly once
    for rank, indices in enumerate(placement.partitions):
        assert list(indices) == sorted(indices)
        assert placement.rows[rank] == sum(parts[i].rows for i in indices)
    if parts:
        largest = max(p.rows for p in parts)
        assert max(placement.rows) - min(placement.rows) <= largest   # within one partition
    for index in range(len(parts)):
        held_here = names[placement.rank_of(index)] in parts[index].holders
        assert held_here != (index in placement.moved)
