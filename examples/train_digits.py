"""Data-parallel training of a small CNN on scikit-learn's bundled digits (8x8 images, no
download) with dist_sync's Horovod-style PyTorch API.

    mpirun -np 2 python examples/train_digits.py

Each rank trains on its own shard (DistributedSampler); DistributedOptimizer averages the
gradients; rank 0's initial model and optimizer state are broadcast so all ranks start equal.
Loss and accuracy are summed over ranks before printing. Exits non-zero unless the final test
accuracy exceeds --target (default 0.95).
"""
import argparse
import os
import sys

# Large CPU tensors on 2 MiB transparent huge pages (MPI copies them faster); PyTorch reads this
# when it is imported.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import dist_sync.torch as hvd  # noqa: E402


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def datasets(seed: int):
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_x, test_x, train_y, test_y = train_test_split(images, labels, test_size=0.2,
                                                        random_state=seed, stratify=labels)
    return TensorDataset(train_x, train_y), TensorDataset(test_x, test_y)


def summed(*values: float) -> list:
    """Sums numbers over all ranks (float64, so counts stay exact)."""
    return hvd.allreduce(torch.tensor(values, dtype=torch.float64), op=hvd.Sum,
                         name="metrics").tolist()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--lr", type=float, default=0.02, help="per rank; scaled by size()")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args()

    hvd.init()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed + hvd.rank())  # deliberately different; the broadcast fixes it
    train_set, test_set = datasets(args.seed)
    train_sampler = hvd.DistributedSampler(train_set, shuffle=True, seed=args.seed)
    # even=False: every test image is scored exactly once across the ranks.
    test_sampler = hvd.DistributedSampler(test_set, shuffle=False, even=False)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=train_sampler)
    test_loader = DataLoader(test_set, batch_size=256, sampler=test_sampler)

    model = DigitsNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr * hvd.size(), momentum=0.9)
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    accuracy = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        train_sampler.set_epoch(epoch)
        loss_sum = seen = 0.0
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(labels)
            seen += len(labels)
        model.eval()
        correct = tested = 0.0
        with torch.no_grad():
            for images, labels in test_loader:
                correct += (model(images).argmax(1) == labels).sum().item()
                tested += len(labels)
        loss_sum, seen, correct, tested = summed(loss_sum, seen, correct, tested)
        accuracy = correct / tested
        if hvd.rank() == 0:
            print(f"epoch {epoch:2d}  train loss {loss_sum / seen:.4f}  "
                  f"test accuracy {accuracy:.4f} ({int(correct)}/{int(tested)})  "
                  f"[{hvd.size()} ranks]", flush=True)
    ok = accuracy > args.target
    if hvd.rank() == 0:
        print(f"final test accuracy {accuracy:.4f} "
              f"({'above' if ok else 'BELOW'} the {args.target:.2f} target)", flush=True)
    hvd.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
