"""One tensor allreduced through the engine alone, fused at every position among tensors of
awkward sizes (submitted asynchronously in one burst), and inside grouped allreduces, for
several dtypes, ops and scalings: the digest of its result in every layout, which must agree."""
import hashlib
import time

import numpy as np

import dist_sync as ds
from tests.support.reference import compare, make_input
from tests.support.worker import Registry

SEED = 11
TARGET = 100003
FILLERS = [1, 7, 97, 1009, 65537]
CASES = [("float32", "sum", ds.Sum, 1.0, 1.0), ("float32", "average", ds.Average, 1.0, 1.0),
         ("float64", "product", ds.Product, 1.0, 1.0), ("float16", "sum", ds.Sum, 0.5, 3.0),
         ("float32", "min", ds.Min, 1.0, 1.0), ("float64", "max", ds.Max, 1.0, 1.0)]
check = Registry()


def fused(target, fillers, position, op, pre, post, name):
    """target submitted at `position` among the fillers in one burst; its result."""
    order = fillers[:position] + [target] + fillers[position:]
    handles = [ds.allreduce_async(x, op=op, name=f"{name}.{i}", prescale_factor=pre,
                                  postscale_factor=post) for i, x in enumerate(order)]
    results = [ds.synchronize(h) for h in handles]
    return results[position]


@check
def layouts(args):
    """The target's digest in every layout; `delay` seconds of sleep on rank 1 before each
    submission burst shifts which tensors meet in one cycle."""
    rank, size = ds.rank(), ds.size()
    delay = float(args.get("delay", 0.0))
    failures, digests = [], {}
    for dtype, op_name, op, pre, post in CASES:
        inputs = [make_input(SEED, r, TARGET, dtype, op_name) for r in range(size)]
        fillers = [make_input(SEED + 1, rank, n, dtype, op_name) for n in FILLERS]
        layouts = {}
        layouts["alone"] = ds.allreduce(inputs[rank], op=op, name=f"{dtype}.{op_name}.alone",
                                        prescale_factor=pre, postscale_factor=post)
        for position in range(len(FILLERS) + 1):
            if rank == 1:
                time.sleep(delay)
            key = f"fused.{position}"
            layouts[key] = fused(inputs[rank], fillers, position, op, pre, post,
                                 f"{dtype}.{op_name}.{key}")
            grouped = ds.grouped_allreduce(fillers[:position] + [inputs[rank]] + fillers[position:],
                                           op=op, name=f"{dtype}.{op_name}.grouped.{position}",
                                           prescale_factor=pre, postscale_factor=post)
            layouts[f"grouped.{position}"] = grouped[position]
        for key, out in layouts.items():
            problem = compare(out, inputs, dtype, op_name, prescale=pre, postscale=post)
            if problem:
                failures.append(f"{dtype} {op_name} {key}: {problem}")
        bits = {key: hashlib.sha256(out.tobytes()).hexdigest() for key, out in layouts.items()}
        differing = sorted(key for key, value in bits.items() if value != bits["alone"])
        if differing:
            failures.append(f"{dtype} {op_name}: {differing} differ from the tensor alone")
        digests[f"{dtype}.{op_name}"] = bits["alone"]
    return {"failures": failures, "digest": hashlib.sha256(repr(sorted(digests.items())).encode()).hexdigest()}


if __name__ == "__main__":
    check.main()
