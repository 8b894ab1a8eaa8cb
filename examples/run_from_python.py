"""Starting a data-parallel job from Python (a notebook, a pipeline step) and getting its
results back: dist_sync.run starts a function on N ranks through the MPI launcher, streams
their output with a rank prefix and returns what every rank returned.

    python examples/run_from_python.py --np 2

The function trains a small network on scikit-learn's digits with dist_sync.torch (as
examples/train_digits.py does under mpirun), returns its final test accuracy and the trained
weights from rank 0, and the caller scores the weights once more itself. A rank that raises
makes dist_sync.run raise a RankError here, with that rank's traceback; Ctrl-C ends every rank.
Exits non-zero unless the accuracy exceeds --target (default 0.95).
"""
import argparse
import sys

import dist_sync


def train(epochs: int, batch_size: int, lr: float, seed: int):
    """Runs on every rank: trains, and returns (test accuracy, rank 0's weights or None)."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch.utils.data import DataLoader, TensorDataset

    import dist_sync.torch as hvd

    hvd.init()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_x, test_x, train_y, test_y = train_test_split(images, labels, test_size=0.2,
                                                        random_state=seed, stratify=labels)
    train_set = TensorDataset(train_x, train_y)
    sampler = hvd.DistributedSampler(train_set, shuffle=True, seed=seed)
    loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    optimizer = hvd.DistributedOptimizer(
        torch.optim.SGD(model.parameters(), lr=lr * hvd.size(), momentum=0.9),
        named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
        if hvd.rank() == 0:
            print(f"epoch {epoch:2d}  test accuracy {accuracy:.4f}", flush=True)
    weights = {k: v.numpy() for k, v in model.state_dict().items()} if hvd.rank() == 0 else None
    hvd.shutdown()
    return accuracy, weights


def score(weights) -> float:
    """The caller's own check of rank 0's weights on the same test split (numpy only)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    _, test_x, _, test_y = train_test_split(digits.data / 16.0, digits.target, test_size=0.2,
                                            random_state=42, stratify=digits.target)
    hidden = np.maximum(test_x @ weights["0.weight"].T + weights["0.bias"], 0)
    logits = hidden @ weights["2.weight"].T + weights["2.bias"]
    return float((logits.argmax(1) == test_y).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--np", type=int, default=2, help="number of ranks")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--lr", type=float, default=0.02, help="per rank; scaled by size()")
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args()

    # THP_MEM_ALLOC_ENABLE: large CPU tensors on huge pages, which MPI copies faster.
    results = dist_sync.run(train, args=(args.epochs, args.batch_size, args.lr, 42), np=args.np,
                            env={"THP_MEM_ALLOC_ENABLE": "1"})
    accuracies = [accuracy for accuracy, _ in results]
    weights = results[0][1]
    checked = score(weights)
    ok = min(accuracies) > args.target and checked > args.target
    print(f"test accuracy per rank {[round(a, 4) for a in accuracies]}; rank 0's weights "
          f"scored here: {checked:.4f} ({'above' if ok else 'BELOW'} the {args.target:.2f} "
          f"target)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
