"""A randomized batch of operations through the engine (test_random_mpi.py draws it).

args: {"seed": int, "rounds": int, "ops": [{"kind", "dtype", "count", "op", "name", "pre",
       "post", "root", "fate"}]}. Every round submits every op asynchronously, named ones in an
order that differs by rank (negotiation must pair them), then synchronizes them in another order.
Each rank regenerates every rank's input, so it checks its results against numpy by itself; the
digest of the results that must be identical everywhere lets the test compare ranks bitwise.

An op's fate says what happens to its handle: "sync" (synchronized once), "drop" (the handle and
the op's input are dropped at once and collected: the engine must still run it on memory that
stays alive), "threads" (two threads synchronize it at the same time: one gets the result, the
other a ValueError). The scenario `interrupted_batch` runs the same batch while one rank gets
Ctrl-C at a random moment.
"""
import gc
import hashlib
import os
import random
import signal
import threading
from typing import Any, Dict, List, Tuple

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


def synchronize_from_two_threads(handle: ds.Handle, label: str) -> Any:
    """Both threads wait on the handle at once; exactly one may get the result."""
    outcomes: List[Tuple[str, Any]] = []
    start = threading.Barrier(2)

    def wait() -> None:
        try:
            start.wait()
        except threading.BrokenBarrierError:  # the other thread never started
            return
        try:
            outcomes.append(("result", ds.synchronize(handle)))
        except ValueError as error:
            outcomes.append(("refused", str(error)))
        except ds.DistSyncError as error:  # the operation failed (a peer was interrupted)
            outcomes.append(("failed", error))

    threads = [threading.Thread(target=wait) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
    except BaseException:  # Ctrl-C between the two starts: release the thread already waiting
        start.abort()
        raise
    for thread in threads:
        thread.join()
    kinds = sorted(kind for kind, _ in outcomes)
    if "failed" in kinds:
        assert kinds == ["failed", "refused"], f"{label}: two threads got {outcomes}"
        raise dict(outcomes)["failed"]
    assert kinds == ["refused", "result"], f"{label}: two threads got {outcomes}"
    assert "synchronized once" in dict(outcomes)["refused"], f"{label}: {outcomes}"
    return dict(outcomes)["result"]


@check
def random_batch(args):
    return run_batch(args)


@check.scenario
def interrupted_batch(args):
    """The batch, while rank args["victim"] sends itself SIGINT after args["delay"] seconds
    (wherever it is: submitting, waiting, checking). If the batch ends first, every rank records
    {"completed": True}; otherwise the victim dies of KeyboardInterrupt as a script would and the
    others either finished or fail with an error naming it."""
    ds.init()
    timer = None
    try:
        if ds.rank() == args["victim"]:
            timer = threading.Timer(args["delay"], os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
        run_batch(args)
        if timer is not None:
            timer.cancel()
            timer.join()
    except KeyboardInterrupt:
        check.record({"interrupted": True})
        raise
    except ds.DistSyncError as error:
        check.record({"error": str(error)})
        raise
    check.record({"completed": True})
    ds.shutdown()
    return {"completed": True}


def run_batch(args: Dict[str, Any]) -> Dict[str, Any]:
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
            if name is not None and op.get("fate") == "drop":
                # A dropped op may still be in flight when the next round submits its name again.
                name = f"{name}.round{round_}"
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
            if op.get("fate") == "drop":
                del handles[i], expected[i]
                if kind == "allreduce_":
                    del buffer
                gc.collect()
        identical = {}  # op index -> result bytes that must match on every rank
        for i in shuffle.sample(sorted(handles), len(handles)):
            op = ops[i]
            kind, dtype = op["kind"], op["dtype"]
            label = f"round {round_} op {i} {op}"
            if op.get("fate") == "threads":
                result = synchronize_from_two_threads(handles[i], label)
            else:
                result = ds.synchronize(handles[i])
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
    # A rank whose kept ops are done may otherwise shut down while another still submits its
    # dropped ones (which that rank never waits for): the others then rightly fail.
    ds.barrier()
    stats = hooks.engine_stats()
    return {"digest": digest.hexdigest(), "checked": checked, "executions": stats["executions"],
            "requests": stats["requests"]}


if __name__ == "__main__":
    check.main()
