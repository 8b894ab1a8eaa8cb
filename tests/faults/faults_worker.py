"""Fault scenarios: a rank dies, raises or stalls under mpirun, and lone processes (no mpirun)
that are singletons or receive SIGTERM. Each scenario owns its process: the tests assert on
the exit code and output as well as on what the ranks recorded.

Scenarios under mpirun take {"info_dir": path, "token": unique string} besides their own
arguments: every rank records its pid and /dev/shm files in info_dir (record_process), and the
token on the command line lets the test find leftover processes.
"""
import os
import signal
import sys
import threading
import time

import numpy as np

import dist_sync as ds
from tests.support import hooks
from tests.support.faults import mapped_shm_files, record_process
from tests.support.worker import Registry, world_rank

check = Registry()
LARGE_ELEMENTS = 16 << 20  # float32: 64 MiB


def die(how: str) -> None:
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)


@check.scenario
def dead_rank(args):
    """One rank dies while the others wait for it: SIGKILL or os._exit(1), during a small
    allreduce (the others are already waiting in it) or in the middle of a 64 MiB one (every
    rank is inside the ring). Ranks that live on record the error dist_sync raised, if any
    reaches them (under plain mpirun they are ended by mpirun's SIGTERM first), and exit
    non-zero.

    args: {"how": "sigkill" | "exit", "during": "small" | "large", "victim": int}
    """
    ds.init()
    rank, size = ds.rank(), ds.size()
    victim = args["victim"]
    during = args["during"]
    count = LARGE_ELEMENTS if during == "large" else 2
    data = np.ones(count, dtype=np.float32)
    # A first collective of the same size maps MPI's segments before they are recorded.
    np.testing.assert_array_equal(ds.allreduce(data, op=ds.Sum, name="warmup")[:2], [size, size])
    record_process(args["info_dir"])
    if rank == victim and during == "small":
        time.sleep(1.0)  # the others are waiting in grad.small by now
        die(args["how"])
    in_flight = threading.Event()
    if rank == victim:
        # Dies while its own allreduce runs: 20 ms after submitting the third large one, which
        # takes ~100 ms here, so every rank is inside the ring.
        threading.Thread(target=lambda: (in_flight.wait(), time.sleep(0.02), die(args["how"])),
                         daemon=True).start()
    try:
        if during == "small":
            ds.allreduce(data, name="grad.small")
        else:
            for step in range(1000):
                handle = ds.allreduce_async(data, op=ds.Sum, name="grad.large")
                if step == 2:
                    in_flight.set()
                np.testing.assert_array_equal(ds.synchronize(handle)[:2], [size, size])
    except ds.DistSyncError as error:
        check.record({"error": str(error)})
        sys.exit(3)
    raise AssertionError("the collective succeeded although a rank died")


def numpy_training(args: dict) -> None:
    ds.init()
    rank = ds.rank()
    for step in range(100):
        if step == 1:
            record_process(args["info_dir"])
        if rank == args["victim"] and step == args["step"]:
            if args["framework"] == "thread":
                wait_in_a_thread(ds.allreduce_async(np.ones(4), name="only.on.the.victim"))
            raise ValueError(f"bad batch {step}")
        ds.allreduce(np.full(1000, float(step)), name="grad.fc")


def wait_in_a_thread(handle: ds.Handle) -> None:
    """A non-daemon thread waits on an operation no other rank submits: the interpreter joins it
    before exiting, so the rank only exits once its engine has failed that wait."""
    def wait() -> None:
        try:
            ds.synchronize(handle)
        except ds.DistSyncError as error:
            print(f"waiting thread: {error}", flush=True)

    threading.Thread(target=wait).start()


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


@check.scenario
def exception_in_training(args):
    """One rank raises an uncaught exception in the middle of training (a bad batch); the others
    must fail with an error naming that rank and its exception, not hang. numpy: a loop of named
    allreduces. torch: a small model trained with DistributedOptimizer; the victim raises between
    forward and backward, while the others' gradients are in flight. Ranks that live on record
    the error they got and re-raise it, as a real script would.

    args: {"framework": "numpy" | "torch" | "thread", "victim": int, "step": int (the bad batch)};
    "thread" is numpy with a thread of the victim waiting on a handle when its main thread dies.
    """
    train = torch_training if args["framework"] == "torch" else numpy_training
    if world_rank() == args["victim"]:
        train(args)  # raises: uncaught, so dist_sync's excepthook and atexit report it
    try:
        train(args)
    except Exception as error:  # noqa: BLE001 - whatever the framework wraps it in
        check.record({"error": f"{type(error).__name__}: {error}"})
        raise
    raise AssertionError("training finished although a rank raised")


