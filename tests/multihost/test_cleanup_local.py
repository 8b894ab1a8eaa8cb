"""The virtual cluster leaves no network state or process behind: after a failing body, after
SIGTERM/SIGHUP/SIGINT, and (at the next start) after SIGKILL. Plus the launcher agent's contract."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import pytest

from tests.multihost import netns
from tests.multihost.netns import VirtualCluster
from tests.support import ROOT



def state_of(prefix: str) -> Dict[str, List[str]]:
    """Namespaces, links and directories of one cluster still on the machine."""
    left = netns.leftovers()
    return {kind: [name for name in names if prefix in name] for kind, names in left.items()}


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_teardown_when_the_body_fails() -> None:
    with pytest.raises(RuntimeError, match="deliberate"):
        with VirtualCluster(2) as cluster:
            prefix = cluster.prefix
            assert state_of(prefix)["namespaces"], "the cluster was not created"
            sleeper = subprocess.Popen(cluster.host_command(1, ["sleep", "300"]))
            wait_for(lambda: cluster.pids(), 10, "the process on node1")
            raise RuntimeError("deliberate failure inside the cluster")
    assert sleeper.wait(timeout=10) != 0, "the process inside the cluster was not killed"
    assert state_of(prefix) == {"namespaces": [], "links": [], "directories": []}


CHILD = """
import time, subprocess
from tests.multihost import netns
cluster = netns.VirtualCluster(2).start()
subprocess.Popen(cluster.host_command(1, ["sleep", "300"]))
while not cluster.pids():
    time.sleep(0.05)
print(cluster.prefix, flush=True)
{then}
"""


def start_child(then: str) -> "tuple[subprocess.Popen, str]":
    """A process that builds a cluster with a process inside, prints its prefix, then `then`.
    It is its own owner (no DIST_SYNC_NETNS_OWNER), like a standalone run."""
    env = {k: v for k, v in os.environ.items() if k != netns.OWNER_ENV}
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(then=then)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    prefix = child.stdout.readline().strip()
    if not prefix:
        child.kill()
        raise AssertionError(f"the child did not build its cluster: {child.stderr.read()}")
    assert prefix.startswith(f"{netns.TAG}{child.pid}"), prefix
    assert len(state_of(prefix)["namespaces"]) == 3  # 2 hosts + switch
    return child, prefix


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=lambda s: s.name)
def test_teardown_on_signal(sig: signal.Signals) -> None:
    child, prefix = start_child("time.sleep(300)")
    child.send_signal(sig)
    try:
        child.wait(timeout=30)
    finally:
        child.kill()
    assert child.returncode != 0
    assert state_of(prefix) == {"namespaces": [], "links": [], "directories": []}, \
        child.stderr.read()


def test_sigkill_leftovers_are_removed_by_the_next_start() -> None:
    child, prefix = start_child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert child.wait(timeout=30) == -signal.SIGKILL
    left = state_of(prefix)
    assert len(left["namespaces"]) == 3 and left["directories"], \
        "SIGKILL cannot be caught, so the namespaces should still be there"
    with VirtualCluster(1):
        pass  # every start removes namespaces whose owner is gone
    assert state_of(prefix) == {"namespaces": [], "links": [], "directories": []}


def test_agent_runs_like_a_login_on_the_host(cluster2: VirtualCluster) -> None:
    """Own hostname, the cluster's names resolve, this process's environment does not leak in."""
    os.environ["DIST_SYNC_AGENT_PROBE"] = "leaked"
    try:
        out = subprocess.run(cluster2.host_command(1, [
            "sh", "-c", 'hostname; getent hosts node0; echo "probe=${DIST_SYNC_AGENT_PROBE:-unset}";'
                        ' cat /sys/class/net/eth0/address >/dev/null && echo eth0-present']),
            capture_output=True, text=True, timeout=30)
    finally:
        del os.environ["DIST_SYNC_AGENT_PROBE"]
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0] == "node1"
    assert lines[1].split() == [cluster2.hosts[0].address, "node0"]
    assert "probe=unset" in out.stdout and "eth0-present" in out.stdout


def test_agent_rejects_a_host_outside_the_cluster(cluster2: VirtualCluster) -> None:
    out = subprocess.run([str(netns.AGENT), str(cluster2.directory), "-x", "node7", "true"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 255
    assert "'node7' is not a host of the virtual cluster" in out.stderr
    assert "node0 node1" in out.stderr
    gone = subprocess.run([str(netns.AGENT), tempfile.gettempdir() + "/no-such-cluster", "node0",
                           "true"], capture_output=True, text=True, timeout=30)
    assert gone.returncode == 255 and "the virtual cluster is gone" in gone.stderr
