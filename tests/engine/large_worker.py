"""Buffers over 2^31 elements and messages over 1 GiB: no int overflow anywhere."""
import numpy as np

import dist_sync as ds
from tests.support.worker import Registry

check = Registry()

PATTERN = 127


def patterned(count, scale, dtype=np.int8):
    """Element i is (i % 127) * scale, wrapped to int8; cheap to build without an int64 arange."""
    period = (np.arange(PATTERN, dtype=np.int64) * scale).astype(dtype)
    return np.resize(period, count)


@check
def buffers_over_two_gigabytes():
    rank, size = ds.rank(), ds.size()
    checks = {}
    count = (1 << 31) + 5  # more elements than int32 can count
    data = patterned(count, rank + 1)
    ds.allreduce_(data, op=ds.Sum, name="huge")
    expected_period = (np.arange(PATTERN, dtype=np.int64) * sum(r + 1 for r in range(size))).astype(np.int8)
    # Compare period by period without materialising a second 2 GiB array.
    view = data[: count - count % PATTERN].reshape(-1, PATTERN)
    checks["allreduce_rows_ok"] = bool((view == expected_period).all())
    tail = data[count - count % PATTERN:]
    checks["allreduce_tail_ok"] = bool(np.array_equal(tail, expected_period[: tail.size]))
    del data, view, tail

    # alltoall with a message of more than 1 GiB to each peer (split into pieces by the comm).
    per_peer = (1 << 30) + 3
    send = np.empty(per_peer * size, dtype=np.uint8)
    for peer in range(size):
        send[peer * per_peer:(peer + 1) * per_peer] = (rank * 16 + peer) % 251
    received, splits = ds.alltoall(send, splits=[per_peer] * size, name="huge.alltoall")
    del send
    checks["alltoall_splits"] = [int(s) for s in splits]
    checks["alltoall_ok"] = all(
        bool((received[p * per_peer:(p + 1) * per_peer] == (p * 16 + rank) % 251).all())
        for p in range(size))
    return checks


if __name__ == "__main__":
    check.main()
