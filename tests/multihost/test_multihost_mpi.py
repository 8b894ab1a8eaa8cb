"""dist_sync across hosts: 2 (or 3) network-namespace hosts, ranks talking TCP over veth links.

Each run's worker computes its own reference (numpy or single-process torch); the tests check the
values, that ranks agree bit for bit, that the data really crossed the hosts' links (interface
byte counters), and that no process is left on any host afterwards.
"""
from __future__ import annotations

import importlib.util
import time
from typing import Dict, List, Tuple

import numpy as np
import pytest

from tests.multihost import cluster_harness as ch
from tests.multihost.netns import VirtualCluster
from tests.support.reference import DTYPES, OPS

WORKER = "tests.multihost.multihost_worker"
SWEEP = "tests.engine.allreduce_worker"


def assert_no_processes_left(cluster: VirtualCluster, timeout: float = 10.0) -> None:
    """mpirun, prted and every rank must be gone from every host once a run has returned."""
    deadline = time.monotonic() + timeout
    while cluster.pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.pids() == [], f"processes left on the hosts: {cluster.pids()}"


def traffic(before: Dict[str, Tuple[int, int]], after: Dict[str, Tuple[int, int]]) -> Dict[str, Tuple[int, int]]:
    return {host: (after[host][0] - before[host][0], after[host][1] - before[host][1])
            for host in before}


def test_topology_two_hosts_two_ranks(cluster2: VirtualCluster) -> None:
    results = ch.run_ok(cluster2, WORKER, 2, "topology", timeout=120)
    hosts = ch.host_of_rank([2, 2])
    for rank, info in enumerate(results):
        host = cluster2.hosts[hosts[rank]]
        assert info["rank"] == rank and info["size"] == 4
        assert info["hostname"] == host.name, info
        assert info["address"] == host.address and info["resolved"] == host.address, info
        assert (info["local_rank"], info["local_size"]) == (rank % 2, 2), info
        assert (info["cross_rank"], info["cross_size"]) == (hosts[rank], 2), info
        assert info["homogeneous"] is True
        assert info["all_hostnames"] == ["node0", "node0", "node1", "node1"]
        assert info["rank_sum"] == 0 + 1 + 2 + 3
    assert len({info["pid"] for info in results}) == 4
    assert_no_processes_left(cluster2)


def test_topology_uneven_three_hosts(cluster3: VirtualCluster) -> None:
    """2 + 1 + 1 ranks: local_size differs per host, so the job is not homogeneous, and the
    local_rank-1 "cross" group has only host 0's second rank."""
    layout = [2, 1, 1]
    results = ch.run_ok(cluster3, WORKER, layout, "topology", timeout=120)
    expected = [  # rank: (host, local_rank, local_size, cross_rank, cross_size)
        (0, 0, 2, 0, 3), (0, 1, 2, 0, 1), (1, 0, 1, 1, 3), (2, 0, 1, 2, 3)]
    for rank, info in enumerate(results):
        host, local_rank, local_size, cross_rank, cross_size = expected[rank]
        assert info["hostname"] == cluster3.hosts[host].name, info
        got = (info["local_rank"], info["local_size"], info["cross_rank"], info["cross_size"])
        assert got == (local_rank, local_size, cross_rank, cross_size), (rank, info)
        assert info["homogeneous"] is False
        assert info["all_hostnames"] == ["node0", "node0", "node1", "node2"]
    assert_no_processes_left(cluster3)


def sweep_payload_bytes(size: int, counts: List[int]) -> int:
    """Bytes of all the allreduce inputs of one rank in tests/engine/allreduce_worker.py."""
    total = 0
    for dtype in DTYPES:
        if dtype == "bfloat16":
            continue  # the worker skips it
        total += len(OPS) * 2 * sum(counts) * np.dtype(dtype).itemsize
    return total


