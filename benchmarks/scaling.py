"""Multi-host scaling: dist_sync's ring allreduce against a parameter server, over real TCP between
network-namespace hosts whose every link is rate-limited, so the network and not the CPU decides.

    sudo .venv/bin/python -m benchmarks.scaling [--hosts 2,3,4] [--size 8M] [--rate 200mbit]
                                               [-o DIR]

Run it as root from the root of a source checkout, *not* under mpirun: it builds the hosts
itself (with tests/multihost/netns.py: one network namespace per host, veth links to a switch,
tc token-bucket filters on both directions of every link), runs mpirun across them once per host
count, and removes every namespace again, also on failure or Ctrl-C. Each run has one rank per host (add
--ranks-per-host 2 --algorithms ring,hierarchical to measure the hierarchical allreduce).

For every host count N it times the same float32 buffer of S bytes through
  ring         dist_sync.allreduce_ (the engine's normal path: negotiation, ring), Average;
  ps           a parameter server written here as the baseline (mpi4py): every rank sends its
               buffer to rank 0, rank 0 sums and averages with numpy and sends the result back;
  hierarchical dist_sync.allreduce_ with DIST_SYNC_HIERARCHICAL_ALLREDUCE=1 (several ranks per
               host only: reduce within each host, ring across hosts, share within each host);
and reads every host's eth0 byte counters around each iteration. It prints a table and writes
scaling.json, scaling.md (the table) and scaling.png (time and bytes against N, with the theory)
into the output directory.

Note [Ring versus parameter server]
Per iteration, with S the buffer size and B the rate of a link in each direction:
  ring: every rank sends and receives 2(N-1)/N * S, all links busy at once in both directions,
        so the time is 2(N-1)/N * S/B: at most 2 S/B, flat in N;
  ps:   every worker sends S up and receives S back, but the root's one link carries (N-1) S in
        and then (N-1) S out (the sum needs all inputs before the result can go back), so the
        time is 2(N-1) S/B, linear in N. A dedicated server that is not itself a worker moves
        N S each way. The root is the bottleneck whatever its CPU.
  flat ring with L ranks per host (N = H L ranks): each host's link carries one ring edge each
        way, 2(N-1)/N * S; hierarchical: 2(H-1)/H * S (one ring over hosts, of a 1/L chunk per
        rank, L ranks in parallel), so it saves (HL-1)/(L(H-1)) of the inter-host bytes: 1.5x
        for 2 hosts x 2 ranks, 1.17x for 4 x 2, and it only pays when the links are the limit.
The theory columns count payload; the counters count whole Ethernet frames (66 bytes of
Ethernet/IP/TCP headers per 1448-byte segment, +4.6%, plus acknowledgements), and tbf's rate
counts whole frames too, so the theory time uses wire bytes = payload * 1514/1448.

Timing follows Note [How a benchmark iteration is timed] (dist_sync/bench/common.py): barrier,
time the operation on each rank, MAX over ranks, median over the timed iterations. Both
algorithms wait without spinning (test and sleep 0.2 ms, like the engine), so neither steals
the CPU the kernel needs to move packets when ranks outnumber cores.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from tests.multihost import netns

RANK_COMMAND = "_rank"          # argv[0] of the per-rank program that mpirun starts
ALGORITHMS = ("ring", "ps", "hierarchical")
LABELS = {"ring": "ring", "ps": "parameter server", "hierarchical": "hierarchical ring"}
WIRE_FACTOR = 1514 / 1448       # Ethernet frame bytes per TCP payload byte at MTU 1500
TAG_UP, TAG_DOWN = 7101, 7102   # parameter-server message tags
POLL_SECONDS = 0.0002


# --- theory (Note [Ring versus parameter server]) ----------------------------------------------

def theory_bytes(algorithm: str, hosts: int, ranks_per_host: int, size: int) -> Tuple[float, float]:
    """(payload bytes each way on the busiest host link, on the least busy) per iteration."""
    ranks = hosts * ranks_per_host
    if algorithm == "ps":
        # Root host: its (ranks_per_host - 1) local workers use shared memory.
        root = (ranks - ranks_per_host) * size
        other = ranks_per_host * size
        return float(root), float(other if hosts > 1 else 0)
    if algorithm == "hierarchical" and ranks_per_host > 1:
        per_host = 2.0 * (hosts - 1) / hosts * size
    else:
        per_host = 2.0 * (ranks - 1) / ranks * size if hosts > 1 else 0.0
    return per_host, per_host


def theory_seconds(algorithm: str, hosts: int, ranks_per_host: int, size: int, rate_bps: float) -> float:
    """Time per iteration if the busiest link ran at its rate and nothing else cost anything."""
    if not rate_bps or hosts < 2:
        return math.nan
    busiest, _ = theory_bytes(algorithm, hosts, ranks_per_host, size)
    # ps: in, then out, on the root's link; the ring sends and receives at the same time.
    directions = 2 if algorithm == "ps" else 1
    return directions * busiest * WIRE_FACTOR * 8 / rate_bps


def parse_rate(text: str) -> float:
    """tc rate ("200mbit", "1gbit", "500kbit") in bits per second; 0 for "none"."""
    value = text.strip().lower()
    if value in ("", "none", "0"):
        return 0.0
    for suffix, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)):
        if value.endswith(suffix):
            number = value[: -len(suffix)]
            try:
                return float(number) * scale
            except ValueError:
                break
    raise argparse.ArgumentTypeError(f"{text!r} is not a tc rate such as 200mbit, 1gbit or none")


def parse_size(text: str) -> int:
    from dist_sync import config as _config  # light: no engine, no MPI
    try:
        size = _config.parse_bytes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if size < 4 or size % 4:
        raise argparse.ArgumentTypeError(f"the size must be a positive multiple of 4 bytes (float32), got {text}")
    return size


def parse_hosts(text: str) -> List[int]:
    try:
        hosts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of host counts like 2,3,4") from None
    if not hosts or any(not 2 <= h <= 9 for h in hosts):
        raise argparse.ArgumentTypeError(f"host counts must be 2..9, got {text!r}")
    return hosts


def parse_algorithms(text: str) -> List[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown algorithm(s) {unknown}; choose from {', '.join(ALGORITHMS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling",
        description=__doc__.split("\n\n")[0],
        epilog="Needs root (network namespaces, veth, tc) and a source checkout of dist_sync "
               "(tests/multihost/netns.py). Note [Ring versus parameter server] in "
               "benchmarks/scaling.py states the theory; docs/benchmarks.md, section 'Several "
               "hosts', shows results.")
    parser.add_argument("--hosts", type=parse_hosts, default=[2, 3, 4], metavar="N,N,...",
                        help="host counts to run (default 2,3,4)")
    parser.add_argument("--ranks-per-host", type=int, default=1, metavar="L",
                        help="ranks on every host (default 1)")
    parser.add_argument("--size", type=parse_size, default=8 << 20, metavar="BYTES",
                        help="buffer size S in bytes, float32 (default 8M)")
    parser.add_argument("--rate", default="200mbit",
                        help="tc rate of every link in each direction, or none (default 200mbit)")
    parser.add_argument("--algorithms", type=parse_algorithms, default=["ring", "ps"],
                        metavar="A,A", help=f"any of {', '.join(ALGORITHMS)} (default ring,ps)")
    parser.add_argument("-n", "--iterations", type=int, default=5, help="timed iterations (default 5)")
    parser.add_argument("-w", "--warmup", type=int, default=1, help="untimed iterations first (default 1)")
    parser.add_argument("-o", "--output-dir", default="scaling-results",
                        help="where scaling.json, scaling.md and scaling.png go (default ./scaling-results)")
    parser.add_argument("--mca", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="an Open MPI parameter for the runs, e.g. --mca btl_tcp_links 2 "
                             "(repeatable)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    return parser


# --- the per-rank program (started by mpirun on every host) ---------------------------------------

def _wait(requests: List[Any], MPI: Any) -> None:
    """Waits for MPI requests without spinning (Open MPI's blocking waits busy-poll a core)."""
    while not MPI.Request.Testall(requests):
        time.sleep(POLL_SECONDS)


def _barrier(comm: Any, MPI: Any) -> None:
    _wait([comm.Ibarrier()], MPI)


def parameter_server_allreduce(comm: Any, MPI: Any, send: Any, out: Any, scratch: Any) -> None:
    """The baseline: ranks send `send` to rank 0, which averages with numpy and sends `out`
    back. `scratch` holds the other ranks' buffers on rank 0 (shape (size - 1, count))."""
    import numpy as np
    rank, size = comm.Get_rank(), comm.Get_size()
    if rank == 0:
        _wait([comm.Irecv(scratch[i], source=i + 1, tag=TAG_UP) for i in range(size - 1)], MPI)
        np.copyto(out, send)
        for i in range(size - 1):
            out += scratch[i]
        out *= np.float32(1.0 / size)
        _wait([comm.Isend(out, dest=i, tag=TAG_DOWN) for i in range(1, size)], MPI)
    else:
        _wait([comm.Isend(send, dest=0, tag=TAG_UP), comm.Irecv(out, source=0, tag=TAG_DOWN)], MPI)


def _read_counters(interface: str) -> Tuple[int, int, int]:
    """Bytes sent and received so far by this host's interface, and TCP segments it
    retransmitted (the rank runs in the host's network namespace, where /sys/class/net and
    /proc/net are the host's). Retransmissions are bytes on the wire beyond the algorithm's."""
    base = Path("/sys/class/net") / interface / "statistics"
    retransmitted = 0
    with open("/proc/net/snmp") as handle:
        rows = [line.split() for line in handle if line.startswith("Tcp:")]
    if len(rows) == 2 and "RetransSegs" in rows[0]:
        retransmitted = int(rows[1][rows[0].index("RetransSegs")])
    return (int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text()),
            retransmitted)


