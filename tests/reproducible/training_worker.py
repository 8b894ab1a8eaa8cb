"""A small training run (MLP with LayerNorm, DistributedOptimizer, fixed seeds, each rank its
own data) whose final parameters' digest must not depend on fusion, segment sizes, cycle
timing or a slow rank."""
import hashlib
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import dist_sync.torch as hvd
from tests.support.torch_checks import torch_registry

check = torch_registry()
STEPS = 30


def model() -> nn.Module:
    torch.manual_seed(1234)
    return nn.Sequential(nn.Linear(37, 301), nn.LayerNorm(301), nn.GELU(), nn.Linear(301, 129),
                         nn.LayerNorm(129), nn.GELU(), nn.Linear(129, 5))


@check
def train(args):
    """args: {"delay": seconds rank 1 sleeps inside every backward pass}."""
    rank = hvd.rank()
    delay = float(args.get("delay", 0.0))
    net = model()
    hvd.broadcast_parameters(net.state_dict(), root_rank=0)
    if delay > 0 and rank == 1:
        # Late gradients for the first layer: the others are allreduced in earlier cycles.
        net[0].weight.register_hook(lambda grad: (time.sleep(delay), grad)[1])
    optimizer = hvd.DistributedOptimizer(torch.optim.Adam(net.parameters(), lr=1e-2),
                                         named_parameters=net.named_parameters())
    generator = torch.Generator().manual_seed(100 + rank)
    for _ in range(STEPS):
        x = torch.randn(64, 37, generator=generator)
        y = torch.randn(64, 5, generator=generator)
        optimizer.zero_grad()
        F.mse_loss(net(x), y).backward()
        optimizer.step()
    digest = hashlib.sha256()
    for name, parameter in net.state_dict().items():
        digest.update(name.encode())
        digest.update(parameter.detach().numpy().tobytes())
    return {"digest": digest.hexdigest()}


if __name__ == "__main__":
    check.main()