def test_allreduce_sweep_across_hosts(cluster2: VirtualCluster) -> None:
    """Every dtype x op x size through the engine with 2 hosts x 2 ranks; and the data crossed
    the links: for host 1's ranks to know the result, host 0 must send at least one reduced
    copy of every input, whatever the algorithm, so each host's eth0 sends >= the payload."""
    before = cluster2.counters()
    results = ch.run_ok(cluster2, SWEEP, 2, "sweep", timeout=300)
    moved = traffic(before, cluster2.counters())
    for rank, result in enumerate(results):
        assert result["failures"] == [], f"rank {rank}: {result['failures'][:5]}"
    assert len({r["digest"] for r in results}) == 1, "ranks got different bits"
    payload = sweep_payload_bytes(4, [0, 1, 3, 5, 13, 1009, 70001])
    for host, (sent, received) in moved.items():
        assert sent >= payload and received >= payload, (
            f"{host} sent {sent} and received {received} bytes over eth0, less than the "
            f"{payload} bytes of payload: the ranks did not talk TCP across the hosts")
    assert_no_processes_left(cluster2)


def test_allreduce_small_segments_no_fusion_across_hosts(cluster2: VirtualCluster) -> None:
    """The multi-segment ring path (64-byte segments, one in flight, no fusion, no recursive
    doubling). The settings reach host 1's ranks only because they are forwarded with -x (a
    tunable set on one host only is the classic multi-host mistake), so no rank may report that
    its settings differ from rank 0's."""
    env = {"DIST_SYNC_RING_SEGMENT_BYTES": "64", "DIST_SYNC_SMALL_ALLREDUCE_BYTES": "0",
           "DIST_SYNC_FUSION_THRESHOLD": "0", "DIST_SYNC_RING_IN_FLIGHT": "1"}
    run = ch.run(cluster2, SWEEP, 2, "sweep", {"dtypes": ["float32", "int8", "float16"]},
                 timeout=300, env=env)
    results = run.values()
    for rank, result in enumerate(results):
        assert result["failures"] == [], f"rank {rank}: {result['failures'][:5]}"
    assert len({r["digest"] for r in results}) == 1
    # The engine adopts rank 0's values and warns on a rank whose own differ.
    assert "using rank 0's" not in run.output, run.output[-3000:]
    assert_no_processes_left(cluster2)


def test_fused_async_across_hosts(cluster2: VirtualCluster) -> None:
    """240 small named tensors in flight at once, three rounds (the later ones answered from the
    response cache), results checked against numpy on every rank; the engine's timeline shows
    that it did fuse requests into one ring pass."""
    results = ch.run_ok(cluster2, WORKER, 2, "fused_async",
                        {"tensors": 240, "rounds": 3, "timeline": True}, timeout=300)
    for rank, result in enumerate(results):
        assert result["failures"] == [], f"rank {rank}: {result['failures'][:5]}"
        assert result["tensors"] == 240
    assert len({r["digest"] for r in results}) == 1, "ranks got different bits"
    assert results[0]["timeline_spans"] >= 3 * 240
    assert results[0]["max_fused_requests"] > 1, "no allreduce carried more than one request"
    assert_no_processes_left(cluster2)


@pytest.mark.skipif(importlib.util.find_spec("dist_sync.torch") is None
                    or importlib.util.find_spec("torch") is None,
                    reason="dist_sync.torch (or torch) is not available")
def test_training_equivalence_across_hosts(cluster2: VirtualCluster) -> None:
    """DistributedOptimizer (SGD with momentum) on 2 hosts x 2 ranks == one process on the
    concatenated batches."""
    try:
        import dist_sync.torch as hvd  # noqa: F401
        missing = [n for n in ("DistributedOptimizer", "broadcast_parameters",
                               "broadcast_optimizer_state") if not hasattr(hvd, n)]
    except ImportError as error:
        pytest.skip(f"dist_sync.torch does not import: {error}")
    if missing:
        pytest.skip(f"dist_sync.torch has no {', '.join(missing)} yet")
    results = ch.run_ok(cluster2, WORKER, 2, "train_equivalence", {"steps": 6, "per_rank": 8},
                        timeout=300)
    assert len({r["digest"] for r in results}) == 1, "ranks ended with different parameters"
    assert [r["hostname"] for r in results] == ["node0", "node0", "node1", "node1"]
    for rank, result in enumerate(results):
        assert result["max_param_change"] > 1e-2, "training did not move the parameters"
        assert result["max_abs_diff"] < 1e-5, (
            f"rank {rank}: data-parallel parameters differ from the single-process run by "
            f"{result['max_abs_diff']}")
    assert_no_processes_left(cluster2)


