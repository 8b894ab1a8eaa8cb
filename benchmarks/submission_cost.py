"""Instructions per submitted operation, per thread, counted by callgrind (not timed: the count
does not depend on what else the machine runs):

  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=/tmp/cg.%p \\
      python -m benchmarks.submission_cost --calls N [--torch] [--sync]

Run it for two values of N (say 200 and 400) and divide the difference of each thread's total
(``callgrind_annotate /tmp/cg.<pid>-<thread>``) by the difference of N: start-up and import
cost cancel out, what remains is the cost of one call on the main (Python) thread and on the
engine thread. One rank (no mpirun): the front end and the engine's bookkeeping are the same as
on N ranks; only the exchange differs.

Each call is ``allreduce_async_`` of a 4 KiB float32 tensor (named, in place), then the handles
are synchronized in submission order in batches of ``--batch`` (the many-small-tensors pattern
of a backward pass); ``--sync`` runs the synchronous ``allreduce_`` instead.
"""
from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100, help="handles in flight at once")
    parser.add_argument("--torch", action="store_true", help="torch tensors through dist_sync.torch")
    parser.add_argument("--sync", action="store_true", help="synchronous allreduce_ per call")
    args = parser.parse_args()
    if args.torch:
        import torch
        import dist_sync.torch as ds
        tensors = [torch.ones(1024) for _ in range(args.batch)]
    else:
        import dist_sync as ds
        tensors = [np.ones(1024, dtype=np.float32) for _ in range(args.batch)]
    ds.init()
    names = [f"cost.{i}" for i in range(args.batch)]
    # Warm-up: the first call of each name negotiates it fully and fills the response cache.
    for handle in [ds.allreduce_async_(t, op=ds.Sum, name=n) for t, n in zip(tensors, names)]:
        ds.synchronize(handle)
    done = 0
    while done < args.calls:
        count = min(args.batch, args.calls - done)
        if args.sync:
            for i in range(count):
                ds.allreduce_(tensors[i], op=ds.Sum, name=names[i])
        else:
            handles = [ds.allreduce_async_(tensors[i], op=ds.Sum, name=names[i])
                       for i in range(count)]
            for handle in handles:
                ds.synchronize(handle)
        done += count
    ds.shutdown()


if __name__ == "__main__":
    main()
