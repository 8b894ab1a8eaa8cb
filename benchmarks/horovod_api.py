"""The same Horovod-API script through dist_sync and through Horovod, for side-by-side numbers:

  mpirun -np 2 --bind-to none python -m benchmarks.horovod_api --api dist_sync.torch --json a.json
  mpirun -np 2 --bind-to none <horovod venv>/bin/python -m benchmarks.horovod_api \\
      --api horovod.torch --json b.json
  python -m benchmarks.horovod_api --table a.json b.json [...]

Only ``hvd.*`` calls of Horovod's torch API and torch itself are used, so the script runs
unchanged on either library (Horovod 0.28.1 is built in its own environment; it is never a
dependency of dist_sync). Cases, each timed as barrier (mpi4py), the case, slowest rank, median
over ``--iters`` repetitions after ``--warmup`` (every case runs once per repetition, in turn):

``small_async``   ResNet-50's 161 parameter shapes at ``--scale`` of their size (default 0.01,
                  ~1 MB in all): ``allreduce_async_`` of each (named, Sum), newest layer first,
                  then ``synchronize`` of every handle;
``small_buffer``  one ``allreduce_`` of a single tensor holding as many values;
``sync_4k``       ``--calls`` synchronous ``allreduce_`` calls of a 4 KiB float32 tensor, time
                  per call;
``mlp_step``      a training step of 4 x Linear(2048, 2048) + Linear(2048, 10), batch 32, SGD,
                  through ``hvd.DistributedOptimizer``;
``mlp_local``     the same step with the plain optimizer (no communication).

Results are checked (exact integer-valued sums); a wrong value fails the run.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Sequence


CASES = ("small_async", "small_buffer", "sync_4k", "mlp_step", "mlp_local")


def resnet50_counts(scale: float) -> List[int]:
    """dist_sync.bench's 161 counts, its file loaded by path: Horovod's environment has no
    dist_sync, and importing the package would load dist_sync's own MPI library next to
    Horovod's."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "dist_sync", "bench", "resnet50.py")
    spec = importlib.util.spec_from_file_location("dist_sync_bench_resnet50", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.scaled_counts(scale)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="dist_sync.torch",
                        help="module with Horovod's torch API (dist_sync.torch or horovod.torch)")
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--calls", type=int, default=200, help="4 KiB calls per repetition")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--table", nargs="+", metavar="FILE",
                        help="print the table of earlier runs' JSON files and exit")
    args = parser.parse_args(argv)
    if args.table:
        return table(args.table)

    import torch
    from mpi4py import MPI
    counts = resnet50_counts(args.scale)
    hvd = importlib.import_module(args.api)
    hvd.init()
    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    rank, size = hvd.rank(), hvd.size()

    small = [torch.empty(n) for n in counts]
    flat = torch.empty(sum(counts))
    four_k = torch.empty(1024)
    wrong = [0]

    def refill_small() -> None:
        for index, tensor in enumerate(small):
            tensor.fill_(float(rank + index % 7))

    def check_small() -> None:
        for index, tensor in enumerate(small):
            expected = float(sum(r + index % 7 for r in range(size)))
            wrong[0] += int((tensor != expected).sum())

    def small_async() -> None:
        handles = [hvd.allreduce_async_(t, name=f"small.{i}", op=hvd.Sum)
                   for i, t in reversed(list(enumerate(small)))]
        for handle in handles:
            hvd.synchronize(handle)

    def small_buffer() -> None:
        hvd.allreduce_(flat, name="flat", op=hvd.Sum)

    def sync_4k() -> None:
        for _ in range(args.calls):
            four_k.fill_(float(rank))
            hvd.allreduce_(four_k, name="four_k", op=hvd.Sum)
        wrong[0] += int((four_k != float(size * (size - 1) // 2)).sum())

    torch.manual_seed(0)

    def mlp() -> Any:
        layers: List[Any] = []
        for _ in range(4):
            layers += [torch.nn.Linear(2048, 2048), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers, torch.nn.Linear(2048, 10))
    model_d, model_l = mlp(), mlp()
    model_l.load_state_dict(model_d.state_dict())
    optimizer_d = hvd.DistributedOptimizer(torch.optim.SGD(model_d.parameters(), lr=0.01),
                                           named_parameters=model_d.named_parameters())
    optimizer_l = torch.optim.SGD(model_l.parameters(), lr=0.01)
    data = torch.randn(32, 2048, generator=torch.Generator().manual_seed(rank + 1))
    target = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(rank + 1))

    def step(model: Any, optimizer: Any) -> Callable[[], None]:
        def run() -> None:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(data), target).backward()
            optimizer.step()
        return run

    cases: Dict[str, Callable[[], None]] = {
        "small_async": small_async, "small_buffer": small_buffer, "sync_4k": sync_4k,
        "mlp_step": step(model_d, optimizer_d), "mlp_local": step(model_l, optimizer_l)}
    times: Dict[str, List[float]] = {case: [] for case in CASES}
    for iteration in range(args.warmup + args.iters):
        for case in CASES:
            if case == "small_async":
                refill_small()
            elif case == "small_buffer":
                flat.fill_(float(rank))
            comm.Barrier()
            start = time.perf_counter()
            cases[case]()
            seconds = time.perf_counter() - start
            slowest = comm.allreduce(seconds, op=MPI.MAX)
            if iteration >= args.warmup:
                times[case].append(slowest / (args.calls if case == "sync_4k" else 1))
            if case == "small_async":
                check_small()
            elif case == "small_buffer":
                wrong[0] += int((flat != float(size * (size - 1) // 2)).sum())
    digest = hashlib.sha256()
    for parameter in model_d.parameters():
        digest.update(parameter.detach().numpy().tobytes())
    digests = comm.allgather(digest.hexdigest())
    wrong_total = comm.allreduce(wrong[0]) + sum(d != digests[0] for d in digests)
    medians = {case: statistics.median(values) for case, values in times.items()}
    if rank == 0:
        result = {"api": args.api, "ranks": size, "scale": args.scale, "calls": args.calls,
                  "iters": args.iters, "load_average": os.getloadavg(),
                  "median_s": medians, "times_s": times, "wrong": wrong_total}
        for case in CASES:
            unit = "us per call" if case == "sync_4k" else "ms"
            factor = 1e6 if case == "sync_4k" else 1e3
            print(f"{args.api:16s} {case:13s} {medians[case] * factor:10.2f} {unit}")
        print(f"{args.api:16s} wrong values: {wrong_total}", flush=True)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(result, handle, indent=1)
    hvd.shutdown()
    return 1 if wrong_total else 0


def table(paths: Sequence[str]) -> int:
    """Markdown rows: one per JSON file, in the order given."""
    print("| run | api | 161 small async (ms) | one buffer (ms) | async / buffer | sync 4 KiB (µs) "
          "| MLP step (ms) | MLP no comm (ms) | step / no comm |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        with open(path) as handle:
            r = json.load(handle)
        m = r["median_s"]
        print(f"| {os.path.basename(path)} | {r['api']} | {m['small_async'] * 1e3:.2f} | "
              f"{m['small_buffer'] * 1e3:.2f} | {m['small_async'] / m['small_buffer']:.1f} | "
              f"{m['sync_4k'] * 1e6:.1f} | {m['mlp_step'] * 1e3:.1f} | "
              f"{m['mlp_local'] * 1e3:.1f} | {m['mlp_step'] / m['mlp_local']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
