"""A first look at dist_sync: every rank contributes its rank number, everyone gets the sum.

    mpirun -np 2 python examples/allreduce_demo.py
"""
import numpy as np

import dist_sync as ds

ds.init()
rank, size = ds.rank(), ds.size()
values = np.full(4, rank + 1, dtype=np.float32)
total = ds.allreduce(values, op=ds.Sum, name="demo")
mean = ds.allreduce(values, name="demo.mean")  # Average is the default op
expected = size * (size + 1) / 2
assert np.all(total == expected), total
print(f"rank {rank}/{size}: sum={total.tolist()} average={mean.tolist()} "
      f"({ds.mpi_library_version()})", flush=True)
ds.shutdown()
