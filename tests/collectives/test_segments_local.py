"""How ring chunks are cut into segments (Note [Segments follow tensors]) and where memory lies
on huge pages (Note [Small pages and single-copy transfers]), checked without MPI."""
from __future__ import annotations

import mmap
from typing import List, Tuple

import numpy as np
import pytest

from tests.support import hooks


def starts(span_bytes: List[int]) -> List[int]:
    return list(np.cumsum([0] + span_bytes))


def check_plan(span_bytes: List[int], offset: int, length: int, segment: int,
               element: int) -> List[Tuple[int, int]]:
    plan = hooks.plan_segments(span_bytes, offset, length, segment, element)
    # Covers the range exactly, in order, with whole elements, no segment over the limit.
    assert [o for o, _ in plan] == list(np.cumsum([offset] + [b for _, b in plan[:-1]])) if plan else True
    assert sum(b for _, b in plan) == length
    assert all(0 < b <= segment and b % element == 0 for _, b in plan)
    # A piece at least one segment long has segments of its own, shared with no other tensor.
    direct = segment
    bounds = starts(span_bytes)
    for i in range(len(span_bytes)):
        lo, hi = max(bounds[i], offset), min(bounds[i + 1], offset + length)
        if hi - lo < direct:
            continue
        inside = [(o, b) for o, b in plan if o < hi and o + b > lo]
        assert all(lo <= o and o + b <= hi for o, b in inside), (i, inside)
        # Evenly sized: the fewest segments, within one element of each other.
        sizes = [b for _, b in inside]
        assert len(sizes) == -(-(hi - lo) // segment) and max(sizes) - min(sizes) <= element
    return plan


def test_resnet_like_layout_keeps_large_tensors_whole():
    # conv weight, two batch-norm vectors, conv weight, ... as in a real model.
    spans = [4 * n for n in (9408, 64, 64, 36864, 64, 64, 147456, 256, 256, 2359296, 2048, 2048)]
    plan = check_plan(spans, 0, sum(spans), 1 << 20, 4)
    # Everything before the one tensor longer than a segment travels packed in one segment;
    # that tensor gets nine equal segments of its own; the two vectors after it one more.
    head = sum(spans[:9])
    assert plan[0] == (0, head)
    assert plan[1:10] == [(head + i * 4 * 262144, 4 * 262144) for i in range(9)]
    assert plan[10:] == [(head + spans[9], 4 * 4096)]


@pytest.mark.parametrize("segment", [4, 12, 64, 1000, 1 << 20])
def test_random_layouts(segment):
    rng = np.random.default_rng(segment)
    # Segments of a few bytes make plans of hundreds of thousands of pieces: fewer layouts.
    for _ in range(200 if segment >= 64 else 25):
        spans = [4 * int(x) for x in rng.choice([1, 3, 50, 4000, 20000, 300000], size=rng.integers(1, 12))]
        total = sum(spans)
        offset = 4 * int(rng.integers(0, total // 4 + 1))
        check_plan(spans, offset, total - offset, segment, 4)


def test_plan_ignores_chunk_cut_pieces_below_the_threshold():
    # A chunk boundary leaves 8 bytes of a large tensor in this chunk: packed with its neighbour.
    spans = [2_000_000, 100]
    assert hooks.plan_segments(spans, 1_999_992, 108, 1 << 20, 4) == [(1_999_992, 108)]


def test_huge_page_detection():
    small = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    small.madvise(mmap.MADV_NOHUGEPAGE)
    small.write(b"\1" * len(small))
    address = np.frombuffer(small, dtype=np.uint8).ctypes.data
    assert not hooks.on_huge_pages(address, 8 << 20)
    huge = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    huge.madvise(mmap.MADV_HUGEPAGE)
    huge.write(b"\1" * len(huge))
    address = np.frombuffer(huge, dtype=np.uint8).ctypes.data
    first = (address + (2 << 20) - 1) // (2 << 20) * (2 << 20)
    if not hooks.on_huge_pages(first, 2 << 20):
        pytest.skip("no transparent huge pages here, or a kernel without PAGEMAP_SCAN (< 6.7)")
    assert not hooks.on_huge_pages(first - 4096, 2 << 20)  # may start on a small page before
