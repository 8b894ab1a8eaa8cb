"""dist_sync.dask.run's checks of the cluster, and its wait for its tasks, which fails instead of
hanging when a worker leaves or the timeout passes. A fake client stands in for clusters that
cannot be made under one mpirun (workers outside MPI; a lost worker rank ends the whole job)."""
from __future__ import annotations

import pytest

pytest.importorskip("distributed")

import distributed  # noqa: E402

from dist_sync.dask import runner  # noqa: E402
from dist_sync.launch import JobError  # noqa: E402


class FakeClient:
    def __init__(self, workers, identities=None):
        self.workers = dict.fromkeys(workers, 1)
        self.identities = identities or {}
        self.cancelled = None

    def run(self, fn, workers=None):
        return {w: i for w, i in self.identities.items() if workers is None or w in workers}

    def nthreads(self):
        return self.workers

    def cancel(self, tasks):
        self.cancelled = list(tasks)


@pytest.fixture
def never_done(monkeypatch):
    def wait(tasks, timeout=None):
        raise TimeoutError

    monkeypatch.setattr(distributed, "wait", wait)
    monkeypatch.setattr(runner, "_WATCH_SECONDS", 0.01)


def test_a_worker_that_leaves_fails_the_job(never_done):
    client = FakeClient(["tcp://a:1"])
    with pytest.raises(JobError, match=r"dist_sync\.dask\.run\(train\): worker tcp://b:2 \(rank 1\)"
                                       r" left the cluster while the job ran; the job was "
                                       r"cancelled"):
        runner._wait(client, ["t0", "t1"], ["tcp://a:1", "tcp://b:2"], None, "train")
    assert client.cancelled == ["t0", "t1"]


def test_the_timeout_cancels_the_tasks(never_done):
    client = FakeClient(["tcp://a:1"])
    with pytest.raises(TimeoutError, match=r"dist_sync\.dask\.run\(train\) did not finish "
                                           r"within 0\.05 s; its tasks were cancelled"):
        runner._wait(client, ["t0"], ["tcp://a:1"], 0.05, "train")
    assert client.cancelled == ["t0"]


def identity(rank, size=5, running=False):
    return {"rank": rank, "size": size, "host": "h", "pid": 1, "running": running}


def test_workers_in_rank_order():
    client = FakeClient(["tcp://b:2", "tcp://a:1"], {"tcp://b:2": identity(2),
                                                     "tcp://a:1": identity(3)})
    assert list(runner.worker_ranks(client).items()) == [("tcp://b:2", 2), ("tcp://a:1", 3)]
    assert runner.worker_ranks(client, ["tcp://a:1"]) == {"tcp://a:1": 3}


@pytest.mark.parametrize("identities,kind,message", [
    ({"tcp://a:1": identity(0, size=1), "tcp://b:2": identity(0, size=1)}, RuntimeError,
     "needs Dask workers that are ranks of one MPI job, started with dask-mpi"),
    ({"tcp://a:1": identity(2), "tcp://b:2": identity(2)}, RuntimeError,
     "tcp://a:1 is rank 2 of 5, tcp://b:2 is rank 2 of 5"),
    ({"tcp://a:1": identity(2), "tcp://b:2": {"error": "mpi4py is not installed on this "
                                                       "worker (No module named 'mpi4py')"}},
     RuntimeError, "dist_sync.dask needs mpi4py on every worker: tcp://b:2: mpi4py is not"),
    ({"tcp://a:1": identity(2), "tcp://b:2": identity(3, running=True)}, RuntimeError,
     "dist_sync is already running on worker(s) tcp://b:2: one dist_sync.dask.run at a time"),
])
def test_clusters_dist_sync_cannot_run_on(identities, kind, message):
    with pytest.raises(kind, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.")):
        runner.worker_ranks(FakeClient(list(identities), identities))


def test_an_empty_cluster():
    with pytest.raises(ValueError, match="the Dask cluster has no workers"):
        runner.worker_ranks(FakeClient([]))
