"""Synthetic training benchmark: Horovod's pytorch_synthetic_benchmark.py flags and output, on
CPU, with a ResNet defined here (torchvision is not needed).

    mpirun -np 2 python examples/synthetic_benchmark.py --model resnet18 --image-size 112
    mpirun -np 2 python examples/synthetic_benchmark.py --compare ...

``--compare`` runs, in the same launch and on the same model and batch, (1) one process alone
(rank 0, the others wait), then alternating rounds of (2) dist_sync's DistributedOptimizer and
(3) torch.nn.parallel.DistributedDataParallel over gloo, and reports img/sec per rank for both,
the single-process rate and the scaling efficiency (per-rank rate / single-process rate).
Alternating the rounds spreads any background load over both.

Huge pages: the script sets THP_MEM_ALLOC_ENABLE=1 before importing torch, so PyTorch puts CPU
tensors of 2 MiB and more (gradients, the fusion of large layers) on transparent huge pages,
which Open MPI's single-copy transport moves about twice as fast. ``--no-huge-pages`` leaves
the default allocator, to measure the difference.
"""
import argparse
import os
import socket
import sys
import timeit
from typing import Callable, List

if "--no-huge-pages" not in sys.argv:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import dist_sync.torch as hvd  # noqa: E402


# --- a ResNet (He et al. 2015), shaped like torchvision's --------------------------------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(inplanes: int, planes: int, stride: int) -> nn.Module:
    if stride == 1 and inplanes == planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))


class ResNet(nn.Module):
    def __init__(self, block: type, layers: List[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages = []
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if index == 0 else 2
            stage = []
            for b in range(blocks):
                stage.append(block(self.inplanes, planes, stride if b == 0 else 1))
                self.inplanes = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


MODELS = {
    "resnet18": lambda: ResNet(BasicBlock, [2, 2, 2, 2]),
    "resnet34": lambda: ResNet(BasicBlock, [3, 4, 6, 3]),
    "resnet50": lambda: ResNet(Bottleneck, [3, 4, 6, 3]),
    "resnet101": lambda: ResNet(Bottleneck, [3, 4, 23, 3]),
}


# --- benchmark -----------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="PyTorch Synthetic Benchmark (dist_sync)",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--fp16-allreduce", action="store_true", default=False,
                        help="use fp16 compression during allreduce")
    parser.add_argument("--model", type=str, default="resnet50", choices=sorted(MODELS),
                        help="model to benchmark")
    parser.add_argument("--batch-size", type=int, default=32, help="input batch size per rank")
    parser.add_argument("--num-warmup-batches", type=int, default=10,
                        help="number of warm-up batches that don't count towards benchmark")
    parser.add_argument("--num-batches-per-iter", type=int, default=10,
                        help="number of batches per benchmark iteration")
    parser.add_argument("--num-iters", type=int, default=10, help="number of benchmark iterations")
    parser.add_argument("--no-cuda", action="store_true", default=False,
                        help="accepted for Horovod compatibility; dist_sync runs on the CPU")
    parser.add_argument("--use-adasum", action="store_true", default=False,
                        help="use adasum algorithm to do reduction")
    parser.add_argument("--gradient-predivide-factor", type=float, default=1.0,
                        help="apply gradient predivide factor in optimizer")
    parser.add_argument("--image-size", type=int, default=224, help="height and width of images")
    parser.add_argument("--num-threads", type=int, default=0,
                        help="torch threads per rank (0: the host's cores / ranks on the host)")
    parser.add_argument("--compare", action="store_true", default=False,
                        help="also run one process alone and DistributedDataParallel (gloo)")
    parser.add_argument("--no-huge-pages", action="store_true", default=False,
                        help="don't set THP_MEM_ALLOC_ENABLE=1 for PyTorch's allocator")
    return parser.parse_args()


def log(text: str) -> None:
    if hvd.rank() == 0:
        print(text, flush=True)


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, data: torch.Tensor,
              target: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data), target)
        loss.backward()
        optimizer.step()
    return step


def rate(step: Callable[[], None], args: argparse.Namespace) -> float:
    """img/sec of one benchmark iteration."""
    seconds = timeit.timeit(step, number=args.num_batches_per_iter)
    return args.batch_size * args.num_batches_per_iter / seconds


