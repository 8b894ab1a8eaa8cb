"""`python -m benchmarks.scaling` end to end on small buffers: it builds and removes its own
hosts, checks every result, and the bytes it reports follow the theory (counted on eth0, so this
is deterministic; the times are only reported, never asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from dist_sync import config as ds_config
from tests.multihost import netns
from tests.support import ROOT

S = 512 << 10


def run_scaling(tmp_path: Path, *argv: str) -> List[Dict[str, Any]]:
    """Runs the benchmark; its results, after checking that it removed the hosts it built."""
    out = tmp_path / "out"
    before = set(netns.list_namespaces())   # the session's own clusters may be up
    result = subprocess.run([sys.executable, "-m", "benchmarks.scaling", *argv,
                             "-o", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    left = set(netns.list_namespaces()) - before
    assert not left, f"the benchmark left namespaces behind: {sorted(left)}"
    report = json.loads((out / "scaling.json").read_text())
    assert (out / "scaling.md").read_text().count("\n|") >= 2
    assert "# hosts" in result.stdout
    return report["results"]


FRAME = 1514   # bytes on the wire of one full TCP segment (MTU 1500 + Ethernet header)


def check_sent(record: Dict[str, Any], busiest: float, others: float) -> None:
    """Every timed iteration: the busiest host sent at least `busiest` payload bytes and every
    other host at least `others`, and no host more than 15% above that (headers and
    acknowledgements) plus the segments TCP retransmitted (a loaded machine drops a packet now
    and then; the benchmark reports them)."""
    hosts = sorted(record["tx"])
    for i in range(len(record["times"])):
        sent = {h: record["tx"][h][i] for h in hosts}
        resent = {h: record["retransmitted"][h][i] * FRAME for h in hosts}
        top = max(hosts, key=lambda h: sent[h])
        where = (f"{record['hosts']} hosts, {record['algorithm']}, iteration {i}: sent {sent}, "
                 f"retransmitted bytes {resent}")
        for host in hosts:
            floor = busiest if host == top else others
            assert floor <= sent[host] <= 1.15 * floor + resent[host], where


def test_ring_and_parameter_server_bytes_follow_the_theory(tmp_path: Path) -> None:
    results = run_scaling(tmp_path, "--hosts", "2,3", "--size", str(S), "-n", "2", "-w", "1",
                          "--rate", "1gbit")
    assert [(r["hosts"], r["algorithm"]) for r in results] == [
        (2, "ring"), (2, "ps"), (3, "ring"), (3, "ps")]
    for record in results:
        assert record["wrong"] == 0 and len(record["times"]) == 2
        assert all(t > 0 for t in record["times"])
        hosts = record["hosts"]
        assert len(record["tx"]) == hosts
        if record["algorithm"] == "ring":   # every host 2(N-1)/N S
            check_sent(record, 2 * (hosts - 1) / hosts * S, 2 * (hosts - 1) / hosts * S)
        else:                                # the root (N-1) S, every other host S
            check_sent(record, (hosts - 1) * S, S)
    png = tmp_path / "out" / "scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not any(s.key == "hierarchical_allreduce" for s in ds_config.SETTINGS),
                    reason="the engine has no DIST_SYNC_HIERARCHICAL_ALLREDUCE setting")
def test_hierarchical_sends_fewer_bytes_per_host(tmp_path: Path) -> None:
    """2 hosts x 2 ranks: the flat ring 1.5 S per host, the hierarchical one 1 S."""
    results = run_scaling(tmp_path, "--hosts", "2", "--ranks-per-host", "2", "--size", str(S),
                          "-n", "1", "-w", "1", "--rate", "none", "--algorithms",
                          "ring,hierarchical", "--no-plot")
    by_algorithm = {r["algorithm"]: r for r in results}
    assert set(by_algorithm) == {"ring", "hierarchical"}
    assert all(r["wrong"] == 0 for r in results)
    check_sent(by_algorithm["ring"], 1.5 * S, 1.5 * S)
    check_sent(by_algorithm["hierarchical"], S, S)