def rank_main(spec: Dict[str, Any]) -> int:
    """Times spec["algorithms"] on this rank; rank 0 writes every measurement to spec["output"]."""
    from dist_sync.bench import common
    MPI = common.require_mpi4py()        # first: MPI_THREAD_MULTIPLE for the engine thread
    import numpy as np

    import dist_sync as ds

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    ds.init(**spec.get("settings", {}))
    count = spec["size"] // 4
    mine = common.rank_input(count, rank, size, "float32")   # exact small integers
    expected = common.expected_sum(count, size, "float32").astype(np.float64) / size
    buffer = np.empty(count, dtype=np.float32)
    out = np.empty(count, dtype=np.float32)
    scratch = np.empty((size - 1, count), dtype=np.float32) if rank == 0 and "ps" in spec["algorithms"] else None
    host_leader = ds.local_rank() == 0   # one rank per host reports its host's counters
    interface = spec["interface"]
    times: Dict[str, List[float]] = {a: [] for a in spec["algorithms"]}
    traffic: Dict[str, List[Tuple[int, int, int]]] = {a: [] for a in spec["algorithms"]}
    wrong: Dict[str, int] = {a: 0 for a in spec["algorithms"]}

    for iteration in range(spec["warmup"] + spec["iterations"]):
        for algorithm in spec["algorithms"]:  # interleaved, so slow drift hits all alike
            np.copyto(buffer, mine)
            _barrier(comm, MPI)
            before = _read_counters(interface)
            start = time.perf_counter()
            if algorithm == "ps":
                parameter_server_allreduce(comm, MPI, buffer, out, scratch)
                result = out
            else:   # ring, or hierarchical (the engine's setting decides the path)
                ds.allreduce_(buffer, op=ds.Average, name=f"scaling.{algorithm}")
                result = buffer
            elapsed = time.perf_counter() - start
            _barrier(comm, MPI)   # every rank done: all of this op's bytes are counted
            after = _read_counters(interface)
            if iteration >= spec["warmup"]:
                times[algorithm].append(elapsed)
                traffic[algorithm].append(tuple(a - b for a, b in zip(after, before)))
                wrong[algorithm] += int(np.count_nonzero(~np.isclose(result, expected, rtol=1e-6, atol=0)))
    ds.barrier()
    ds.shutdown()

    slowest = {a: common.slowest_per_iteration(comm, times[a]).tolist() for a in spec["algorithms"]}
    wrong_total = {a: common.sum_over_ranks(comm, wrong[a]) for a in spec["algorithms"]}
    hosts = comm.gather((socket.gethostname(), host_leader, traffic), root=0)
    if rank == 0:
        per_host = {name: data for name, leader, data in hosts if leader}
        records = []
        for algorithm in spec["algorithms"]:
            records.append({
                "algorithm": algorithm,
                "times": slowest[algorithm],
                "tx": {h: [t[0] for t in per_host[h][algorithm]] for h in sorted(per_host)},
                "rx": {h: [t[1] for t in per_host[h][algorithm]] for h in sorted(per_host)},
                "retransmitted": {h: [t[2] for t in per_host[h][algorithm]] for h in sorted(per_host)},
                "wrong": wrong_total[algorithm],
            })
        library = MPI.Get_library_version().replace("\x00", "").strip()  # Open MPI pads with NUL
        info = {"mpi_library": library.splitlines()[0] if library else "unknown",
                "hostnames": sorted(per_host), "ranks": size}
        with open(spec["output"], "w") as handle:
            json.dump({"records": records, "info": info}, handle)
    return 0


