"""The engine driven from several Python threads at once: concurrent submissions, handles
synchronized and polled by another thread than the one that made them, and shutdown() racing a
thread that keeps submitting. Under ThreadSanitizer (make sanitize) this is the engine's
threading test; normally it checks that results stay right and nothing hangs."""
import queue
import threading

import numpy as np

import dist_sync as ds
from tests.support.worker import Registry

check = Registry()


@check.scenario
def many_threads(args):
    """args: {"threads": int, "ops": int (per thread)}; ends with shutdown() racing a thread."""
    ds.init()
    rank, size = ds.rank(), ds.size()
    threads, per_thread = args["threads"], args["ops"]
    errors = []
    results = {}
    handed_over = queue.Queue()

    def producer(t: int) -> None:
        # Every rank submits the same names, in an order that depends on thread scheduling.
        try:
            for i in range(per_thread):
                data = np.full(1 + (i % 7) * 300, float(rank + t + i), dtype=np.float32)
                handle = ds.allreduce_async(data, op=ds.Sum, name=f"thread{t}.op{i}")
                if i % 2:
                    handed_over.put((t, i, handle))  # the consumer thread finishes it
                else:
                    results[(t, i)] = ds.synchronize(handle)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(f"producer {t}: {error!r}")
        finally:
            handed_over.put(None)

    def consumer() -> None:
        finished = 0
        try:
            while finished < threads:
                item = handed_over.get()
                if item is None:
                    finished += 1
                    continue
                t, i, handle = item
                while not ds.poll(handle):
                    pass
                results[(t, i)] = ds.synchronize(handle)
        except BaseException as error:  # noqa: BLE001
            errors.append(f"consumer: {error!r}")

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    workers.append(threading.Thread(target=consumer))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors
    for t in range(threads):
        for i in range(per_thread):
            expected = sum(float(r + t + i) for r in range(size))
            got = results[(t, i)]
            assert got.shape == (1 + (i % 7) * 300,) and np.all(got == expected), (t, i, got[:3])

    # shutdown() while another thread keeps submitting: its operations either complete or fail
    # with DistSyncError naming the shutdown; the thread ends, nothing hangs.
    ds.barrier()
    stop = threading.Event()
    outcomes = {"completed": 0, "failed": 0, "unexpected": []}

    def submitter() -> None:
        i = 0
        while not stop.is_set():
            try:
                ds.allreduce(np.ones(64, dtype=np.float32), op=ds.Sum, name=f"racing{i}")
                outcomes["completed"] += 1
            except ds.DistSyncError as error:
                text = str(error)
                if "shut down" not in text and "not running" not in text \
                        and "shutting down" not in text and "not initialized" not in text:
                    outcomes["unexpected"].append(text)
                outcomes["failed"] += 1
                return
            i += 1

    racer = threading.Thread(target=submitter)
    racer.start()
    ds.shutdown()
    stop.set()
    racer.join()
    assert not outcomes["unexpected"], outcomes
    return {"ops": len(results), "racing_completed": outcomes["completed"],
            "racing_failed": outcomes["failed"]}


if __name__ == "__main__":
    check.main()
