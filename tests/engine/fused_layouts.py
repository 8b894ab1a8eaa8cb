"""Fused allreduces whose tensors lie in different kinds of memory on different ranks.

Segments are planned from tensor sizes and sent straight from a tensor only where it lies on
huge pages (Note [Segments follow tensors], Note [Small pages and single-copy transfers]), so
ranks take different paths through the same ring pass: on one rank a tensor is its own array
(large ones on huge pages), on another it is a view at an odd offset into one shared array, on
a third it sits on 4 KiB pages. Every rank must still get the exact sums."""
import mmap

import numpy as np

import dist_sync as ds
from tests.support import hooks
from tests.support.worker import main

# Large (own segments), medium, tiny (packed together) and a large one after tiny ones.
COUNTS = [3_000_001, 17, 5, 262_147, 1, 40_000, 1_500_000, 3, 2_000_003, 16_385, 7]


def small_page_array(count: int) -> np.ndarray:
    region = mmap.mmap(-1, max(1, count * 4), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(region, dtype=np.float32, count=count)


def tensors_for(layout: int) -> list:
    if layout == 0:  # separate arrays: numpy puts the >= 4 MiB ones on huge pages
        return [np.empty(c, dtype=np.float32) for c in COUNTS]
    if layout == 1:  # views into one large array, starting one element in
        backing = np.empty(sum(COUNTS) + 1, dtype=np.float32)
        offsets = np.cumsum([1] + COUNTS)
        return [backing[offsets[i]:offsets[i + 1]] for i in range(len(COUNTS))]
    return [small_page_array(c) for c in COUNTS]  # every byte on 4 KiB pages


def run(args):
    ds.init()
    rank, size = ds.rank(), ds.size()
    checks = {}
    tensors = tensors_for(rank % 3)
    for repetition in range(3):  # the second and later passes come from the response cache
        for i, tensor in enumerate(tensors):
            tensor[:] = (np.arange(tensor.size) % 1000 + i + rank + repetition).astype(np.float32)
        handles = [ds.allreduce_async_(t, op=ds.Sum, name=f"layout.{i}") for i, t in enumerate(tensors)]
        for handle in handles:
            ds.synchronize(handle)
        for i, tensor in enumerate(tensors):
            base = (np.arange(tensor.size) % 1000 + i + repetition).astype(np.float64)
            expected = base * size + size * (size - 1) / 2
            np.testing.assert_array_equal(tensor.astype(np.float64), expected,
                                          err_msg=f"tensor {i}, repetition {repetition}")
    checks["layout"] = rank % 3
    checks["executions"] = hooks.engine_stats()["executions"]
    ds.shutdown()
    return checks


if __name__ == "__main__":
    main(run)