# --- the orchestrator ------------------------------------------------------------------------------

@dataclass
class Measurement:
    """One algorithm on one host count: per-iteration times (slowest rank) and host traffic."""
    hosts: int
    ranks_per_host: int
    algorithm: str
    size: int
    rate_bps: float
    times: List[float]
    tx: Dict[str, List[int]]     # host -> bytes sent per iteration (whole frames)
    rx: Dict[str, List[int]]
    retransmitted: Dict[str, List[int]]   # host -> TCP segments retransmitted per iteration
    wrong: int
    theory_time: float = field(init=False)
    theory_busiest: float = field(init=False)
    theory_least: float = field(init=False)

    def __post_init__(self) -> None:
        self.theory_time = theory_seconds(self.algorithm, self.hosts, self.ranks_per_host, self.size,
                                          self.rate_bps)
        self.theory_busiest, self.theory_least = theory_bytes(self.algorithm, self.hosts,
                                                              self.ranks_per_host, self.size)

    @property
    def label(self) -> str:
        """The algorithm's name in tables and plots ("flat ring" beside the hierarchical one)."""
        if self.algorithm == "ring" and self.ranks_per_host > 1:
            return "flat ring"
        return LABELS[self.algorithm]

    @property
    def time(self) -> float:
        return _median(self.times)

    def host_bytes(self, which: str) -> Dict[str, float]:
        """Median bytes per iteration of every host, sent ("tx") or received ("rx")."""
        return {h: _median(v) for h, v in getattr(self, which).items()}


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    return float(ordered[middle]) if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _engine_settings(algorithm_set: Sequence[str]) -> Dict[str, Any]:
    if "hierarchical" in algorithm_set:
        return {"hierarchical_allreduce": True}
    # Explicitly off, so a DIST_SYNC_HIERARCHICAL_ALLREDUCE=1 in the caller's environment does
    # not turn the "ring" column into the hierarchical one.
    return {"hierarchical_allreduce": False} if _has_hierarchical() else {}