def summary(label: str, rates: List[float], device: str) -> float:
    """Prints Horovod's summary lines; returns the mean per-rank rate (averaged over ranks)."""
    per_rank = np.array(hvd.allgather_object(rates))          # ranks x iterations
    mean = float(np.mean(per_rank))
    conf = float(1.96 * np.std(per_rank))
    size = hvd.size()
    log(f"{label}Img/sec per {device}: {mean:.1f} +-{conf:.1f}")
    log(f"{label}Total img/sec on {size} {device}(s): {size * mean:.1f} +-{size * conf:.1f}")
    return mean


def gloo_group() -> None:
    """Starts torch.distributed (gloo) on the ranks dist_sync already knows."""
    import torch.distributed as dist
    if hvd.rank() == 0:
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        address = "127.0.0.1" if hvd.cross_size() == 1 else socket.gethostbyname(
            socket.gethostname())
        endpoint = (address, port)
    else:
        endpoint = None
    address, port = hvd.broadcast_object(endpoint, root_rank=0)
    os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port), RANK=str(hvd.rank()),
                      WORLD_SIZE=str(hvd.size()))
    dist.init_process_group("gloo", rank=hvd.rank(), world_size=hvd.size())


def main() -> int:
    args = parse_args()
    hvd.init()
    threads = args.num_threads or max(1, (os.cpu_count() or 1) // hvd.local_size())
    torch.set_num_threads(threads)
    device = "CPU"
    torch.manual_seed(0)
    base = MODELS[args.model]()
    parameters = sum(p.numel() for p in base.parameters())
    data = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    target = torch.randint(0, 1000, (args.batch_size,))

    log(f"Model: {args.model} ({parameters / 1e6:.1f}M parameters)")
    log(f"Batch size: {args.batch_size}")
    log(f"Image size: {args.image_size}x{args.image_size}, {threads} thread(s) per rank, huge "
        f"pages {'off' if args.no_huge_pages else 'on'}")
    log(f"Number of {device}s: {hvd.size()}")

    single_rate = None
    if args.compare:
        if hvd.rank() == 0:
            alone = MODELS[args.model]()
            alone.load_state_dict(base.state_dict())
            step = make_step(alone, torch.optim.SGD(alone.parameters(), lr=0.01), data, target)
            timeit.timeit(step, number=args.num_warmup_batches)
            rates = [rate(step, args) for _ in range(args.num_iters)]
            single_rate = float(np.mean(rates))
            log(f"Single process: {single_rate:.1f} +-{1.96 * np.std(rates):.1f} img/sec")
            del alone
        single_rate = hvd.broadcast_object(single_rate, root_rank=0)

    model = MODELS[args.model]()
    model.load_state_dict(base.state_dict())
    compression = hvd.Compression.fp16 if args.fp16_allreduce else hvd.Compression.none
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.01),
                                         named_parameters=model.named_parameters(),
                                         compression=compression,
                                         op=hvd.Adasum if args.use_adasum else hvd.Average,
                                         gradient_predivide_factor=args.gradient_predivide_factor)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    ours = make_step(model, optimizer, data, target)

    theirs = None
    if args.compare:
        gloo_group()
        ddp_model = MODELS[args.model]()
        ddp_model.load_state_dict(base.state_dict())
        ddp_model = nn.parallel.DistributedDataParallel(ddp_model)
        theirs = make_step(ddp_model, torch.optim.SGD(ddp_model.parameters(), lr=0.01), data,
                           target)

    log("Running warmup...")
    timeit.timeit(ours, number=args.num_warmup_batches)
    if theirs is not None:
        timeit.timeit(theirs, number=args.num_warmup_batches)
    log("Running benchmark...")
    ours_rates, theirs_rates = [], []
    for iteration in range(args.num_iters):
        ours_rates.append(rate(ours, args))
        line = f"Iter #{iteration}: {ours_rates[-1]:.1f} img/sec per {device}"
        if theirs is not None:
            theirs_rates.append(rate(theirs, args))
            line += f" (DistributedDataParallel: {theirs_rates[-1]:.1f})"
        log(line)

    label = "dist_sync " if args.compare else ""
    ours_mean = summary(label, ours_rates, device)
    if args.compare:
        theirs_mean = summary("DistributedDataParallel (gloo) ", theirs_rates, device)
        log(f"Single-process img/sec: {single_rate:.1f}")
        log(f"Scaling efficiency (per-rank rate / single-process rate): dist_sync "
            f"{100 * ours_mean / single_rate:.1f}%, DistributedDataParallel "
            f"{100 * theirs_mean / single_rate:.1f}%")
        log(f"dist_sync / DistributedDataParallel: {ours_mean / theirs_mean:.3f}")
        import torch.distributed as dist
        dist.destroy_process_group()
    hvd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
