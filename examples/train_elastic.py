"""Elastic data-parallel training on scikit-learn's digits: the job survives a rank that dies.

    mpirun --with-ft ulfm -np 3 --bind-to none python examples/train_elastic.py \\
        --simulate-failure 1,2,5

Training runs inside ``hvd.elastic.run`` with its state (model, optimizer, sampler, epoch and
batch counters) in a ``TorchState`` committed after every batch. ``--simulate-failure R,E,B``
makes rank R SIGKILL itself before batch B of epoch E, as a crashed process or a lost host
would: the other ranks go back to the last commit and carry on with one rank fewer, and a
replacement is started and merged in (``DIST_SYNC_ELASTIC_MAX_NP``, by default the size the job
was launched with) while they train. Each epoch line says on how many ranks it ended. Exits
non-zero unless the final test accuracy exceeds --target.
"""
import argparse
import os
import signal
import sys
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

import dist_sync.torch as hvd


def datasets(seed: int) -> Tuple[TensorDataset, TensorDataset]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=0.2, random_state=seed,
                                                        stratify=y)
    return TensorDataset(train_x, train_y), TensorDataset(test_x, test_y)


def failure(spec: Optional[str]) -> Optional[Tuple[int, int, int]]:
    if spec is None:
        return None
    rank, epoch, batch = (int(part) for part in spec.split(","))
    return rank, epoch, batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--lr", type=float, default=0.01, help="per rank; scaled by size()")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--target", type=float, default=0.93)
    parser.add_argument("--simulate-failure", metavar="R,E,B",
                        help="rank R kills itself before batch B of epoch E")
    args = parser.parse_args()
    kill = failure(args.simulate_failure)

    hvd.init()
    torch.set_num_threads(1)
    launched_size = hvd.size()
    torch.manual_seed(args.seed + hvd.rank())  # deliberately different; sync() fixes it
    train_set, test_set = datasets(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    optimizer = hvd.DistributedOptimizer(
        torch.optim.Adam(model.parameters(), lr=args.lr * hvd.size()),
        named_parameters=model.named_parameters())
    sampler = hvd.elastic.ElasticSampler(train_set, shuffle=True, seed=args.seed)
    state = hvd.elastic.TorchState(model=model, optimizer=optimizer, sampler=sampler, epoch=0,
                                   batch=0)

    def rescale_learning_rate() -> None:
        for group in optimizer.param_groups:
            group["lr"] = args.lr * hvd.size()

    state.register_reset_callbacks([rescale_learning_rate])

    @hvd.elastic.run
    def train(state: hvd.elastic.TorchState) -> float:
        while state.epoch < args.epochs:
            if state.batch == 0:
                sampler.set_epoch(state.epoch)
            model.train()
            for x, y in DataLoader(train_set, batch_size=args.batch_size, sampler=sampler):
                # Only at the launched size: after the failure the job never returns to this
                # (epoch, batch) at that size, so a replacement does not fail again.
                if kill == (hvd.rank(), state.epoch, state.batch) and \
                        hvd.size() == launched_size:
                    print(f"rank {hvd.rank()}: simulating a failure (SIGKILL) before batch "
                          f"{state.batch} of epoch {state.epoch}", flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
                sampler.record_batch(state.batch, args.batch_size)
                state.batch += 1
                state.commit()
            state.epoch, state.batch = state.epoch + 1, 0
            state.commit()
            accuracy = evaluate()
            if hvd.rank() == 0:
                print(f"epoch {state.epoch:2d}  test accuracy {accuracy:.4f}  "
                      f"[{hvd.size()} ranks]", flush=True)
        return evaluate()

    def evaluate() -> float:
        """Test accuracy, each rank scoring its share of the test set."""
        model.eval()
        x, y = test_set.tensors
        with torch.no_grad():
            correct = (model(x[hvd.rank()::hvd.size()]).argmax(1) == y[hvd.rank()::hvd.size()])
        counts = torch.tensor([float(correct.sum()), float(len(correct))], dtype=torch.float64)
        correct_sum, tested = hvd.allreduce(counts, op=hvd.Sum, name="elastic.accuracy").tolist()
        return correct_sum / tested

    accuracy = train(state)
    ok = accuracy > args.target
    if hvd.rank() == 0:
        print(f"final test accuracy {accuracy:.4f} on {hvd.size()} ranks "
              f"({'above' if ok else 'BELOW'} the {args.target:.2f} target)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
