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
of a backward pass); ``--sync`` runs the synchronous ``allreduce_`` instead. ``--layer`` enters
the stack lower down (numpy only), to tell the layers' shares apart: ``session`` calls the
session's submit and synchronize with a ready tensor spec (no builder, no adapter), ``binding``
calls ``_core.submit`` and ``_core.wait`` directly.
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
    parser.add_argument("--layer", choices=("full", "session", "binding"), default="full",
                        help="where the calls enter the stack (default full: the public API)")
    args = parser.parse_args()
    if args.layer != "full" and (args.torch or args.sync):
        parser.error("--layer session/binding measures numpy allreduce_async_ only")
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
        elif args.layer != "full":
            submit_lower(args.layer, tensors[:count], names[:count])
        else:
            handles = [ds.allreduce_async_(tensors[i], op=ds.Sum, name=names[i])
                       for i in range(count)]
            for handle in handles:
                ds.synchronize(handle)
        done += count
    ds.shutdown()


def submit_lower(layer: str, arrays: list, names: list) -> None:
    """The same in-place Sum allreduces, entering below the public API."""
    from dist_sync import _core, _dtypes, _session
    specs = [[(name, array, array, _dtypes.code_of(array.dtype), array.shape)]
             for array, name in zip(arrays, names)]
    if layer == "session":
        handles = [_session.submit(_session.ALLREDUCE, name, spec, array, _keep,
                                   reduce_op=_core.ReduceOp.SUM)
                   for array, name, spec in zip(arrays, names, specs)]
        for handle in handles:
            _session.synchronize(handle)
        return
    ids = [_core.submit(_session.ALLREDUCE, name, spec, _core.ReduceOp.SUM, 1.0, 1.0, 0, [],
                        _session.DEVICE_CPU, True, 0) for name, spec in zip(names, specs)]
    for handle_id in ids:
        _core.wait(handle_id)


def _keep(raw: object) -> None:
    return None


if __name__ == "__main__":
    main()
