"""Timings of CUDA tensors through host staging, under mpirun (ranks may share one GPU):

    mpirun -np 2 --bind-to none python -m benchmarks.cuda

1. A 64 MiB float32 allreduce: staged from the GPU (copy to pinned memory, engine, copy back),
   next to its parts: the same allreduce on host memory (the engine alone) and the two copies
   alone. Each timing is the median of several rounds, from the call until the result is on the
   GPU (the device synchronized), with every rank starting together (barrier).
2. A training step of a CUDA model (torchvision's ResNet-18 at 64x64 if torchvision is there,
   else an MLP of similar size): forward, backward, DistributedOptimizer step, against the same
   step without dist_sync.

Prints lines that start with ``TIMING`` on rank 0. Timings only; tests/gpu/test_cuda_*.py check
correctness. Run from the root of the checkout (tests/gpu/run_on_gpu.sh runs it).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

import dist_sync.torch as hvd
from dist_sync.torch import _staging


def timed(fn: Callable[[], None], rounds: int, warmup: int = 3) -> List[float]:
    """Milliseconds per round of fn (device synchronized at the end of each), after warm-up;
    every rank starts each round together."""
    for _ in range(warmup):
        fn()
        torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        hvd.barrier()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summary(times: List[float]) -> str:
    return (f"median {statistics.median(times):8.2f} ms  min {min(times):8.2f} ms  "
            f"max {max(times):8.2f} ms  ({len(times)} rounds)")


def allreduce_64mib(dev: torch.device, rounds: int) -> Dict[str, List[float]]:
    count = (64 << 20) // 4
    gpu = torch.ones(count, device=dev)
    host = torch.ones(count)
    pinned = torch.ones(count, pin_memory=True)
    results = {}
    results["staged allreduce_ (GPU -> pinned -> engine -> GPU)"] = timed(
        lambda: hvd.allreduce_(gpu, op=hvd.Sum, name="bench.gpu"), rounds)
    results["engine allreduce_ on pageable host memory"] = timed(
        lambda: hvd.allreduce_(host, op=hvd.Sum, name="bench.host"), rounds)
    results["engine allreduce_ on pinned host memory"] = timed(
        lambda: hvd.allreduce_(pinned, op=hvd.Sum, name="bench.pinned"), rounds)

    def copies() -> None:
        pinned.copy_(gpu, non_blocking=True)
        gpu.copy_(pinned, non_blocking=True)
    results["copies alone (GPU -> pinned -> GPU)"] = timed(copies, rounds)
    expected = float(hvd.size()) ** (3 + rounds)  # every round multiplied the ones by size()
    value = gpu[0].item()
    if value != expected:
        raise AssertionError(f"staged allreduce result {value}, expected {expected}")
    return results


def model_and_batch(dev: torch.device, batch: int):
    try:
        import torchvision
        model = torchvision.models.resnet18(num_classes=100)
        x = torch.randn(batch, 3, 64, 64, device=dev)
        name = "resnet18 (11.7M parameters, 64x64 images)"
    except ImportError:
        model = nn.Sequential(nn.Linear(1024, 3072), nn.ReLU(), nn.Linear(3072, 3072), nn.ReLU(),
                              nn.Linear(3072, 100))
        x = torch.randn(batch, 1024, device=dev)
        name = "MLP 1024-3072-3072-100 (12.9M parameters)"
    y = torch.randint(0, 100, (batch,), device=dev)
    return model.to(dev), x, y, name


def training_step(dev: torch.device, rounds: int, batch: int) -> Dict[str, List[float]]:
    results = {}
    for distributed in (False, True):
        model, x, y, name = model_and_batch(dev, batch)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        if distributed:
            optimizer = hvd.DistributedOptimizer(optimizer,
                                                 named_parameters=model.named_parameters())
            hvd.broadcast_parameters(model.state_dict(), root_rank=0)

        def step() -> None:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        label = "DistributedOptimizer" if distributed else "local (no dist_sync)"
        results[f"{name}, batch {batch}: {label}"] = timed(step, rounds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cuda",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.cuda needs a CUDA GPU (torch.cuda.is_available() is False)")
    hvd.init()
    index = hvd.local_rank() % torch.cuda.device_count()
    torch.cuda.set_device(index)
    dev = torch.device("cuda", index)
    results = allreduce_64mib(dev, args.rounds)
    results.update(training_step(dev, args.rounds, args.batch))
    if hvd.rank() == 0:
        print(f"TIMING device: {torch.cuda.get_device_name(dev)}; {hvd.size()} ranks on "
              f"{torch.cuda.device_count()} GPU(s); torch {torch.__version__}")
        for label, times in results.items():
            print(f"TIMING {label:62s} {summary(times)}")
        print(f"TIMING pinned staging pool: {_staging.pool_stats()}")
    # A rank that shuts down while another still collects its last step would fail that step.
    hvd.barrier()
    hvd.shutdown()


if __name__ == "__main__":
    main()
