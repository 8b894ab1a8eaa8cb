"""One rank dies while the others wait for it: SIGKILL or os._exit(1), during a small allreduce
(the others are already waiting in it) or in the middle of a 64 MiB one (every rank is inside
the ring). Ranks that live on record the error dist_sync raised, if any reaches them (under
plain mpirun they are ended by mpirun's SIGTERM first), and exit non-zero.

args: {"how": "sigkill" | "exit", "during": "small" | "large", "victim": int,
       "info_dir": path, "token": unique string (lets the test find leftover processes)}
"""
import os
import signal
import sys
import threading
import time

import numpy as np

import dist_sync as ds
from tests.support.worker import record
from tests.support.faults import record_process

LARGE_ELEMENTS = 16 << 20  # float32: 64 MiB


def die(how: str) -> None:
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)


def run(args: dict) -> None:
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
        record(True, {"error": str(error)})
        sys.exit(3)
    record(False, error="the collective succeeded although a rank died")
    sys.exit(4)


if __name__ == "__main__":
    import json
    run(json.loads(sys.argv[1]))