def _has_hierarchical() -> bool:
    from dist_sync import config as _config
    return any(s.key == "hierarchical_allreduce" for s in _config.SETTINGS)


def _rank_env() -> Dict[str, str]:
    """What reaches the ranks (the hosts start with a clean environment, like ssh): the caller's
    DIST_SYNC_* settings, its PYTHONPATH, and one OpenMP thread (ranks may outnumber cores)."""
    from dist_sync import config as _config
    env = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    known = {s.env for s in _config.SETTINGS}
    env.update({k: v for k, v in os.environ.items() if k in known})
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def run_host_count(hosts: int, args: argparse.Namespace, rate_bps: float,
                   scratch: Path) -> Tuple[List[Measurement], Dict[str, Any]]:
    """Builds `hosts` hosts, runs every algorithm on them, tears them down."""
    measurements: List[Measurement] = []
    info: Dict[str, Any] = {}
    # The hierarchical path is a different engine setting: its own mpirun job on the same hosts.
    jobs = [[a for a in args.algorithms if a != "hierarchical"]]
    if "hierarchical" in args.algorithms:
        jobs.append(["hierarchical"])
    rate = args.rate if rate_bps else None
    with netns.VirtualCluster(hosts, rate=rate) as cluster:
        for job in filter(None, jobs):
            output = scratch / f"hosts{hosts}-{'-'.join(job)}.json"
            spec = {"algorithms": job, "size": args.size, "iterations": args.iterations,
                    "warmup": args.warmup, "interface": netns.INTERFACE, "output": str(output),
                    "settings": _engine_settings(job)}
            program = [sys.executable, "-m", "benchmarks.scaling", RANK_COMMAND, json.dumps(spec)]
            mca = [word for name, value in args.mca for word in ("--mca", name, value)]
            command = cluster.mpirun_command(program, args.ranks_per_host, env=_rank_env(),
                                             mpirun_args=mca)
            budget = sum(theory_seconds(a, hosts, args.ranks_per_host, args.size, rate_bps) or 0
                         for a in job if rate_bps) * (args.iterations + args.warmup)
            timeout = 120 + 4 * (0 if math.isnan(budget) else budget)
            started = time.monotonic()
            returncode, text, timed_out = cluster.run(command, timeout=timeout)
            if returncode != 0 or timed_out or not output.exists():
                why = f"timed out after {timeout:.0f} s" if timed_out else f"exit code {returncode}"
                raise SystemExit(f"scaling: the {'/'.join(job)} run on {hosts} hosts failed ({why}); "
                                 f"its output:\n{text[-6000:]}")
            data = json.loads(output.read_text())
            info = data["info"]
            for record in data["records"]:
                measurements.append(Measurement(hosts, args.ranks_per_host, record["algorithm"],
                                                args.size, rate_bps, record["times"], record["tx"],
                                                record["rx"], record["retransmitted"],
                                                record["wrong"]))
            print(f"scaling: {hosts} hosts: " + ", ".join(
                f"{m.label} {m.time:.3f} s" for m in measurements
                if m.algorithm in job) + f" ({time.monotonic() - started:.0f} s with start-up)",
                file=sys.stderr, flush=True)
    return measurements, info


