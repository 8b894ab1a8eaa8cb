"""Named collectives for the timeline tests: with DIST_SYNC_TIMELINE set, with a timeline started
and stopped from Python, or in a job whose rank 0 is killed after its events were flushed. The
test reads the file rank 0 wrote."""
import os
import signal
import time

import numpy as np

import dist_sync as ds
from tests.support.worker import Registry

check = Registry()

# The engine flushes buffered events when an event arrives more than this long after the last
# flush (csrc/engine/timeline.cc); waiting longer guarantees the next event flushes.
FLUSH_INTERVAL_S = 0.2


def collectives(prefix: str, rounds: int = 2) -> list:
    """A few named collectives of each kind; returns the names used."""
    names = []
    for step in range(rounds):
        for index in range(3):
            name = f"{prefix}.allreduce.{index}"
            out = ds.allreduce(np.full(1000 * (index + 1), ds.rank() + 1, dtype=np.float32),
                               op=ds.Sum, name=name)
            assert out[0] == ds.size() * (ds.size() + 1) / 2, out[0]
            names.append(name)
        # Large enough for the ring (above DIST_SYNC_SMALL_ALLREDUCE_BYTES).
        name = f"{prefix}.ring.0"
        big = ds.allreduce(np.full(1 << 20, ds.rank() + 1, dtype=np.float32), op=ds.Sum, name=name)
        assert big[-1] == ds.size() * (ds.size() + 1) / 2, big[-1]
        names.append(name)
        handles = [ds.allreduce_async_(np.ones(64, dtype=np.float32), op=ds.Sum,
                                       name=f"{prefix}.async.{i}") for i in range(4)]
        for handle in handles:
            ds.synchronize(handle)
        names += [f"{prefix}.async.{i}" for i in range(4)]
        name = f"{prefix}.broadcast"
        ds.broadcast(np.arange(10, dtype=np.int32) + ds.rank(), root_rank=0, name=name)
        names.append(name)
        name = f"{prefix}.allgather.{step}"  # allgather is not cached; a fresh name each step
        ds.allgather(np.full(3, ds.rank(), dtype=np.int64), name=name)
        names.append(name)
    return sorted(set(names))


@check
def from_environment():
    """The timeline DIST_SYNC_TIMELINE names."""
    return {"names": collectives("env")}


@check
def started_and_stopped(args):
    """start_timeline(args["path"]), stop, then again into args["path2"]."""
    ds.start_timeline(args["path"])
    first = collectives("api")
    ds.stop_timeline()
    collectives("after_stop", rounds=1)  # must not reach either file
    ds.start_timeline(args["path2"])     # started again from Python: a second file
    second = collectives("again", rounds=1)
    ds.stop_timeline()
    return {"names": {"first": first, "second": second}}


@check.scenario
def rank_0_killed():
    """Rank 0 is killed after its events were flushed (and more were buffered)."""
    ds.init()
    collectives("kill")
    time.sleep(FLUSH_INTERVAL_S * 2)
    ds.allreduce(np.ones(4, dtype=np.float32), op=ds.Sum, name="kill.flush")  # flushes
    # More events that stay in the writer's buffer when the process dies.
    collectives("unflushed", rounds=1)
    if ds.rank() == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)  # mpirun ends this rank once rank 0 is gone; the test's timeout backs it


if __name__ == "__main__":
    check.main()
