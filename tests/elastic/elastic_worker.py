"""Elastic runs (dist_sync.torch.elastic) under `mpirun --with-ft ulfm`, where ranks are
SIGKILLed at chosen steps: scenarios, each launched alone by test_elastic_mpi.py.

Ranks to kill are named by their MPI_COMM_WORLD rank (stable across resets, unlike hvd.rank()).
A killed rank records the time it died; survivors record what the test compares: their final
parameters' digest, every committed step's samples, the accuracy, and when training resumed.
"""
import hashlib
import os
import signal
import sys
import threading
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from tests.support.worker import Registry, world_rank  # noqa: E402

check = Registry()


def _die(args):
    """SIGKILLs this process, having recorded when (for the recovery time). With
    args["unlink_interpreter"], the interpreter's path goes too, so no replacement can start."""
    if args.get("unlink_interpreter") and os.path.lexists(sys.executable):
        os.unlink(sys.executable)
    check.record({"killed_at": time.time(), "world_rank": world_rank()})
    os.kill(os.getpid(), signal.SIGKILL)


def _digits(path):
    """scikit-learn's digits, split 80/20, as the test saved them (importing sklearn on every
    rank of every job would cost more than the training)."""
    data = np.load(path)
    train_x, train_y = torch.from_numpy(data["train_x"]), torch.from_numpy(data["train_y"])
    # Each sample carries its index, so the survivors can record which samples every step used.
    return (TensorDataset(torch.arange(len(train_y)), train_x, train_y),
            (torch.from_numpy(data["test_x"]), torch.from_numpy(data["test_y"])))


def save_digits(path):
    """Writes the digits split _digits() reads."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=0.2, random_state=0,
                                                        stratify=y)
    np.savez(path, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)


def _digest(model):
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().numpy().tobytes())
    return h.hexdigest()


@check.scenario
def train(args):
    """Digits training with TorchState and ElasticSampler; args["kills"]: [world rank, epoch,
    step] triples (the rank SIGKILLs itself before that step); args["raise_at"]: the same, but
    the rank raises ValueError (not a death); args["shrunk_step_sleep"]: seconds each step sleeps
    while the job is smaller than launched;
    args["unlink_interpreter"]: see _die."""
    import dist_sync.torch as hvd
    from dist_sync import _core

    started_at = time.time()
    hvd.init()
    torch.set_num_threads(1)
    torch.manual_seed(1234 + world_rank())  # different everywhere: sync() must fix it
    train_set, (test_x, test_y) = _digits(args["data"])
    batch_size = int(args.get("batch_size", 16))
    epochs = int(args.get("epochs", 3))
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    base_lr = 0.01
    optimizer = torch.optim.Adam(model.parameters(), lr=base_lr * hvd.size())
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    sampler = hvd.elastic.ElasticSampler(train_set, shuffle=True, seed=7)
    state = hvd.elastic.TorchState(model=model, optimizer=optimizer, sampler=sampler, epoch=0,
                                   step=0, seen=[], sizes=[])
    resets = []

    def on_reset():
        for group in optimizer.param_groups:
            group["lr"] = base_lr * hvd.size()
        resets.append({"at": time.time(), "size": hvd.size(), "rank": hvd.rank()})

    state.register_reset_callbacks([on_reset])
    kills = [tuple(k) for k in args.get("kills", [])]
    raises = [tuple(k) for k in args.get("raise_at", [])]
    resumed = []
    shrunk_step_sleep = float(args.get("shrunk_step_sleep", 0.0))
    launched = hvd.size() if not _core._elastic_joined() else None

    @hvd.elastic.run
    def loop(state):
        while state.epoch < epochs:
            if state.step == 0:
                sampler.set_epoch(state.epoch)
            loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler)
            for indices, x, y in loader:
                key = (world_rank(), state.epoch, state.step)
                if key in kills:
                    _die(args)
                if key in raises:
                    raise ValueError(f"bad batch at epoch {state.epoch} step {state.step}")
                if shrunk_step_sleep and launched and hvd.size() < launched:
                    time.sleep(shrunk_step_sleep)  # leaves a replacement time to start
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
                if resets and len(resumed) < len(resets):
                    resumed.append(time.time())
                gathered = hvd.allgather(indices, name="indices").tolist()
                state.seen.append([state.epoch, gathered])
                state.sizes.append(hvd.size())
                sampler.record_batch(state.step, batch_size)
                state.step += 1
                state.commit()
            state.epoch += 1
            state.step = 0
            state.commit()

    loop(state)
    with torch.no_grad():
        accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
    return {"digest": _digest(model), "seen": state.seen, "sizes": state.sizes, "accuracy": accuracy,
            "size": hvd.size(), "rank": hvd.rank(), "resets": resets, "resumed": resumed,
            "dataset": len(train_set), "finished_at": time.time(),
            "joined": _core._elastic_joined(), "started_at": started_at}


@check.scenario
def fused_allreduce(args):
    """64 MiB of tensors allreduced as one fused pass; world rank args["victim"] is SIGKILLed
    while it runs. The survivors redo the allreduce over the shrunk job and record the sums."""
    import dist_sync.torch as hvd

    hvd.init()
    count = 16
    elements = (64 << 20) // 4 // count
    attempts = []  # not state: a restore must not roll it back

    @hvd.elastic.run
    def reduce(state):
        attempts.append(hvd.size())
        me = world_rank()
        tensors = [torch.full((elements,), float(me + 1 + t)) for t in range(count)]
        if len(attempts) == 1 and me == args["victim"]:
            threading.Timer(args.get("delay", 0.01), _die, (args,)).start()
        handles = [hvd.allreduce_async_(t, name=f"big.{t_index}", op=hvd.Sum)
                   for t_index, t in enumerate(tensors)]
        for h in handles:
            hvd.synchronize(h)
        return [float(t[0]) for t in tensors] + [float(t[-1]) for t in tensors]

    sums = reduce(hvd.elastic.ObjectState())
    return {"sums": sums, "size": hvd.size(), "attempts": attempts}


@check.scenario
def elastic_without_ulfm(args):
    """elastic.run under a plain mpirun: the error says how to launch. (The framework-neutral
    run and ObjectState that hvd.elastic re-exports, so the job does not wait for torch.)"""
    import dist_sync
    from dist_sync import _elastic

    dist_sync.init()

    @_elastic.run
    def noop(state):
        return 1

    noop(_elastic.ObjectState())


if __name__ == "__main__":
    check.main()