MIB = float(1 << 20)


def table_rows(results: Sequence[Measurement]) -> List[List[str]]:
    rows = []
    for m in results:
        sent, received = m.host_bytes("tx"), m.host_bytes("rx")
        rows.append([
            str(m.hosts), str(m.hosts * m.ranks_per_host), m.label,
            f"{m.time:.3f}", "n/a" if math.isnan(m.theory_time) else f"{m.theory_time:.3f}",
            f"{max(sent.values()) / MIB:.2f}", f"{min(sent.values()) / MIB:.2f}",
            f"{max(received.values()) / MIB:.2f}",
            f"{m.theory_busiest / MIB:.2f}" + ("" if m.theory_least == m.theory_busiest
                                               else f" / {m.theory_least / MIB:.2f}"),
            str(sum(sum(v) for v in m.retransmitted.values())), str(m.wrong)])
    return rows


HEADERS = ["hosts", "ranks", "algorithm", "time/iter (s)", "theory (s)", "sent/host max (MiB)",
           "sent/host min (MiB)", "recv/host max (MiB)", "theory max / min (MiB)", "retransmits",
           "#wrong"]


def render_text(results: Sequence[Measurement]) -> str:
    rows = table_rows(results)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    lines = ["# " + "  ".join(h.rjust(w) for h, w in zip(HEADERS, widths))]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def render_markdown(results: Sequence[Measurement]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines)


