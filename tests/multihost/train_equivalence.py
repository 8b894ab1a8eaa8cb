"""Data-parallel training equals single-process training on the concatenated batch.

Every rank builds the model from its own seed (so broadcast_parameters has to make them equal),
trains with DistributedOptimizer over SGD with momentum on its shard of each global batch, and
reports its parameters. It also replays the same steps in one process on the whole batch with the
rank-0 initial parameters (plain torch, no dist_sync) and reports how far the two are apart.
Losses are means over the local batch and every shard has the same size, so the averaged
gradient is exactly the full-batch gradient (up to float32 rounding order).
"""
import hashlib

import numpy as np
import torch

import dist_sync.torch as hvd
from tests.support.worker import main

IN, HIDDEN, OUT = 6, 16, 3


def make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(),
                               torch.nn.Linear(HIDDEN, OUT))


def global_batch(step: int, rows: int):
    rng = np.random.default_rng([2024, step])
    x = torch.from_numpy(rng.standard_normal((rows, IN)).astype(np.float32))
    y = torch.from_numpy(rng.standard_normal((rows, OUT)).astype(np.float32))
    return x, y


def run(args):
    hvd.init()
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
    hvd.shutdown()
    return {"digest": digest.hexdigest(), "max_abs_diff": max_diff, "max_param_change": max_move,
            "hostname": __import__("socket").gethostname()}


if __name__ == "__main__":
    main(run)
