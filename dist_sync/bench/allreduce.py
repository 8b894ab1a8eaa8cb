"""``python -m dist_sync.bench allreduce``: allreduce throughput, side by side with MPI and gloo.

Prints the table people know from nccl-tests (size, count, type, redop, time, algbw, busbw,
#wrong) for dist_sync through its engine, and in the same run, interleaved iteration by
iteration, the same buffers through

* the ring/recursive-doubling algorithm alone (``_core._bench_collective``, no engine),
* ``MPI_Allreduce`` (mpi4py, in place),
* ``torch.distributed`` with gloo (in place, if torch is importable),
* ``MPI_Sendrecv`` of the whole buffer with the ring neighbours: not an allreduce, but the
  bandwidth a rank can push to its neighbour while receiving from the other, which is the
  physical ceiling of a ring's busbw.

Timing: Note [How a benchmark iteration is timed] (common.py). The tools take turns size by
size (all of one size's iterations through each tool, rotating which tool goes first), not
all sizes of one tool then the next, so load from other processes on a shared machine slows
all of them alike instead of whichever happened to run at the time. Turns are not finer than
that because each tool leaves threads behind that are still winding down when its call
returns (gloo's worker and transport threads); the next tool's warm-up iterations absorb that.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from . import common

log = logging.getLogger("dist_sync.bench.allreduce")

# Keys (JSON) and labels (table, plot) of the contenders, in table order.
DIST_SYNC, RAW, MPI_ALLREDUCE, GLOO, SENDRECV = (
    "dist_sync", "dist_sync_raw", "mpi_allreduce", "gloo", "mpi_sendrecv")
LABELS = {
    DIST_SYNC: "dist_sync",
    RAW: "dist_sync algorithm only",
    MPI_ALLREDUCE: "MPI_Allreduce",
    GLOO: "torch.distributed gloo",
    SENDRECV: "MPI_Sendrecv (ring link)",
}
SKIPPABLE = (RAW, MPI_ALLREDUCE, GLOO, SENDRECV)
TOOLS = (DIST_SYNC,) + SKIPPABLE
# Short names accepted by --skip.
SKIP_NAMES = {"raw": RAW, "mpi": MPI_ALLREDUCE, "gloo": GLOO, "sendrecv": SENDRECV}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-b", "--minbytes", type=common.parse_size, default=4,
                        help="smallest size in bytes (K, M, G suffixes; default 4)")
    parser.add_argument("-e", "--maxbytes", type=common.parse_size, default=256 << 20,
                        help="largest size in bytes (default 256M)")
    parser.add_argument("-f", "--stepfactor", type=float, default=4.0,
                        help="multiply the size by this much each step (default 4)")
    parser.add_argument("-d", "--datatype", default="float32", choices=common.DTYPES,
                        help="element type (default float32)")
    parser.add_argument("-n", "--iters", type=int, default=20,
                        help="timed iterations per size and tool (default 20)")
    parser.add_argument("-w", "--warmup_iters", type=int, default=5,
                        help="untimed iterations first (default 5)")
    parser.add_argument("--skip", default="",
                        help=f"comma-separated references to leave out: {', '.join(SKIP_NAMES)}")
    parser.add_argument("--json", metavar="FILE", help="write every number to FILE (rank 0)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw busbw against size for every tool (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress line on stderr while long sizes run")


@dataclass
class Buffers:
    """One size's memory, allocated once and reused by every tool (Note [How a benchmark
    iteration is timed])."""
    dtype: str
    count: int
    rank: int
    size: int
    source: np.ndarray = field(init=False)    # this rank's input (read-only from here on)
    expected: np.ndarray = field(init=False)  # the exact sum over ranks
    work: np.ndarray = field(init=False)      # reduced in place; refilled before each iteration

    def __post_init__(self) -> None:
        self.source = common.rank_input(self.count, self.rank, self.size, self.dtype)
        self.expected = common.expected_sum(self.count, self.size, self.dtype)
        self.work = self.source.copy()

    @property
    def nbytes(self) -> int:
        return self.work.nbytes


@dataclass
class Contender:
    """One way of doing the operation: ``run()`` performs it once on ``buffers.work`` (already
    refilled), ``check()`` counts the wrong elements afterwards."""
    key: str
    run: Callable[[], Any]
    check: Callable[[bool], int]   # argument: is this the last timed iteration?
    bandwidth_factor: float        # busbw = bytes / time * factor
    times: List[float] = field(default_factory=list)
    wrong: int = 0


def _dist_sync_contender(buffers: Buffers, ds: Any) -> Contender:
    name = f"bench.allreduce.{buffers.dtype}.{buffers.nbytes}"
    # In place on a preallocated array: a fresh output per call would time the kernel zeroing
    # new pages, not the allreduce.
    return Contender(DIST_SYNC, lambda: ds.allreduce_(buffers.work, op=ds.Sum, name=name),
                     lambda last: common.count_wrong(buffers.work, buffers.expected),
                     common.busbw_factor(buffers.size))


def _mpi_contender(buffers: Buffers, comm: Any, MPI: Any) -> Contender:
    return Contender(MPI_ALLREDUCE,
                     lambda: comm.Allreduce(MPI.IN_PLACE, buffers.work, op=MPI.SUM),
                     lambda last: common.count_wrong(buffers.work, buffers.expected),
                     common.busbw_factor(buffers.size))


def _gloo_contender(buffers: Buffers, dist: Any) -> Contender:
    import torch
    tensor = torch.from_numpy(buffers.work)  # shares the memory: refills reach gloo too
    return Contender(GLOO, lambda: dist.all_reduce(tensor),
                     lambda last: common.count_wrong(buffers.work, buffers.expected),
                     common.busbw_factor(buffers.size))


def _sendrecv_contender(buffers: Buffers, comm: Any) -> Contender:
    right = (buffers.rank + 1) % buffers.size
    left = (buffers.rank - 1) % buffers.size

    def check(last: bool) -> int:
        # A copy needs less checking than a reduction; regenerating the left neighbour's
        # values costs as much as the transfer, so only the last iteration is checked.
        if not last:
            return 0
        return common.count_wrong_against_rank(buffers.work, left, buffers.size, buffers.dtype)

    # Each rank sends its whole buffer right while receiving the left one's: bandwidth = bytes
    # per second over one ring link in each direction, the ceiling of a ring's busbw.
    return Contender(SENDRECV,
                     lambda: comm.Sendrecv(buffers.source, dest=right, recvbuf=buffers.work,
                                           source=left),
                     check, 1.0)


def _mpi_supports(dtype: str, comm: Any, MPI: Any) -> str:
    """'' if mpi4py can reduce this dtype, else the reason."""
    try:
        probe = np.zeros(1, dtype=dtype)
        comm.Allreduce(MPI.IN_PLACE, probe, op=MPI.SUM)
    except Exception as error:  # noqa: BLE001 - mpi4py raises several types for unknown dtypes
        return f"MPI cannot reduce {dtype} through mpi4py ({error})"
    return ""


def summarize(times: Sequence[float], nbytes: int, bandwidth_factor: float,
              wrong: int) -> Dict[str, Any]:
    """Median time and bandwidths of one tool at one size (JSON-ready)."""
    seconds = common.median(times)
    algbw = nbytes / seconds / 1e9 if seconds > 0 else float("nan")
    return {
        "times_s": [float(t) for t in times],
        "time_us": common.finite_or_none(seconds * 1e6),
        "algbw_GBps": common.finite_or_none(algbw),
        "busbw_GBps": common.finite_or_none(algbw * bandwidth_factor),
        "wrong": int(wrong),
    }


def ratios(row: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """dist_sync against each reference: speed-ups (other's time / dist_sync's) and the fraction
    of the ring link's bandwidth dist_sync's busbw reaches."""
    out: Dict[str, Optional[float]] = {}
    ds_time = (row.get(DIST_SYNC) or {}).get("time_us")
    for key in (RAW, MPI_ALLREDUCE, GLOO):
        other = (row.get(key) or {}).get("time_us")
        out[f"{DIST_SYNC}_speedup_vs_{key}"] = (
            common.finite_or_none(other / ds_time) if other and ds_time else None)
    link = (row.get(SENDRECV) or {}).get("busbw_GBps")
    ds_busbw = (row.get(DIST_SYNC) or {}).get("busbw_GBps")
    out[f"{DIST_SYNC}_busbw_fraction_of_{SENDRECV}"] = (
        common.finite_or_none(ds_busbw / link) if ds_busbw is not None and link else None)
    return out


def table_lines(rows: Sequence[Dict[str, Any]], present: Sequence[str]) -> List[str]:
    """The nccl-tests-style table of every size."""
    f1, f2 = common.fmt_float(1), common.fmt_float(2)
    columns = [common.Column("size", 12, common.fmt_int), common.Column("count", 12, common.fmt_int),
               common.Column("type", 8, common.fmt_str), common.Column("redop", 6, common.fmt_str)]
    groups = [("", 4)]
    getters: List[Callable[[Dict[str, Any]], Any]] = [
        lambda r: r["bytes"], lambda r: r["count"], lambda r: r["dtype"], lambda r: r["op"]]

    def field_of(key: str, name: str) -> Callable[[Dict[str, Any]], Any]:
        return lambda r: (r.get(key) or {}).get(name)

    for key in TOOLS:
        if key not in present:
            continue
        names = [("time", "time_us", 10, f1)]
        if key == DIST_SYNC:
            names.append(("algbw", "algbw_GBps", 7, f2))
        names.append(("busbw" if key != SENDRECV else "bw", "busbw_GBps", 7, f2))
        if key != RAW:  # the raw hook reduces zeros; there is nothing to check
            names.append(("#wrong", "wrong", 6, common.fmt_int))
        for title, name, width, fmt in names:
            columns.append(common.Column(title, width, fmt))
            getters.append(field_of(key, name))
        groups.append((LABELS[key], len(names)))
    ratio_titles = [(RAW, "xalgo"), (MPI_ALLREDUCE, "xMPI"), (GLOO, "xgloo")]
    ratio_count = 0
    for key, title in ratio_titles:
        if key in present:
            columns.append(common.Column(title, 6, f2))
            getters.append(lambda r, k=key: r["ratios"][f"{DIST_SYNC}_speedup_vs_{k}"])
            ratio_count += 1
    if SENDRECV in present:
        columns.append(common.Column("%link", 6, common.fmt_float(0)))
        getters.append(lambda r: _percent(r["ratios"][f"{DIST_SYNC}_busbw_fraction_of_{SENDRECV}"]))
        ratio_count += 1
    if ratio_count:
        groups.append(("dist_sync vs", ratio_count))
    body = [[get(row) for get in getters] for row in rows]
    return common.render_table(columns, body, groups)


def _percent(fraction: Optional[float]) -> Optional[float]:
    return None if fraction is None else fraction * 100.0


def plot(rows: Sequence[Dict[str, Any]], present: Sequence[str], path: str, title: str) -> None:
    """busbw against size (log-x), one line per tool."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    styles = {DIST_SYNC: "-o", RAW: "--", MPI_ALLREDUCE: "-s", GLOO: "-^", SENDRECV: ":"}
    for key in TOOLS:
        if key not in present:
            continue
        points = [(r["bytes"], r[key]["busbw_GBps"]) for r in rows
                  if r.get(key) and r[key].get("busbw_GBps") is not None]
        if points:
            xs, ys = zip(*points)
            label = LABELS[key] + (" (bw)" if key == SENDRECV else "")
            axes.plot(xs, ys, styles[key], label=label, markersize=4)
    axes.set_xscale("log", base=2)
    sizes = sorted({r["bytes"] for r in rows})
    if sizes:
        # A labelled tick every factor of 16 (4 B, 64 B, 1 KiB, ...), in binary units.
        ticks = [1 << e for e in range(2, 41, 4) if sizes[0] <= (1 << e) <= sizes[-1]]
        axes.set_xticks(ticks, [common.format_bytes(t) for t in ticks])
    axes.set_xlabel("buffer size")
    axes.set_ylabel("busbw (GB/s)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Runs the benchmark on every rank; rank 0 prints and writes files. Returns the exit code."""
    MPI = common.require_mpi4py()
    import dist_sync as ds
    from dist_sync import _core, _dtypes
    from dist_sync import config as ds_config

    names = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = names - set(SKIP_NAMES)
    if unknown:
        raise SystemExit(f"--skip: unknown {sorted(unknown)}; choose from {', '.join(SKIP_NAMES)}")
    skip = {SKIP_NAMES[name] for name in names}
    if args.iters < 1 or args.warmup_iters < 0:
        raise SystemExit("-n must be >= 1 and -w >= 0")
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    settings = ds_config.load()
    ds.init()
    notes: List[str] = []
    dtype_code = _dtypes.code_of(np.dtype(args.datatype))
    itemsize = np.dtype(args.datatype).itemsize

    mpi_problem = "" if MPI_ALLREDUCE in skip else _mpi_supports(args.datatype, comm, MPI)
    if mpi_problem:
        notes.append(mpi_problem)
        skip.add(MPI_ALLREDUCE)
    dist = None
    if GLOO not in skip:
        dist, reason = common.init_gloo(comm)
        if dist is None:
            notes.append(f"gloo skipped: {reason}")
            skip.add(GLOO)
    present = [DIST_SYNC] + [k for k in SKIPPABLE if k not in skip]

    env = common.environment(comm, argv, settings)
    sizes = common.size_list(args.minbytes, args.maxbytes, args.stepfactor)
    progress = common.Progress(rank == 0 and not args.no_progress)
    out = sys.stdout
    if rank == 0:
        _print_header(out, env, args, notes)
        lines = table_lines([], present)
        print("\n".join(lines), file=out, flush=True)

    rows: List[Dict[str, Any]] = []
    for nbytes in sizes:
        buffers = Buffers(args.datatype, max(1, nbytes // itemsize), rank, size)
        contenders = [_dist_sync_contender(buffers, ds)]
        if MPI_ALLREDUCE in present:
            contenders.append(_mpi_contender(buffers, comm, MPI))
        if GLOO in present:
            contenders.append(_gloo_contender(buffers, dist))
        if SENDRECV in present:
            contenders.append(_sendrecv_contender(buffers, comm))
        shift = len(rows) % len(contenders)  # rotate who goes first from size to size
        row = _measure_size(comm, buffers, contenders[shift:] + contenders[:shift], args, progress)
        if RAW in present:
            progress.update("algorithm only")
            row[RAW] = _raw(ds, _core, buffers.nbytes, dtype_code, args, settings)
        row["ratios"] = ratios(row)
        rows.append(row)
        progress.clear()
        if rank == 0:
            print(table_lines([row], present)[-1], file=out, flush=True)
        del buffers, contenders  # free this size's memory before the next size allocates

    wrong_total = sum(row[k]["wrong"] for row in rows for k in present if k != RAW)
    status = 0
    if rank == 0:
        _print_footer(out, rows, present, wrong_total)
        data = {"benchmark": "allreduce", "environment": env,
                "settings": {"dtype": args.datatype, "op": "sum", "iterations": args.iters,
                             "warmup": args.warmup_iters, "sizes": sizes, "tools": present,
                             "timing": "per iteration: max over ranks; reported: median over "
                                       "iterations"},
                "notes": notes, "results": rows}
        if args.json:
            common.write_json(args.json, data)
        if args.plot:
            try:
                plot(rows, present, args.plot,
                     f"allreduce {args.datatype}, {size} ranks on {env['hostname']}")
            except ImportError as error:
                print(f"# --plot needs matplotlib ({error}); no plot written", file=sys.stderr)
                status = 1
    common.stop_gloo(dist)
    ds.shutdown()
    if wrong_total:
        status = 1
    return int(comm.bcast(status, root=0))


def _measure_size(comm: Any, buffers: Buffers, contenders: Sequence[Contender],
                  args: argparse.Namespace, progress: common.Progress) -> Dict[str, Any]:
    """Every contender's warm-up and timed iterations on one size, one contender after the
    other; returns the size's JSON row (without the algorithm-only entry and the ratios)."""
    total = args.warmup_iters + args.iters
    progress.start(common.format_bytes(buffers.nbytes))
    for contender in contenders:
        for iteration in range(total):
            progress.update(f"{LABELS[contender.key]}, iteration {iteration + 1}/{total}")
            np.copyto(buffers.work, buffers.source)
            comm.Barrier()
            seconds = common.timed(contender.run)
            if iteration >= args.warmup_iters:
                contender.times.append(seconds)
            contender.wrong += contender.check(iteration == total - 1)
    row: Dict[str, Any] = {"bytes": buffers.nbytes, "count": buffers.count,
                           "dtype": buffers.dtype, "op": "sum"}
    for contender in sorted(contenders, key=lambda c: TOOLS.index(c.key)):
        contender.times = list(common.slowest_per_iteration(comm, contender.times))
        contender.wrong = common.sum_over_ranks(comm, contender.wrong)
        row[contender.key] = summarize(contender.times, buffers.nbytes,
                                       contender.bandwidth_factor, contender.wrong)
        log.debug("%d B %s: median %.1f us, %d wrong", buffers.nbytes, contender.key,
                  row[contender.key]["time_us"] or float("nan"), contender.wrong)
    return row


def _raw(ds: Any, core: Any, nbytes: int, dtype_code: int, args: argparse.Namespace,
         settings: Dict[str, Any]) -> Dict[str, Any]:
    """The algorithm alone (no engine, no negotiation), in place like the engine path."""
    ds.shutdown()  # _bench_collective drives MPI from this thread; the engine must not run
    try:
        times = core._bench_collective("allreduce_inplace", nbytes, dtype_code, args.iters,
                                       args.warmup_iters, settings)
    finally:
        ds.init()  # the same DIST_SYNC_* settings as before
    # The hook reduces zeros it allocated itself: nothing to check.
    return summarize(times, nbytes, common.busbw_factor(ds.size()), 0)


def _print_header(out: Any, env: Dict[str, Any], args: argparse.Namespace,
                  notes: Sequence[str]) -> None:
    config = env["dist_sync_config"]
    print(f"# dist_sync allreduce benchmark: {env['ranks']} ranks on {', '.join(env['hosts'])} "
          f"({env['cpu_count']} CPUs, {env['cpu_model']})", file=out)
    print(f"# {env['dist_sync_mpi_library'].splitlines()[0] if env['dist_sync_mpi_library'] else ''}",
          file=out)
    print(f"# {args.iters} timed iterations after {args.warmup_iters} warm-up; time = median over "
          f"iterations of the slowest rank; bandwidths in GB/s (1e9); busbw = algbw * 2(N-1)/N",
          file=out)
    print(f"# engine: fusion {config['fusion_threshold_bytes']} B, cycle {config['cycle_time_ms']} ms, "
          f"ring segment {_segment_text(config['ring_segment_bytes'])} x {config['ring_in_flight']} in flight, "
          f"recursive doubling up to {config['small_allreduce_bytes']} B", file=out)
    print("# xalgo/xMPI/xgloo: the other's time / dist_sync's (>1: dist_sync faster); "
          "%link: dist_sync busbw / MPI_Sendrecv bw", file=out)
    for note in notes:
        print(f"# note: {note}", file=out)
    out.flush()


def _print_footer(out: Any, rows: Sequence[Dict[str, Any]], present: Sequence[str],
                  wrong_total: int) -> None:
    for key in present:
        values = [r[key]["busbw_GBps"] for r in rows if r.get(key) and r[key]["busbw_GBps"] is not None]
        if values:
            print(f"# Avg bus bandwidth {LABELS[key]:>26}: {np.mean(values):.3f} GB/s", file=out)
    print(f"# Out of bounds values : {wrong_total} {'OK' if wrong_total == 0 else 'FAILED'}",
          file=out, flush=True)


def _segment_text(segment_bytes: int) -> str:
    """The ring segment setting as the engine applies it (0: chosen per transport)."""
    if segment_bytes == 0:
        return "auto (1 MiB within a host, 32 KiB across hosts)"
    return f"{segment_bytes} B"