def test_failure_on_a_remote_host_ends_the_job(cluster2: VirtualCluster) -> None:
    """A rank on host 1 raises while the others wait in an allreduce: mpirun must end the job on
    both hosts, report the error, and leave no process behind."""
    run = ch.run(cluster2, WORKER, 2, "fail_on_host", {"fail_rank": 3}, timeout=120)
    assert not run.timed_out, run.describe()
    assert run.returncode != 0, run.describe()
    assert 3 in run.ranks and not run.ranks[3].ok, run.describe()
    assert "deliberate failure on node1 (rank 3)" in run.ranks[3].error
    assert "deliberate failure on node1" in run.output
    assert_no_processes_left(cluster2)


def _hierarchical_available() -> bool:
    from dist_sync import config
    return any(s.env == "DIST_SYNC_HIERARCHICAL_ALLREDUCE" for s in config.SETTINGS)


needs_hierarchical = pytest.mark.skipif(
    not _hierarchical_available(), reason="the engine has no DIST_SYNC_HIERARCHICAL_ALLREDUCE setting")
HIERARCHICAL = {"DIST_SYNC_HIERARCHICAL_ALLREDUCE": "1"}


@needs_hierarchical
@pytest.mark.parametrize("hosts", [2, 3])
def test_hierarchical_allreduce_sweep(cluster3: VirtualCluster, hosts: int) -> None:
    """Reduce within each host, ring across hosts, share within: the same results as numpy,
    bit-identical on every rank, with 2 ranks on each of 2 or 3 hosts."""
    layout = [2] * hosts
    dtypes = ["float32", "float64", "int32", "float16", "uint8"] if hosts == 2 else ["float32", "int32", "float16"]
    results = ch.run_ok(cluster3, SWEEP, layout, "sweep", {"dtypes": dtypes}, timeout=300,
                        env=HIERARCHICAL)
    for rank, result in enumerate(results):
        assert result["failures"] == [], f"rank {rank}: {result['failures'][:5]}"
    assert len({r["digest"] for r in results}) == 1
    assert_no_processes_left(cluster3)


@needs_hierarchical
def test_hierarchical_allreduce_sends_fewer_bytes_between_hosts(cluster2: VirtualCluster) -> None:
    """2 hosts x 2 ranks, 1 MiB float32 allreduces: the flat ring over 4 ranks sends
    2(4-1)/4 = 1.5 S out of each host, the hierarchical one 2(2-1)/2 = 1 S (Note [Ring versus
    parameter server] in benchmarks/scaling.py). Bytes are counted on eth0, so this checks
    the algorithm, not the timing."""
    args = {"dtypes": ["float32"], "counts": [1 << 18]}
    payload = 5 * 2 * (1 << 20)  # 5 ops x (out of place, in place) x 1 MiB
    sent = {}
    for mode, env in (("flat", {"DIST_SYNC_HIERARCHICAL_ALLREDUCE": "0"}), ("hierarchical", HIERARCHICAL)):
        before = cluster2.counters()
        results = ch.run_ok(cluster2, SWEEP, 2, "sweep", args, timeout=180, env=env)
        assert all(r["failures"] == [] for r in results), results
        sent[mode] = max(tx for tx, _ in traffic(before, cluster2.counters()).values())
    assert payload <= sent["hierarchical"] < 1.2 * payload, sent
    assert 1.45 * payload <= sent["flat"] < 1.75 * payload, sent
    assert_no_processes_left(cluster2)


@needs_hierarchical
def test_hierarchical_allreduce_on_uneven_hosts_falls_back(cluster3: VirtualCluster) -> None:
    """2 + 1 + 1 ranks: the hosts cannot be split evenly, so every rank must fall back to the
    flat ring together. (Each rank used to decide alone and they hung until the stall timeout,
    which is short here so that a regression fails in seconds.)"""
    run = ch.run(cluster3, SWEEP, [2, 1, 1], "sweep", {"dtypes": ["float32"], "counts": [100000]},
                 timeout=120, env={**HIERARCHICAL, "DIST_SYNC_STALL_TIMEOUT_SECONDS": "15"})
    assert_no_processes_left(cluster3)
    results = run.values()
    for rank, result in enumerate(results):
        assert result["failures"] == [], f"rank {rank}: {result['failures'][:5]}"
