"""dist_sync.torch on CUDA tensors under mpirun (ranks may share one GPU): every op against numpy
references for float16/bfloat16/float32 (and int32), stream ordering with a producer still
running, the device kind negotiated across ranks, and DistributedOptimizer on a CUDA model
against single-process float64 training on the concatenated batch. Run by tests/gpu/."""
import torch
import torch.nn as nn
import torch.nn.functional as F

import dist_sync
import dist_sync.torch as hvd
from dist_sync.torch import _staging
from tests.support.reference import compare, make_input
from tests.support.torch_checks import (allreduce_sweep, close, digest, raises, to_storage,
                                        to_torch, torch_registry)

# Exact float32 arithmetic on the GPU (no TF32), so float64 references apply.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

check = torch_registry()
SWEEP_DTYPES = ["float16", "bfloat16", "float32", "int32"]
SWEEP_OPS = ["sum", "average", "min", "max", "product"]


def device() -> torch.device:
    """One GPU per rank where there are enough, else ranks share them (local rank modulo)."""
    index = hvd.local_rank() % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def rank_size():
    return hvd.rank(), hvd.size()


def on_host(tensor: torch.Tensor, dtype: str):
    assert tensor.is_cuda, f"result on {tensor.device}, expected the input's CUDA device"
    return to_storage(tensor.cpu(), dtype)


# --- correctness sweep -----------------------------------------------------------------------

@check
def allreduce_sweep_cuda():
    size = hvd.size()
    dev = device()
    return allreduce_sweep(SWEEP_DTYPES, SWEEP_OPS, (0, 1, size + 1, 1001, 1 << 20), seed=21,
                           place=lambda t: t.to(dev), storage=on_host,
                           keep=lambda count: count <= 1001)


@check
def grouped_broadcast_allgather_alltoall_reducescatter_cuda():
    rank, size = rank_size()
    dev = device()
    outputs = []
    for dtype in SWEEP_DTYPES:
        # grouped, mixed sizes (fused), in and out of place
        counts = [7, 0, 3000, 1]
        inputs = [[make_input(22, r, n, dtype, "sum") for r in range(size)] for n in counts]
        mine = [to_torch(per_rank[rank], dtype).to(dev) for per_rank in inputs]
        for form in ("grouped", "grouped_"):
            if form == "grouped":
                results = hvd.grouped_allreduce(mine, op=hvd.Sum)
            else:
                results = hvd.grouped_allreduce_([t.clone() for t in mine], op=hvd.Sum)
            for out, per_rank in zip(results, inputs):
                problem = compare(on_host(out, dtype), per_rank, dtype, "sum")
                assert not problem, f"{dtype}/{form}: {problem}"
                outputs.append(out.cpu())
        # broadcast from every root, in and out of place
        values = [to_torch(make_input(23, r, 12, dtype, "sum"), dtype).reshape(4, 3).to(dev)
                  for r in range(size)]
        for root in range(size):
            for out in (hvd.broadcast(values[rank], root), hvd.broadcast_(values[rank].clone(),
                                                                          root)):
                assert out.is_cuda and torch.equal(out, values[root]), f"{dtype}/root {root}"
        # allgather with a different number of rows per rank (rank 0 sends none)
        parts = [to_torch(make_input(24, r, 3 * r, dtype, "sum"), dtype).reshape(r, 3).to(dev)
                 for r in range(size)]
        gathered = hvd.allgather(parts[rank])
        assert gathered.is_cuda and torch.equal(gathered, torch.cat(parts)), dtype
        # alltoall with splits
        splits = [(rank + p) % 3 for p in range(size)]
        sent = [to_torch(make_input(25, r, 2 * sum((r + p) % 3 for p in range(size)), dtype,
                                    "sum"), dtype).reshape(-1, 2).to(dev) for r in range(size)]
        received, received_splits = hvd.alltoall(sent[rank], splits=splits)
        expected = []
        for p in range(size):
            theirs = [(p + q) % 3 for q in range(size)]
            start = sum(theirs[:rank])
            expected.append(sent[p][start:start + theirs[rank]])
        assert received.is_cuda and torch.equal(received, torch.cat(expected)), dtype
        assert received_splits.tolist() == [(p + rank) % 3 for p in range(size)]
        # reducescatter
        rows = 2 * size + 1
        scatter_inputs = [make_input(26, r, rows * 2, dtype, "sum") for r in range(size)]
        piece = hvd.reducescatter(to_torch(scatter_inputs[rank], dtype).reshape(rows, 2).to(dev),
                                  op=hvd.Sum)
        counts_rs = dist_sync._builders.reducescatter_rows(rows, size)
        start = sum(counts_rs[:rank]) * 2
        problem = compare(on_host(piece, dtype).reshape(-1),
                          [x[start:start + counts_rs[rank] * 2] for x in scatter_inputs],
                          dtype, "sum")
        assert not problem, f"reducescatter {dtype}: {problem}"
    return {"digest": digest(outputs)}


