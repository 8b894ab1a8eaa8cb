"""Data-parallel training on data that sits, partitioned, in a Dask cluster: scikit-learn's
digits as a Dask DataFrame of 12 partitions, each Dask worker training with dist_sync's
DistributedOptimizer on the partitions it already holds.

    mpirun -np 5 python examples/train_dask.py        # or: python -m dist_sync.run -np 5 ...

dask-mpi turns the MPI ranks into a Dask cluster: rank 0 runs the scheduler, rank 1 this
script (the client), ranks 2.. the workers. dist_sync.dask.run starts one task on each worker,
with dist_sync running over the worker ranks only, and hands it its partitions as a torch
Dataset. Workers hold different numbers of rows, so each epoch ends with join(). Exits
non-zero unless the final test accuracy exceeds --target (default 0.95).
"""
import argparse
import os
import sys

# Large CPU tensors on 2 MiB transparent huge pages (MPI copies them faster); PyTorch reads this
# when it is imported, here and on the workers.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
# Dask's scheduler and workers log every connection at INFO; keep warnings and errors.
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def train(dataset, test_x, test_y, epochs: int, batch_size: int, lr: float, seed: int):
    """Runs on every worker: ``dataset`` holds this worker's rows (features, label)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    import dist_sync.torch as hvd

    class DigitsNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.fc1 = nn.Linear(32 * 4 * 4, 64)
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu(self.conv1(x.view(-1, 1, 8, 8)))
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc2(F.relu(self.fc1(x.flatten(1))))

    hvd.init()   # dist_sync.dask.run has initialised dist_sync over the workers: a no-op
    torch.set_num_threads(1)
    torch.manual_seed(seed + hvd.rank())   # deliberately different; the broadcast fixes it
    model = DigitsNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr * hvd.size(), momentum=0.9)
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    test_x, test_y = torch.tensor(test_x), torch.tensor(test_y)
    shuffle = torch.Generator().manual_seed(seed + hvd.rank())
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        # Whole batches at once: the sampler yields lists of indices, the dataset slices them.
        batches = BatchSampler(RandomSampler(dataset, generator=shuffle), batch_size, False)
        loss_sum = seen = 0.0
        for images, labels in DataLoader(dataset, sampler=batches, batch_size=None):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(labels)
            seen += len(labels)
        # Ranks hold different numbers of rows: those done first contribute zeros to the
        # others' last steps until every rank is through its rows.
        hvd.join()
        loss_sum, seen = hvd.allreduce(torch.tensor([loss_sum, seen], dtype=torch.float64),
                                       op=hvd.Sum, name="metrics").tolist()
        model.eval()
        with torch.no_grad():
            accuracy = (model(test_x).argmax(1) == test_y).double().mean().item()
        history.append((epoch, loss_sum / seen, accuracy, int(seen)))
        if hvd.rank() == 0:
            print(f"epoch {epoch:2d}  train loss {loss_sum / seen:.4f}  test accuracy "
                  f"{accuracy:.4f}  ({int(seen)} rows on {hvd.size()} workers)", flush=True)
    return {"rows": len(dataset), "history": history}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32, help="per worker")
    parser.add_argument("--lr", type=float, default=0.02, help="per worker; scaled by size()")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args()

    from dask_mpi import initialize
    initialize(nthreads=1, dashboard=False, memory_limit=0)   # only rank 1 returns from here

    import dask.dataframe as dd
    import numpy as np
    import pandas as pd
    from distributed import Client
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import dist_sync.dask

    digits = load_digits()
    pixels = (digits.data / 16.0).astype(np.float32)
    frame = pd.DataFrame(pixels, columns=[f"p{i}" for i in range(pixels.shape[1])])
    frame["label"] = digits.target.astype(np.int64)
    train_frame, test_frame = train_test_split(frame, test_size=0.2, random_state=args.seed,
                                               stratify=frame["label"])
    with Client() as client:
        # The data as it would sit in a cluster: partitions spread over the workers' memory.
        ddf = dd.from_pandas(train_frame, npartitions=args.partitions).persist()
        placement = dist_sync.dask.plan(client, ddf)
        print(f"{ddf.npartitions} partitions on {len(placement.workers)} workers: rows per "
              f"worker {list(placement.rows)}, partitions moved to balance them: "
              f"{len(placement.moved)}", flush=True)
        results = dist_sync.dask.run(
            client, train, ddf, format="torch", target="label",
            args=(test_frame.drop(columns="label").to_numpy(), test_frame["label"].to_numpy(),
                  args.epochs, args.batch_size, args.lr, args.seed))
    rows = [r["rows"] for r in results]
    assert sum(rows) == len(train_frame), "every training row is read exactly once per epoch"
    accuracy = results[0]["history"][-1][2]
    ok = accuracy > args.target
    print(f"final test accuracy {accuracy:.4f} ({'above' if ok else 'BELOW'} the "
          f"{args.target:.2f} target); rows per worker {rows}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
