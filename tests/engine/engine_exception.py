"""Rank 1 dies of an uncaught exception while rank 0 waits for it in an allreduce."""
import numpy as np

import dist_sync as ds
from tests.support.worker import record

ds.init()
if ds.rank() == 1:
    record(True, {"raised": True})
    raise ValueError("bad batch 17")  # uncaught: excepthook, then atexit shuts the engine down
try:
    ds.allreduce(np.ones(2), name="grad.fc")
    record(True, {"error": None})
except ds.DistSyncError as error:
    record(True, {"error": str(error)})
