"""Rank args["fail_rank"] raises after one successful allreduce; the others then block in a
second allreduce that can never complete. mpirun must end the job on every host."""
import numpy as np

import dist_sync as ds
from tests.support.worker import main


def run(args):
    ds.init()
    total = ds.allreduce(np.ones(1000, dtype=np.float32), op=ds.Sum, name="before")
    assert total[0] == ds.size(), total[0]
    if ds.rank() == args["fail_rank"]:
        import socket
        raise ValueError(f"deliberate failure on {socket.gethostname()} (rank {ds.rank()})")
    ds.allreduce(np.ones(1000, dtype=np.float32), op=ds.Sum, name="never")
    return "unreachable"


if __name__ == "__main__":
    main(run)
