"""What elastic training costs, and how fast it recovers from a lost rank:

  mpirun --with-ft ulfm -np N python -m benchmarks.elastic [--rounds 5] [--steps 20]
  mpirun --with-ft ulfm -np N python -m benchmarks.elastic --grow

* ``step``: one DistributedOptimizer step (forward, backward, allreduce, SGD) of a
  3.2 M-parameter MLP, batch 64, three ways in alternating order within each round: a plain
  loop (elastic off), the same loop inside ``hvd.elastic.run`` (elastic on, no commit), and
  with ``state.commit()`` after every step (the copy of model and optimizer a commit costs).
  Medians over every round's steps; times are the slowest rank's.
* ``recovery``: then the highest rank SIGKILLs itself mid-step, N-1 times in a row down to one
  rank; for each loss, the time from the kill to the survivors' first completed step on the
  shrunk job (``reset``: the engine rebuilt over the survivors, state synced, callbacks run).
  No replacements are spawned (``elastic_max_np=1``).
* ``--grow`` instead: the highest rank SIGKILLs itself once; the survivors continue on N-1
  ranks, spawn a replacement (a process running this same command line) and merge it in at a
  commit once it has started. From the kill: the survivors' first step on N-1 ranks, the job
  grown back to N (``grown``: engine rebuilt over N ranks, state synced, callbacks run), and
  the first step completed on N ranks; and the part of it from the start of the commit that
  let the replacement in to the end of the callbacks (agreement, merge, new engine, sync). The
  replacement spends most of the time starting (Python, torch, MPI_Init) while the survivors
  train.

Every rank runs on this host, so the kill time (written by the victim just before it dies) and
the survivors' clocks are the same clock.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

import dist_sync.torch as hvd


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(512, 2048), nn.LayerNorm(2048), nn.GELU(),
                         nn.Linear(2048, 1024), nn.GELU(), nn.Linear(1024, 10))


def _slowest(seconds: float) -> float:
    return float(hvd.allreduce(torch.tensor([seconds], dtype=torch.float64), op=hvd.Max,
                               name="bench.slowest")[0])


def _die(out_dir: str, world_rank: int) -> None:
    """SIGKILLs this rank, having written when to out_dir/killed<world rank>."""
    with open(os.path.join(out_dir, f"killed{world_rank}"), "w") as handle:
        handle.write(repr(time.time()))
    os.kill(os.getpid(), signal.SIGKILL)


def step_times(rounds: int, steps: int) -> Dict[str, float]:
    model = _model()
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.01),
                                         named_parameters=model.named_parameters())
    x, y = torch.randn(64, 512), torch.randint(0, 10, (64,))
    state = hvd.elastic.TorchState(model=model, optimizer=optimizer)

    def one_step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    def loop(commit: bool) -> List[float]:
        times = []
        for _ in range(steps):
            hvd.barrier()
            start = time.perf_counter()
            one_step()
            if commit:
                state.commit()
            times.append(_slowest(time.perf_counter() - start))
        return times

    @hvd.elastic.run
    def elastic_loop(state: hvd.elastic.TorchState, commit: bool) -> List[float]:
        return loop(commit)

    for _ in range(3):  # warm-up
        one_step()
    samples: Dict[str, List[float]] = {"off": [], "on": [], "on+commit": []}
    for round_index in range(rounds):
        order = ["off", "on", "on+commit"]
        if round_index % 2:
            order.reverse()
        for mode in order:
            if mode == "off":
                samples[mode] += loop(False)
            else:
                samples[mode] += elastic_loop(state, mode == "on+commit")
    return {mode: statistics.median(values) for mode, values in samples.items()}


def recovery_times(out_dir: str) -> List[Dict[str, float]]:
    world_rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    model = _model()
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.01),
                                         named_parameters=model.named_parameters())
    x, y = torch.randn(64, 512), torch.randint(0, 10, (64,))
    state = hvd.elastic.TorchState(model=model, optimizer=optimizer, step=0)
    events: List[Dict[str, float]] = []
    reset_at: List[float] = []
    total = hvd.size()

    def on_reset() -> None:
        reset_at.append(time.time())
        state.step = 0

    state.register_reset_callbacks([on_reset])

    @hvd.elastic.run
    def train(state: hvd.elastic.TorchState) -> None:
        while True:
            if state.step == 5:
                if hvd.size() == 1:
                    return
                if hvd.rank() == hvd.size() - 1:
                    # Mid-step: the backward pass has started the gradients' allreduces.
                    optimizer.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    _die(out_dir, world_rank)
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            if len(events) < len(reset_at):
                victim = total - 1 - len(events)
                with open(os.path.join(out_dir, f"killed{victim}")) as handle:
                    killed = float(handle.read())
                events.append({"size": hvd.size(), "reset": reset_at[-1] - killed,
                               "resumed": time.time() - killed})
            state.step += 1
            state.commit()

    train(state)
    return events


def grow_times(out_dir: str) -> Dict[str, float]:
    """Kill -> shrunk -> grown back (see the module docstring). Run by every rank and by the
    replacement, which starts inside ``train`` with the state of rank 0."""
    world_rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    model = _model()
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.01),
                                         named_parameters=model.named_parameters())
    x, y = torch.randn(64, 512), torch.randint(0, 10, (64,))
    state = hvd.elastic.TorchState(model=model, optimizer=optimizer, step=0, lost=False)
    reset_at: List[float] = []
    first_step: List[float] = []  # after each reset
    commit_at = [0.0]  # the start of the latest commit (the growth starts inside one)
    rebuild_from: List[float] = []
    total = hvd.size()

    def on_reset() -> None:
        rebuild_from.append(commit_at[0])
        reset_at.append(time.time())
        state.step = 0
        state.lost = True

    state.register_reset_callbacks([on_reset])

    @hvd.elastic.run
    def train(state: hvd.elastic.TorchState) -> None:
        while True:
            if state.step == 5:
                if hvd.size() == total and state.lost:
                    return
                if not state.lost and hvd.rank() == hvd.size() - 1:
                    _die(out_dir, world_rank)
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            if len(first_step) < len(reset_at):
                first_step.append(time.time())
            state.step += 1
            commit_at[0] = time.time()
            state.commit()

    train(state)
    if hvd.rank() != 0 or len(reset_at) != 2:
        return {}
    with open(os.path.join(out_dir, f"killed{total - 1}")) as handle:
        killed = float(handle.read())
    return {"shrunk_resumed": first_step[0] - killed, "grown": reset_at[1] - killed,
            "grown_resumed": first_step[1] - killed, "merge": reset_at[1] - rebuild_from[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out-dir", default=os.environ.get("TMPDIR", tempfile.gettempdir()))
    parser.add_argument("--grow", action="store_true",
                        help="measure one loss and the growth back instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.grow:
        hvd.init()
        # mpirun's pid: the same for the replacement, whose parent is mpirun too.
        job_dir = os.path.join(args.out_dir, f"dist_sync_elastic_grow_{os.getppid()}")
        os.makedirs(job_dir, exist_ok=True)
        times = grow_times(job_dir)
        if times:
            print(f"kill -> first step on {hvd.size() - 1} rank(s) {times['shrunk_resumed']:.3f} s, "
                  f"-> grown back to {hvd.size()} {times['grown']:.3f} s, -> first step on "
                  f"{hvd.size()} {times['grown_resumed']:.3f} s (of which the commit that "
                  f"merged the replacement, rebuild, sync and callbacks {times['merge']:.3f} s)")
        return
    hvd.init(elastic_max_np=1)
    size = hvd.size()
    times = step_times(args.rounds, args.steps)
    if hvd.rank() == 0:
        print(f"step time, {size} ranks, median of {args.rounds * args.steps} steps:")
        for mode, seconds in times.items():
            print(f"  elastic {mode:<10} {seconds * 1e3:8.2f} ms  ({seconds / times['off']:.3f} x off)")
    job_dir = os.path.join(args.out_dir, f"dist_sync_elastic_bench_{os.getppid()}")
    os.makedirs(job_dir, exist_ok=True)
    hvd.barrier()
    events = recovery_times(job_dir)
    if hvd.rank() == 0:
        print("recovery (kill -> reset done -> first step completed on the survivors):")
        for event in events:
            print(f"  to {event['size']} rank(s): reset {event['reset']:.3f} s, "
                  f"resumed {event['resumed']:.3f} s")
        resumed = [event["resumed"] for event in events]
        print(f"  median resumed: {statistics.median(resumed):.3f} s")


if __name__ == "__main__":
    main()
