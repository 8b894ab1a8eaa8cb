"""A randomized batch of operations through the engine (test_random_mpi.py draws it).

args: {"seed": int, "rounds": int, "ops": [{"kind", "dtype", "count", "op", "name", "pre",
       "post", "root"}]}. Every round submits every op asynchronously, named ones in an order
that differs by rank (negotiation must pair them), then synchronizes them in another order. Each
rank regenerates every rank's input, so it checks its results against numpy by itself; the
digest of the results that must be identical everywhere lets the test compare ranks bitwise.
"""
import hashlib
import random

import numpy as np

import dist_sync as ds
from tests.support import hooks
from tests.support.reference import compare, make_input
from tests.support.worker import Registry

check = Registry()


def split_matrix(seed: int, index: int, size: int, limit: int) -> np.ndarray:
    """rows[s][d] sent from rank s to rank d; the same on every rank."""
    rng = np.random.default_rng([seed, index, 7])
    return rng.integers(0, limit + 1, size=(size, size))


@check
def random_batch(args):
    rank, size = ds.rank(), ds.size()
    seed, ops = args["seed"], args["ops"]
    digest = hashlib.sha256()
    checked = 0
    for round_ in range(args["rounds"]):
        shuffle = random.Random(seed * 1000 + round_ * 10 + rank)
        named = [i for i, op in enumerate(ops) if op["name"] is not None]
        reordered = iter(shuffle.sample(named, len(named)))
        # Unnamed ops are matched by the order of unnamed calls, so they keep their places.
        order = [i if ops[i]["name"] is None else next(reordered) for i in range(len(ops))]
        handles, expected = {}, {}
        for i in order:
            op = ops[i]
            kind, dtype, count = op["kind"], op["dtype"], op["count"]
            inputs = [make_input(seed + i, r, count, dtype, op["op"]) for r in range(size)]
            reduce_op = {"sum": ds.Sum, "average": ds.Average, "min": ds.Min, "max": ds.Max,
                         "product": ds.Product}[op["op"]]
            name = op["name"]
            if kind == "allreduce":
                handles[i] = ds.allreduce_async(inputs[rank], reduce_op, name, op["pre"], op["post"])
                expected[i] = (inputs, op["pre"], op["post"])
            elif kind == "allreduce_":
                buffer = inputs[rank].copy()
                handles[i] = ds.allreduce_async_(buffer, reduce_op, name, op["pre"], op["post"])
                expected[i] = (inputs, op["pre"], op["post"])
            elif kind == "grouped":
                halves = [inputs[rank][:count // 2], inputs[rank][count // 2:]]
                handles[i] = ds.grouped_allreduce_async(halves, reduce_op, name, op["pre"], op["post"])
                expected[i] = (inputs, op["pre"], op["post"])
            elif kind == "broadcast":
                root = op["root"] % size
                handles[i] = ds.broadcast_async(inputs[rank], root, name)
                expected[i] = inputs[root]
            elif kind == "allgather":
                rows = split_matrix(seed, i, size, count)[:, 0]
                mine = [make_input(seed + i, r, int(rows[r]), dtype, "sum") for r in range(size)]
                handles[i] = ds.allgather_async(mine[rank], name)
                expected[i] = np.concatenate(mine)
            elif kind == "alltoall":
                matrix = split_matrix(seed, i, size, count)
                mine = [make_input(seed + i, r, int(matrix[r].sum()), dtype, "sum") for r in range(size)]
                handles[i] = ds.alltoall_async(mine[rank], [int(x) for x in matrix[rank]], name)
                pieces = [mine[s][int(matrix[s, :rank].sum()):][:int(matrix[s, rank])] for s in range(size)]
                expected[i] = (np.concatenate(pieces), matrix[:, rank])
            elif kind == "reducescatter":
                handles[i] = ds.reducescatter_async(inputs[rank], reduce_op, name, op["pre"], op["post"])
                bounds = np.cumsum([0] + [count // size + (1 if r < count % size else 0) for r in range(size)])
                expected[i] = ([x[bounds[rank]:bounds[rank + 1]] for x in inputs], op["pre"], op["post"])
            else:
                raise ValueError(kind)
        identical = {}  # op index -> result bytes that must match on every rank
        for i in shuffle.sample(sorted(handles), len(handles)):
            op = ops[i]
            result = ds.synchronize(handles[i])
            kind, dtype = op["kind"], op["dtype"]
            label = f"round {round_} op {i} {op}"
            if kind in ("allreduce", "allreduce_", "grouped", "reducescatter"):
                if kind == "grouped":
                    result = np.concatenate(result)
                inputs, pre, post = expected[i]
                problem = compare(result, inputs, dtype, op["op"], pre, post)
                assert not problem, f"{label}: {problem}"
            elif kind == "alltoall":
                received, splits = result
                assert received.tobytes() == expected[i][0].tobytes(), label
                assert list(splits) == list(expected[i][1]), label
            else:
                assert result.tobytes() == expected[i].tobytes(), label
            if kind not in ("alltoall", "reducescatter"):  # those differ by rank by design
                identical[i] = np.ascontiguousarray(result).tobytes()
            checked += 1
        for i in sorted(identical):  # in op order: the synchronization order differs by rank
            digest.update(identical[i])
    stats = hooks.engine_stats()
    return {"digest": digest.hexdigest(), "checked": checked, "executions": stats["executions"],
            "requests": stats["requests"]}


if __name__ == "__main__":
    check.main()
