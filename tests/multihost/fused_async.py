"""Many small named tensors submitted asynchronously before any is waited for (the engine fuses
what is ready together), synchronized in reverse order, checked against numpy; repeated so that
later rounds go through the response cache. Rank 0 also reports, from the engine's timeline, how
many requests the largest fused allreduce carried."""
import hashlib
import json
import os

import numpy as np

import dist_sync as ds
from tests.support.worker import main
from tests.support.reference import compare, make_input, storage_dtype

DTYPES = ["float32", "float64", "int32", "float16", "int64", "uint8"]
OPS = {"sum": ds.Sum, "average": ds.Average, "max": ds.Max, "min": ds.Min}


def tensor_plan(count: int, seed: int):
    """(name, dtype, op, element count) of each tensor, the same on every rank."""
    rng = np.random.default_rng(seed)
    plan = []
    for index in range(count):
        dtype = DTYPES[index % len(DTYPES)]
        op = list(OPS)[(index // len(DTYPES)) % len(OPS)]
        plan.append((f"grad.{index}", dtype, op, int(rng.integers(1, 4000))))
    return plan


def run(args):
    timeline = None
    if args.get("timeline"):
        timeline = os.path.join(os.environ["DIST_SYNC_TEST_OUT"], "timeline.json")
    ds.init(timeline=timeline)  # rank 0 writes it
    rank, size = ds.rank(), ds.size()
    plan = tensor_plan(args.get("tensors", 240), seed=11)
    failures, digest = [], hashlib.sha256()
    for round_ in range(args.get("rounds", 3)):
        pending = []
        for index, (name, dtype, op, count) in enumerate(plan):
            seed = 1000 * round_ + index
            inputs = [make_input(seed, r, count, dtype, op) for r in range(size)]
            mine = inputs[rank].astype(storage_dtype(dtype))
            if index % 2:
                handle = ds.allreduce_async_(mine, op=OPS[op], name=name)
            else:
                handle = ds.allreduce_async(mine, op=OPS[op], name=name)
            pending.append((name, dtype, op, inputs, handle))
        for name, dtype, op, inputs, handle in reversed(pending):
            out = ds.synchronize(handle)
            problem = compare(out, inputs, dtype, op)
            if problem:
                failures.append(f"round {round_} {name} ({dtype} {op}): {problem}")
            digest.update(out.tobytes())
    ds.shutdown()
    result = {"failures": failures, "digest": digest.hexdigest(), "tensors": len(plan)}
    if rank == 0 and timeline:
        with open(timeline) as handle:
            events = json.load(handle)
        fused = [e["args"]["fused_requests"] for e in events
                 if e.get("ph") == "X" and "fused_requests" in e.get("args", {})]
        result["max_fused_requests"] = max(fused, default=0)
        result["timeline_spans"] = len(fused)
    return result


if __name__ == "__main__":
    main(run)
