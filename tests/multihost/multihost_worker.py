"""Workers of the multi-host tests (run by cluster_harness on network-namespace hosts): the
topology every rank sees, many fused asynchronous allreduces, data-parallel training against one
process, and a rank that fails on a remote host."""
import hashlib
import json
import os
import socket

import numpy as np

import dist_sync as ds
from tests.support.reference import compare, make_input, storage_dtype
from tests.support.worker import Registry

check = Registry()


def interface_address() -> str:
    """This host's eth0 address (the virtual cluster's link), read from the kernel."""
    import fcntl
    import struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        packed = fcntl.ioctl(probe.fileno(), 0x8915,  # SIOCGIFADDR
                             struct.pack("256s", b"eth0"))
    return socket.inet_ntoa(packed[20:24])


@check
def topology():
    """Where every rank thinks it runs: dist_sync's topology and the host's own name, plus one
    allreduce and one allgather_object across the hosts."""
    hostname = socket.gethostname()
    info = {
        "rank": ds.rank(), "size": ds.size(),
        "local_rank": ds.local_rank(), "local_size": ds.local_size(),
        "cross_rank": ds.cross_rank(), "cross_size": ds.cross_size(),
        "homogeneous": ds.is_homogeneous(),
        "hostname": hostname,
        "address": interface_address(),
        "resolved": socket.gethostbyname(hostname),
        "pid": os.getpid(),
    }
    info["all_hostnames"] = ds.allgather_object(hostname)
    info["rank_sum"] = int(ds.allreduce(np.array([ds.rank()], dtype=np.int64), op=ds.Sum)[0])
    return info


FUSED_DTYPES = ["float32", "float64", "int32", "float16", "int64", "uint8"]
FUSED_OPS = {"sum": ds.Sum, "average": ds.Average, "max": ds.Max, "min": ds.Min}


def tensor_plan(count: int, seed: int):
    """(name, dtype, op, element count) of each tensor, the same on every rank."""
    rng = np.random.default_rng(seed)
    plan = []
    for index in range(count):
        dtype = FUSED_DTYPES[index % len(FUSED_DTYPES)]
        op = list(FUSED_OPS)[(index // len(FUSED_DTYPES)) % len(FUSED_OPS)]
        plan.append((f"grad.{index}", dtype, op, int(rng.integers(1, 4000))))
    return plan


@check.scenario
def fused_async(args):
    """Many small named tensors submitted asynchronously before any is waited for (the engine
    fuses what is ready together), synchronized in reverse order, checked against numpy;
    repeated so that later rounds go through the response cache. Rank 0 also reports, from the
    engine's timeline, how many requests the largest fused allreduce carried."""
    timeline = None
    if args.get("timeline"):
        timeline = os.path.join(os.environ["DIST_SYNC_TEST_OUT"], "timeline.json")
    ds.init(timeline=timeline)  # rank 0 writes it
    rank, size = ds.rank(), ds.size()
    plan = tensor_plan(args.get("tensors", 240), seed=11)
    failures, digest = [], hashlib.sha256()
    for round_ in range(args.get("rounds", 3)):
        pending = []
        for index, (name, dtype, op, count) in enumerate(plan):
            seed = 1000 * round_ + index
            inputs = [make_input(seed, r, count, dtype, op) for r in range(size)]
            mine = inputs[rank].astype(storage_dtype(dtype))
            if index % 2:
                handle = ds.allreduce_async_(mine, op=FUSED_OPS[op], name=name)
            else:
                handle = ds.allreduce_async(mine, op=FUSED_OPS[op], name=name)
            pending.append((name, dtype, op, inputs, handle))
        for name, dtype, op, inputs, handle in reversed(pending):
            out = ds.synchronize(handle)
            problem = compare(out, inputs, dtype, op)
            if problem:
                failures.append(f"round {round_} {name} ({dtype} {op}): {problem}")
            digest.update(out.tobytes())
    ds.shutdown()
    result = {"failures": failures, "digest": digest.hexdigest(), "tensors": len(plan)}
    if rank == 0 and timeline:
        with open(timeline) as handle:
            events = json.load(handle)
        fused = [e["args"]["fused_requests"] for e in events
                 if e.get("ph") == "X" and "fused_requests" in e.get("args", {})]
        result["max_fused_requests"] = max(fused, default=0)
        result["timeline_spans"] = len(fused)
    return result


@check.scenario
def fail_on_host(args):
    """Rank args["fail_rank"] raises after one successful allreduce; the others then block in a
    second allreduce that can never complete. mpirun must end the job on every host."""
    ds.init()
    total = ds.allreduce(np.ones(1000, dtype=np.float32), op=ds.Sum, name="before")
    assert total[0] == ds.size(), total[0]
    if ds.rank() == args["fail_rank"]:
        raise ValueError(f"deliberate failure on {socket.gethostname()} (rank {ds.rank()})")
    ds.allreduce(np.ones(1000, dtype=np.float32), op=ds.Sum, name="never")
    return "unreachable"


IN, HIDDEN, OUT = 6, 16, 3


def make_model(seed: int):
    import torch
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(),
                               torch.nn.Linear(HIDDEN, OUT))


def global_batch(step: int, rows: int):
    import torch
    rng = np.random.default_rng([2024, step])
    x = torch.from_numpy(rng.standard_normal((rows, IN)).astype(np.float32))
    y = torch.from_numpy(rng.standard_normal((rows, OUT)).astype(np.float32))
    return x, y


@check
def train_equivalence(args):
    """Data-parallel training equals single-process training on the concatenated batch.

    Every rank builds the model from its own seed (so broadcast_parameters has to make them
    equal), trains with DistributedOptimizer over SGD with momentum on its shard of each global
    batch, and reports its parameters. It also replays the same steps in one process on the whole
    batch with the rank-0 initial parameters (plain torch, no dist_sync) and reports how far the
    two are apart. Losses are means over the local batch and every shard has the same size, so
    the averaged gradient is exactly the full-batch gradient (up to float32 rounding order)."""
    import torch
    import dist_sync.torch as hvd

    rank, size = hvd.rank(), hvd.size()
    steps, per_rank, lr, momentum = args.get("steps", 6), args.get("per_rank", 8), 0.05, 0.9

    model = make_model(seed=100 + rank)   # differs per rank on purpose
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    for step in range(steps):
        x, y = global_batch(step, per_rank * size)
        shard = slice(rank * per_rank, (rank + 1) * per_rank)
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[shard]), y[shard])
        loss.backward()
        optimizer.step()

    reference = make_model(seed=100)      # rank 0's initial parameters
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=lr, momentum=momentum)
    for step in range(steps):
        x, y = global_batch(step, per_rank * size)
        ref_optimizer.zero_grad()
        torch.nn.functional.mse_loss(reference(x), y).backward()
        ref_optimizer.step()

    digest = hashlib.sha256()
    max_diff, max_move = 0.0, 0.0
    initial = dict(make_model(seed=100).named_parameters())
    for (name, mine), (_, ref) in zip(model.named_parameters(), reference.named_parameters()):
        digest.update(mine.detach().numpy().tobytes())
        max_diff = max(max_diff, float((mine - ref).abs().max()))
        max_move = max(max_move, float((ref - initial[name]).abs().max()))
    return {"digest": digest.hexdigest(), "max_abs_diff": max_diff, "max_param_change": max_move,
            "hostname": socket.gethostname()}


if __name__ == "__main__":
    check.main()
