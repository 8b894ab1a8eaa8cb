"""join, shutdown by one rank while another waits, and idle CPU of an initialised engine."""
import os
import time

import numpy as np

import dist_sync as ds
from tests.support.worker import main


def cpu_seconds():
    with open(f"/proc/{os.getpid()}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def join_case():
    rank, size = ds.rank(), ds.size()
    batches = rank + 1  # rank r runs out of data after r+1 steps
    results = []
    for step in range(batches):
        results.append(ds.allreduce(np.full(3, float(rank + 1)), op=ds.Sum, name="grad").tolist())
        results.append(ds.allreduce(np.full(2, 1.0), op=ds.Average, name="avg").tolist())
    last = ds.join()
    return {"results": results, "last": last}


def run(args):
    ds.init()
    case = args["case"]
    if case == "join":
        out = join_case()
        out["after"] = ds.allreduce(np.ones(1), op=ds.Sum).tolist()  # everyone is back
        ds.shutdown()
        return out
    if case == "idle":
        time.sleep(0.5)
        start_cpu, start = cpu_seconds(), time.monotonic()
        time.sleep(args.get("seconds", 4.0))
        used = (cpu_seconds() - start_cpu) / (time.monotonic() - start)
        ds.barrier()
        ds.shutdown()
        return {"cpu_fraction": used}
    if case == "shutdown":
        if ds.rank() == 0:
            time.sleep(0.5)
            ds.shutdown()
            return {}
        try:
            ds.allreduce(np.ones(2), name="left.behind")
        except ds.DistSyncError as error:
            message = str(error)
        else:
            raise AssertionError("allreduce succeeded although rank 0 shut down")
        try:
            ds.allreduce(np.ones(2), name="after")
        except ds.DistSyncError as error:
            later = str(error)
        return {"message": message, "later": later}
    raise ValueError(case)


if __name__ == "__main__":
    main(run)
