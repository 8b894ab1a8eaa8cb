"""One rank raises an uncaught exception in the middle of training (a bad batch); the others
must fail with an error naming that rank and its exception, not hang.

args: {"framework": "numpy" | "torch", "victim": int, "step": int (the bad batch),
       "info_dir": path, "token": unique string}
numpy: a loop of named allreduces. torch: a small model trained with DistributedOptimizer; the
victim raises between forward and backward, while the others' gradients are in flight.
Ranks that live on record the error they got and re-raise it, as a real script would.
"""
import json
import sys

import numpy as np

from tests.support.worker import record, world_rank
from tests.support.faults import record_process


def numpy_training(args: dict) -> None:
    import dist_sync as ds
    ds.init()
    rank = ds.rank()
    for step in range(100):
        if step == 1:
            record_process(args["info_dir"])
        if rank == args["victim"] and step == args["step"]:
            raise ValueError(f"bad batch {step}")
        ds.allreduce(np.full(1000, float(step)), name="grad.fc")


def torch_training(args: dict) -> None:
    import torch
    import dist_sync.torch as hvd
    hvd.init()
    rank = hvd.rank()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                         named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    generator = torch.Generator().manual_seed(rank)
    for step in range(100):
        if step == 1:
            record_process(args["info_dir"])
        data = torch.randn(8, 16, generator=generator)
        target = torch.randint(0, 4, (8,), generator=generator)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(data), target)
        if rank == args["victim"] and step == args["step"]:
            raise ValueError(f"bad batch {step}")
        loss.backward()
        optimizer.step()


def run(args: dict) -> None:
    train = torch_training if args["framework"] == "torch" else numpy_training
    if world_rank() == args["victim"]:
        train(args)  # raises: uncaught, so dist_sync's excepthook and atexit report it
    try:
        train(args)
    except Exception as error:  # noqa: BLE001 - whatever the framework wraps it in
        record(True, {"error": f"{type(error).__name__}: {error}"})
        raise
    record(False, error="training finished although a rank raised")


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