@check
def autograd_allreduce_cuda():
    rank, size = rank_size()
    dev = device()
    x = torch.full((5,), float(rank + 1), device=dev, requires_grad=True)
    y = hvd.allreduce(x, op=hvd.Sum)
    (y * (rank + 1)).sum().backward()
    assert x.grad.is_cuda
    expected = float(sum(r + 1 for r in range(size)))
    assert torch.equal(y.detach().cpu(), torch.full((5,), expected))
    assert torch.equal(x.grad.cpu(), torch.full((5,), expected))  # sum over ranks of (r + 1)
    return None


# --- streams ---------------------------------------------------------------------------------

def busy() -> None:
    """Keeps the current stream busy for a while (about 0.1 s) before its next kernel."""
    torch.cuda._sleep(int(2e8))


@check
def producer_still_running_and_other_streams():
    """The op is called while the kernel that writes the tensor has not run yet: the call does
    not wait for it (an event after the producer is still pending when the call returns), and
    the copy to host does (the result is right). A consumer on another stream waits for the
    result with wait_stream, as for any CUDA result."""
    rank, size = rank_size()
    dev = device()
    total = float(size * (size + 1) // 2)
    producer = torch.cuda.Stream(dev)
    with torch.cuda.stream(producer):
        x = torch.zeros(1 << 20, device=dev)
        busy()
        x.fill_(rank + 1)
        marker = torch.cuda.Event()
        marker.record()
        handle = hvd.allreduce_async_(x, op=hvd.Sum, name="streams.x")
        still_running = not marker.query()
        hvd.synchronize(handle)
    consumer = torch.cuda.Stream(dev)
    consumer.wait_stream(producer)
    with torch.cuda.stream(consumer):
        doubled = x * 2
    torch.cuda.synchronize(dev)
    assert torch.equal(x.cpu(), torch.full((1 << 20,), total))
    assert torch.equal(doubled.cpu(), torch.full((1 << 20,), 2 * total))
    # Out of place, default stream, the result consumed on the same stream.
    y = torch.zeros(1000, device=dev)
    busy()
    y.fill_(rank + 1)
    out = hvd.synchronize(hvd.allreduce_async(y, op=hvd.Sum))
    assert torch.equal((out + 1).cpu(), torch.full((1000,), total + 1))
    return {"call_returned_while_producer_ran": still_running}


@check
def cpu_on_rank_0_cuda_elsewhere():
    rank, size = rank_size()
    dev = device()
    others = "rank 1" if size == 2 else "ranks " + ", ".join(str(r) for r in range(1, size))
    tensor = torch.ones(4) if rank == 0 else torch.ones(4, device=dev)
    message = raises(dist_sync.DistSyncError,
                     f"Mismatched allreduce 'mixed': device differs across ranks: cpu on rank 0; "
                     f"cuda on {others}", lambda: hvd.allreduce(tensor, name="mixed"))
    assert hvd.allreduce(torch.ones(4, device=dev), op=hvd.Sum).cpu().tolist() == [size] * 4
    return {"message": message}


# --- training --------------------------------------------------------------------------------

def seeded(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.3)
    return module


class Net(nn.Module):
    """A small CNN with every kind of layer a vision model has (conv, norm, linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.tanh(self.norm(self.conv(x))).flatten(1))


def batch(step: int, rows: int):
    g = torch.Generator().manual_seed(500 + step)
    return torch.randn(rows, 3, 8, 8, generator=g, dtype=torch.float64), \
        torch.randn(rows, 10, generator=g, dtype=torch.float64)


def train_cuda_against_cpu(make_optimizer, steps=4, b=4, rtol=1e-4, atol=1e-5, **options):
    """N ranks x batch b on the GPU through DistributedOptimizer vs one float64 CPU process on
    the concatenated batch."""
    rank, size = rank_size()
    dev = device()
    model = seeded(Net(), 40 + rank).float().to(dev)   # different until the broadcast
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    reference = seeded(Net(), 40).double()
    optimizer = hvd.DistributedOptimizer(make_optimizer(model.parameters()),
                                         named_parameters=model.named_parameters(), **options)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    reference_optimizer = make_optimizer(reference.parameters())
    digests = []
    for step in range(steps):
        x, y = batch(step, size * b)
        mine = slice(rank * b, (rank + 1) * b)
        optimizer.zero_grad()
        F.mse_loss(model(x[mine].float().to(dev)), y[mine].float().to(dev)).backward()
        optimizer.step()
        reference_optimizer.zero_grad()
        F.mse_loss(reference(x), y).backward()
        reference_optimizer.step()
        params = [p.detach().cpu() for p in model.parameters()]
        for (name, _), p, q in zip(model.named_parameters(), params, reference.parameters()):
            close(p, q, rtol, atol, f"step {step} {name}")
        digests.append(digest(params))
    return {"digest": "".join(digests)}


@check
def equivalence_cuda_sgd_momentum():
    return train_cuda_against_cpu(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))


@check
def equivalence_cuda_adam_groups():
    # eps well above float32's rounding of tiny gradients, whose sign Adam would amplify.
    return train_cuda_against_cpu(lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-3), groups=2,
                                  atol=1e-4)


@check
def equivalence_cuda_fp16_compression():
    return train_cuda_against_cpu(lambda p: torch.optim.SGD(p, lr=0.1),
                                  compression=hvd.Compression.fp16, rtol=2e-3, atol=2e-3)


@check
def optimizer_state_and_sync_batch_norm_cuda():
    """broadcast_optimizer_state with Adam state on the GPU, and SyncBatchNorm on CUDA inputs
    against torch's BatchNorm on the concatenated batch."""
    rank, size = rank_size()
    dev = device()
    model = seeded(nn.Linear(4, 3), 60).to(dev)
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.full((2, 4), float(rank + 1), device=dev)).sum().backward()
    adam.step()  # rank-specific state
    hvd.broadcast_optimizer_state(adam, root_rank=0)
    state = [adam.state[p]["exp_avg"].cpu() for p in model.parameters()]
    root_state = hvd.broadcast_object(state, root_rank=0)
    for mine, theirs in zip(state, root_state):
        assert torch.equal(mine, theirs)
    assert all(adam.state[p]["exp_avg"].is_cuda for p in model.parameters())

    g = torch.Generator().manual_seed(70)
    full = torch.randn(3 * size, 4, 5, generator=g, dtype=torch.float64)
    sync = hvd.SyncBatchNorm(4).double().to(dev)
    plain = nn.BatchNorm1d(4).double()
    mine = full[3 * rank:3 * (rank + 1)].to(dev).requires_grad_()
    out = sync(mine)
    out.sum().backward()
    reference_input = full.clone().requires_grad_()
    reference_out = plain(reference_input)
    reference_out.sum().backward()
    close(out.detach().cpu(), reference_out[3 * rank:3 * (rank + 1)].detach(), 1e-9, 1e-9,
          "bn out")
    close(mine.grad.cpu(), reference_input.grad[3 * rank:3 * (rank + 1)], 1e-9, 1e-9, "bn grad")
    close(sync.running_mean.cpu(), plain.running_mean, 1e-9, 1e-9, "running mean")
    return None


@check
def pinned_pool_allocates_in_the_first_step_only():
    rank, size = rank_size()
    dev = device()
    model = seeded(Net(), 80).float().to(dev)
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                         named_parameters=model.named_parameters())
    allocated = []
    for step in range(4):
        x, y = batch(step, 4)
        optimizer.zero_grad()
        F.mse_loss(model(x.float().to(dev) + rank), y.float().to(dev)).backward()
        optimizer.step()
        allocated.append(_staging.pool_stats()["allocated_blocks"])
    assert allocated == [allocated[0]] * 4, allocated
    return {"stats": _staging.pool_stats()}


if __name__ == "__main__":
    check.main()
