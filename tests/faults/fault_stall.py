"""The last rank stalls (sleeps) before an allreduce the others already wait in.

args: {"cached": bool, "sleep": seconds, "info_dir": path, "token": unique string}
With "cached", every rank has reduced "stalled.tensor" once before, so the stalled round is
negotiated through the response cache's bit vectors (Note [Response cache]) rather than the
coordinator's table: warning and timeout must still name the tensor and the missing rank.
Ranks record the error they got (None if the allreduce completed after the stall).
"""
import json
import sys
import time

import numpy as np

import dist_sync as ds
from tests.support import hooks
from tests.support.worker import record
from tests.support.faults import record_process


def run(args: dict) -> None:
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
        record(True, {"error": str(error), "cache_hits": None})
        ds.shutdown()
        return
    record(True, {"error": None, "cache_hits": hooks.engine_stats()["cache_hits"]})
    ds.shutdown()


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