@check.scenario
def stall(args):
    """The last rank stalls (sleeps) before an allreduce the others already wait in. With
    "cached", every rank has reduced "stalled.tensor" once before, so the stalled round is
    negotiated through the response cache's bit vectors (Note [Response cache]) rather than the
    coordinator's table: warning and timeout must still name the tensor and the missing rank.
    Ranks record the error they got (None if the allreduce completed after the stall).

    args: {"cached": bool, "sleep": seconds}
    """
    ds.init()
    rank, size = ds.rank(), ds.size()
    warmup = "stalled.tensor" if args["cached"] else "warmup"
    np.testing.assert_array_equal(ds.allreduce(np.ones(2), op=ds.Sum, name=warmup),
                                  np.full(2, float(size)))
    record_process(args["info_dir"])
    if rank == size - 1:
        time.sleep(args["sleep"])
    try:
        result = ds.allreduce(np.ones(2), op=ds.Sum, name="stalled.tensor")
        np.testing.assert_array_equal(result, np.full(2, float(size)))
    except ds.DistSyncError as error:
        check.record({"error": str(error), "cache_hits": None})
        ds.shutdown()
        return
    check.record({"error": None, "cache_hits": hooks.engine_stats()["cache_hits"]})
    ds.shutdown()


@check.scenario
def singleton():
    """`python train.py` without mpirun: one allreduce; the /dev/shm files the process maps."""
    ds.init()
    assert ds.allreduce(np.ones(3), op=ds.Sum).tolist() == [1.0, 1.0, 1.0]
    return mapped_shm_files()


@check.scenario
def sigterm(args):
    """One process (no mpirun) that receives SIGTERM in a given situation, for the SIGTERM
    report tests (Note [Saying why mpirun ended a rank]). Prints "ready" once set up, then waits.

    args: {"mode": "running" (dist_sync initialised), "user_handler" (the script installed its
    own SIGTERM handler first), "forked_child" (a child forked after init() gets the signal; the
    parent reports how it ended), "after_shutdown" (dist_sync was shut down before)}
    """
    mode = args["mode"]
    if mode == "user_handler":
        signal.signal(signal.SIGTERM, lambda *_: (print("user handler ran", flush=True), os._exit(7)))
    ds.init()
    if mode == "after_shutdown":
        ds.shutdown()
    if mode == "forked_child":
        child = os.fork()
        if child == 0:
            time.sleep(60)
            os._exit(0)
        time.sleep(0.2)
        os.kill(child, signal.SIGTERM)
        _, status = os.waitpid(child, 0)
        print(f"child ended by signal {os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}",
              flush=True)
        ds.shutdown()
        return
    print("ready", flush=True)
    time.sleep(60)


@check.scenario
def interrupted_wait(args):
    """The last rank waits for an operation nobody else submits and gets Ctrl-C (SIGINT from a
    timer): it must raise KeyboardInterrupt promptly, not when the stall timeout ends the wait,
    and die of it as a script would; the others, waiting for it, fail with an error saying that
    rank was interrupted.
    """
    ds.init()
    rank, size = ds.rank(), ds.size()
    record_process(args["info_dir"])
    if rank == size - 1:
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            ds.allreduce(np.ones(2), name="never.submitted.elsewhere")
        except KeyboardInterrupt:
            check.record({"interrupted": True})
            raise
        raise AssertionError("the wait returned although only this rank submitted")
    try:
        ds.allreduce(np.ones(2), name="waits.for.the.last.rank")
    except ds.DistSyncError as error:
        check.record({"error": str(error)})
        raise
    raise AssertionError("the allreduce completed without the interrupted rank")


@check.scenario
def init_alone(args):
    """Every rank runs a session and shuts down; then only rank 0 calls init() again. It must
    fail after DIST_SYNC_INIT_TIMEOUT_SECONDS with a message saying init() is collective (and
    Ctrl-C must be able to end the wait: a second run interrupts instead, with "interrupt")."""
    ds.init()
    np.testing.assert_array_equal(ds.allreduce(np.ones(2), op=ds.Sum, name="first"),
                                  np.full(2, float(ds.size())))
    ds.shutdown()
    if world_rank() != 0:
        return {"rank": world_rank()}
    if args.get("interrupt"):
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        ds.init()
    except ds.DistSyncError as error:
        return {"error": str(error)}
    except KeyboardInterrupt:
        return {"interrupted": True}
    return {"error": None}


if __name__ == "__main__":
    check.main()
