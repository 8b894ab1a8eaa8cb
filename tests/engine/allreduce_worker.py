"""Every dtype x op x size through the engine's numpy allreduce, checked against numpy float64 on
each rank, plus a digest so the test can check results are bit-identical across ranks."""
import hashlib

import numpy as np

import dist_sync as ds
from tests.support.reference import DTYPES, OPS, compare, make_input, storage_dtype
from tests.support.worker import Registry

SEED = 7
OP_OBJECTS = {"sum": ds.Sum, "min": ds.Min, "max": ds.Max, "product": ds.Product,
              "average": ds.Average}
check = Registry()


@check
def sweep(args):
    """args: {"dtypes": [...], "counts": [...]} (default: every dtype, sizes around N)."""
    rank, size = ds.rank(), ds.size()
    counts = args.get("counts") or [0, 1, size - 1, size + 1, 13, 1009, 70001]
    failures, digest = [], hashlib.sha256()
    for dtype in args.get("dtypes") or DTYPES:
        if dtype == "bfloat16":
            continue  # numpy has no bfloat16; covered through torch and the thread tests
        for op in OPS:
            for count in counts:
                inputs = [make_input(SEED, r, count, dtype, op) for r in range(size)]
                mine = inputs[rank].astype(storage_dtype(dtype))
                for in_place in (False, True):
                    name = f"{dtype}.{op}.{count}.{in_place}"
                    if in_place:
                        out = ds.allreduce_(mine.copy(), op=OP_OBJECTS[op], name=name)
                    else:
                        out = ds.allreduce(mine, op=OP_OBJECTS[op], name=name)
                    problem = compare(out, inputs, dtype, op)
                    if problem:
                        failures.append(f"{name}: {problem}")
                    digest.update(out.tobytes())
    return {"failures": failures, "digest": digest.hexdigest()}


if __name__ == "__main__":
    check.main()
