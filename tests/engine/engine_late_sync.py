"""Rank 1 synchronizes a completed operation only after rank 0 has shut down."""
import time

import numpy as np

import dist_sync as ds
from tests.support.worker import main


def run(args):
    ds.init()
    handle = ds.allreduce_async(np.full(3, ds.rank() + 1.0), op=ds.Sum, name="last.step")
    if ds.rank() == 0:
        value = ds.synchronize(handle)
        ds.shutdown()
        return {"value": value.tolist()}
    while not ds.poll(handle):
        time.sleep(0.01)
    time.sleep(1.0)  # rank 0 shuts down meanwhile
    value = ds.synchronize(handle)
    try:
        ds.allreduce(np.ones(1))
    except ds.DistSyncError as error:
        later = str(error)
    return {"value": value.tolist(), "later": later}


if __name__ == "__main__":
    main(run)
