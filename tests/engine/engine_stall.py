"""One rank never submits a tensor the others wait for."""
import time

import numpy as np

import dist_sync as ds
from tests.support.worker import main


def run(args):
    ds.init()
    rank = ds.rank()
    np.testing.assert_array_equal(ds.allreduce(np.ones(2), op=ds.Sum, name="warmup"),
                                  np.full(2, float(ds.size())))
    if rank == ds.size() - 1:
        time.sleep(args["sleep"])  # the stalled rank
    try:
        ds.allreduce(np.ones(2), name="stalled.tensor")
        ds.allreduce(np.ones(2), name="warmup")  # cached path too
    except ds.DistSyncError as error:
        ds.shutdown()
        return {"error": str(error)}
    ds.shutdown()
    return {"error": None}


if __name__ == "__main__":
    main(run)