def plot(results: Sequence[Measurement], path: Path, title: str) -> None:
    """Time per iteration and the busiest host's bytes sent, against the number of hosts, with
    the theory as dashed lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"ring": "tab:blue", "ps": "tab:red", "hierarchical": "tab:green"}
    for algorithm in ALGORITHMS:
        ours = sorted((m for m in results if m.algorithm == algorithm), key=lambda m: m.hosts)
        if not ours:
            continue
        hosts = [m.hosts for m in ours]
        colour = colours[algorithm]
        name = ours[0].label
        left.plot(hosts, [m.time for m in ours], "o-", color=colour, label=f"{name} (measured)")
        if not any(math.isnan(m.theory_time) for m in ours):
            left.plot(hosts, [m.theory_time for m in ours], "--", color=colour, alpha=0.6,
                      label=f"{name} (theory)")
        right.plot(hosts, [max(m.host_bytes("tx").values()) / MIB for m in ours], "o-", color=colour,
                   label=f"{name}: busiest host (measured)")
        right.plot(hosts, [m.theory_busiest * WIRE_FACTOR / MIB for m in ours], "--", color=colour,
                   alpha=0.6, label=f"{name}: theory (wire)")
        if algorithm == "ps":
            right.plot(hosts, [min(m.host_bytes("tx").values()) / MIB for m in ours], "s:",
                       color=colour, label="parameter server: other hosts (measured)")
    all_hosts = sorted({m.hosts for m in results})
    for axis, ylabel in ((left, "time per iteration (s)"), (right, "MiB sent per host per iteration")):
        axis.set_xlabel("hosts (N)")
        axis.set_ylabel(ylabel)
        axis.set_xticks(all_hosts)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _finite(value: Any) -> Any:
    """JSON has no NaN: a value that does not exist (the theory without a rate limit) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def main(argv: List[str]) -> int:
    """`python -m benchmarks.scaling ...` (and, with RANK_COMMAND first, the rank program)."""
    if argv[:1] == [RANK_COMMAND]:
        if len(argv) != 2:
            print(f"scaling {RANK_COMMAND}: expects one JSON argument", file=sys.stderr)
            return 2
        return rank_main(json.loads(argv[1]))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rate_bps = parse_rate(args.rate)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if args.iterations < 1 or args.warmup < 0:
        parser.error("--iterations must be >= 1 and --warmup >= 0")
    if args.ranks_per_host < 1:
        parser.error("--ranks-per-host must be >= 1")
    if "hierarchical" in args.algorithms:
        if not _has_hierarchical():
            parser.error("this dist_sync has no DIST_SYNC_HIERARCHICAL_ALLREDUCE setting "
                         "(dist_sync.config.SETTINGS): the hierarchical allreduce is not built in")
        if args.ranks_per_host < 2:
            parser.error("hierarchical needs --ranks-per-host 2 or more (with one rank per host "
                         "the engine uses the flat ring)")
    if "MPI_LOCALNRANKS" in os.environ or "OMPI_COMM_WORLD_SIZE" in os.environ:
        print("scaling: run it directly, not under mpirun: it starts mpirun across the hosts it "
              "builds", file=sys.stderr)
        return 2
    reason = netns.unavailable_reason()
    if reason:
        print(f"scaling: cannot build network-namespace hosts here: {reason}", file=sys.stderr)
        return 2
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # SIGTERM unwinds like Ctrl-C: the hosts' own handler (netns.py) tears them down first and
    # then calls this one, so the scratch directory goes too.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    results: List[Measurement] = []
    info: Dict[str, Any] = {}
    started = time.time()
    load_start = list(os.getloadavg())
    try:
        with tempfile.TemporaryDirectory(prefix="dist_sync_scaling_") as scratch:
            for hosts in args.hosts:
                measured, info = run_host_count(hosts, args, rate_bps, Path(scratch))
                results.extend(measured)
    except KeyboardInterrupt:
        left = netns.leftovers(int(os.environ.get(netns.OWNER_ENV) or os.getpid()))
        state = "removed" if not any(left.values()) else f"NOT all removed: {left}"
        print(f"scaling: interrupted; the hosts were {state}", file=sys.stderr)
        return 130

    command = "python -m benchmarks.scaling " + " ".join(argv)
    title = (f"{command}\nS = {args.size / MIB:g} MiB float32, {args.ranks_per_host} rank(s)/host, "
             f"links {args.rate} each way, {args.iterations} timed iterations (median)")
    table = render_text(results)
    print(f"# {command}\n# S = {args.size} bytes, links {args.rate} each way (tbf), "
          f"{args.ranks_per_host} rank(s) per host, median of {args.iterations}; bytes are whole "
          f"frames on each host's eth0 per iteration; retransmits: TCP segments resent, all hosts and timed iterations\n{table}")
    report = {
        "command": command,
        "config": {"size": args.size, "rate": args.rate, "rate_bps": rate_bps,
                   "ranks_per_host": args.ranks_per_host, "iterations": args.iterations,
                   "warmup": args.warmup, "algorithms": args.algorithms,
                   "mca": {name: value for name, value in args.mca},
                   "tc": "tbf burst 32kbit latency 400ms on both ends of every host link"},
        "environment": {"machine": platform.node(), "kernel": platform.release(),
                        "cpu_count": os.cpu_count(), "python": platform.python_version(),
                        "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
                        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                        "seconds": round(time.time() - started, 1), **info},
        "results": [{**asdict(m), "time": m.time} for m in results],
    }
    (output_dir / "scaling.json").write_text(json.dumps(_finite(report), indent=1, allow_nan=False)
                                             + "\n")
    (output_dir / "scaling.md").write_text(f"`{command}`\n\n{render_markdown(results)}\n")
    written = ["scaling.json", "scaling.md"]
    if not args.no_plot:
        plot(results, output_dir / "scaling.png", title)
        written.append("scaling.png")
    print(f"scaling: wrote {', '.join(str(output_dir / w) for w in written)}", file=sys.stderr)
    wrong = sum(m.wrong for m in results)
    if wrong:
        print(f"scaling: {wrong} wrong elements (see #wrong): the results are not valid", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
