"""``python -m dist_sync.bench tune``: sweeps of dist_sync's tunables, and the defaults they suggest.

* ``segments``: ring segment size x segments in flight (DIST_SYNC_RING_SEGMENT_BYTES,
  DIST_SYNC_RING_IN_FLIGHT), timed on the algorithm alone (``_core._bench_collective``, in place
  as the engine runs it, ring forced) at large sizes, where they matter.
* ``small``: ring against recursive doubling for small and medium sizes, same hook: the
  crossover is the natural DIST_SYNC_SMALL_ALLREDUCE_BYTES (:func:`best_threshold`).
* ``cycle``: the engine with each DIST_SYNC_CYCLE_TIME_MS: 4 KiB synchronous allreduce latency,
  ResNet-50's 161 gradients async (fusion benchmark variant (a)), and the CPU an idle engine
  burns (process CPU time while the main thread sleeps; the engine thread is the only one
  awake).
* ``fusion``: the engine with each DIST_SYNC_FUSION_THRESHOLD on the same ResNet-50 workload,
  against one allreduce of a buffer of the same total size.

Sweeps of engine settings restart the engine per setting, so they cannot be interleaved
iteration by iteration; instead ``--rounds`` repeats the whole sweep (in alternating order) and
the medians pool every round, so slow drift on a shared machine hits every setting alike.
"""
from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from . import common, fusion

log = logging.getLogger("dist_sync.bench.tune")

SWEEPS = ("segments", "small", "cycle", "fusion")
HUGE = 1 << 62       # a small_allreduce_bytes that makes every size "small"
# Settings within this fraction of the best count as equally good; the suggestion then picks the
# cheapest of them (see each sweep's rule).
TOLERANCE = 0.10
# A latency this close to the best counts as equal whatever the ratio (a few microseconds of
# scheduling noise are 30 % of a 15 us allreduce).
LATENCY_SLACK_MS = 0.010


def _byte_list(text: str) -> List[int]:
    return [common.parse_size(part) for part in text.split(",") if part.strip()]


def _float_list(text: str) -> List[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _int_list(text: str) -> List[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sweep", default=",".join(SWEEPS),
                        help=f"comma-separated sweeps to run (default all: {','.join(SWEEPS)})")
    parser.add_argument("-n", "--iters", type=int, default=10,
                        help="timed iterations per setting and round (default 10)")
    parser.add_argument("-w", "--warmup_iters", type=int, default=2,
                        help="untimed iterations per setting and round (default 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="repeat each sweep this many times, alternating the order (default 3)")
    parser.add_argument("--sizes", type=_byte_list, default=_byte_list("4M,64M"),
                        help="buffer sizes of the segment sweep (default 4M,64M)")
    parser.add_argument("--segments", type=_byte_list,
                        default=_byte_list("32K,64K,128K,256K,512K,1M,2M,4M"),
                        help="ring segment sizes (default 32K..4M)")
    parser.add_argument("--in-flight", type=_int_list, default=_int_list("1,2,4,8"),
                        help="segments in flight (default 1,2,4,8)")
    parser.add_argument("--small-sizes", type=_byte_list,
                        default=_byte_list("1K,2K,4K,8K,16K,32K,64K,128K,256K,512K,1M,2M,4M"),
                        help="sizes of the ring vs recursive doubling sweep")
    parser.add_argument("--cycle-times", type=_float_list, default=_float_list("0.1,0.5,1,2,5"),
                        help="cycle times in ms (default 0.1,0.5,1,2,5)")
    parser.add_argument("--fusion-thresholds", type=_byte_list,
                        default=_byte_list("0,1M,4M,16M,32M,64M,128M"),
                        help="fusion thresholds (default 0,1M,4M,16M,32M,64M,128M)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="size of the ResNet-50 workload of the cycle and fusion sweeps "
                             "(default 1)")
    parser.add_argument("--idle-seconds", type=float, default=1.0,
                        help="how long to watch an idle engine's CPU use (default 1)")
    parser.add_argument("--json", metavar="FILE", help="write every number to FILE (rank 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def _rounds_order(items: Sequence[Any], round_number: int) -> List[Any]:
    """Alternates the order between rounds, so neither end of a sweep always runs first."""
    return list(items) if round_number % 2 == 0 else list(reversed(items))


def _within(value: float, best: float, lower_is_better: bool = True) -> bool:
    if lower_is_better:
        return value <= best * (1 + TOLERANCE)
    return value >= best * (1 - TOLERANCE)


# --- sweeps on the algorithm alone --------------------------------------------------------------

def _bench(core: Any, nbytes: int, settings: Dict[str, Any], args: argparse.Namespace) -> List[float]:
    from dist_sync import config as ds_config
    return list(core._bench_collective("allreduce_inplace", nbytes, core.DataType.FLOAT32,
                                       args.iters, args.warmup_iters,
                                       {**ds_config.load(), **settings}))


def sweep_segments(core: Any, size: int, args: argparse.Namespace, progress: common.Progress
                   ) -> Dict[str, Any]:
    """busbw of the ring for every (segment, in flight) at every size; the suggestion is the
    setting with the best mean busbw relative to each size's best."""
    configs = [(s, f) for s in args.segments for f in args.in_flight]
    times: Dict[Tuple[int, int, int], List[float]] = {}
    for round_number in range(args.rounds):
        for nbytes in args.sizes:
            for segment, in_flight in _rounds_order(configs, round_number):
                progress.update(f"segments: {common.format_bytes(nbytes)}, segment "
                                f"{common.format_bytes(segment)} x {in_flight}, round {round_number + 1}")
                settings = {"ring_segment_bytes": segment, "ring_in_flight": in_flight,
                            "small_allreduce_bytes": 0}
                series = _bench(core, nbytes, settings, args)
                log.debug("ring %d B, segment %d x %d: median %.1f us", nbytes, segment, in_flight,
                          common.median(series) * 1e6)
                times.setdefault((nbytes, segment, in_flight), []).extend(series)
    busbw = {key: key[0] / common.median(t) / 1e9 * common.busbw_factor(size)
             for key, t in times.items()}
    score = {}
    for segment, in_flight in configs:
        score[(segment, in_flight)] = float(np.mean(
            [busbw[(n, segment, in_flight)] / max(busbw[(n, s, f)] for s, f in configs)
             for n in args.sizes]))
    best = max(score.values())
    near = sorted((c for c in configs if _within(score[c], best, lower_is_better=False)),
                  key=lambda c: (c[1], c[0]))
    chosen = max(configs, key=lambda c: score[c])
    return {
        "results": [{"bytes": n, "ring_segment_bytes": s, "ring_in_flight": f,
                     "times_s": times[(n, s, f)], "busbw_GBps": busbw[(n, s, f)]}
                    for n, s, f in sorted(times)],
        "score": [{"ring_segment_bytes": s, "ring_in_flight": f, "relative_busbw": score[(s, f)]}
                  for s, f in configs],
        "suggested": {"ring_segment_bytes": chosen[0], "ring_in_flight": chosen[1]},
        "within_tolerance": [{"ring_segment_bytes": s, "ring_in_flight": f} for s, f in near],
    }


def sweep_small(core: Any, size: int, base: Dict[str, Any], args: argparse.Namespace,
                progress: common.Progress) -> Dict[str, Any]:
    """Ring against recursive doubling per size (the engine's in-place path, with the tuned
    ring settings), and the threshold that suits the sweep best (:func:`best_threshold`)."""
    times: Dict[Tuple[str, int], List[float]] = {}
    for round_number in range(args.rounds):
        for nbytes in _rounds_order(args.small_sizes, round_number):
            for algorithm, threshold in (("ring", 0), ("recursive_doubling", HUGE)):
                progress.update(f"small: {common.format_bytes(nbytes)} {algorithm}, round "
                                f"{round_number + 1}")
                settings = dict(base, small_allreduce_bytes=threshold)
                times.setdefault((algorithm, nbytes), []).extend(_bench(core, nbytes, settings, args))
    rows = []
    for nbytes in sorted(args.small_sizes):
        rows.append({"bytes": nbytes,
                     "ring_us": common.median(times[("ring", nbytes)]) * 1e6,
                     "recursive_doubling_us": common.median(times[("recursive_doubling", nbytes)]) * 1e6,
                     "ring_times_s": times[("ring", nbytes)],
                     "recursive_doubling_times_s": times[("recursive_doubling", nbytes)]})
    return {"results": rows, "suggested": {"small_allreduce_bytes": best_threshold(rows)}}


def best_threshold(rows: Sequence[Dict[str, Any]]) -> int:
    """The recursive-doubling threshold with the least total slowdown over the swept sizes:
    for a candidate t, every size <= t runs recursive doubling and every larger size the ring,
    and each size costs its time relative to the faster algorithm there. Summing over sizes
    keeps one noisy size (a shared machine) from moving the threshold the way a "last size
    where recursive doubling wins" rule would; ties go to the smaller threshold."""
    candidates = [0] + [r["bytes"] for r in rows]

    def cost(threshold: int) -> float:
        total = 0.0
        for r in rows:
            best = min(r["ring_us"], r["recursive_doubling_us"])
            chosen = r["recursive_doubling_us"] if r["bytes"] <= threshold else r["ring_us"]
            total += chosen / best
        return total

    return min(candidates, key=lambda t: (round(cost(t), 9), t))


# --- sweeps through the engine -----------------------------------------------------------------

def _engine_latency(comm: Any, ds: Any, nbytes: int, args: argparse.Namespace) -> List[float]:
    """Slowest-rank seconds of a synchronous in-place allreduce per iteration."""
    buffer = np.ones(nbytes // 4, dtype=np.float32)
    times = []
    for iteration in range(args.warmup_iters + args.iters):
        comm.Barrier()
        seconds = common.timed(lambda: ds.allreduce_(buffer, op=ds.Max, name="tune.latency"))
        if iteration >= args.warmup_iters:
            times.append(seconds)
    return list(common.slowest_per_iteration(comm, times))


def _idle_cpu(comm: Any, seconds: float) -> float:
    """Largest fraction of a core any rank's process used while its main thread slept."""
    comm.Barrier()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    time.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - start
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(comm.allreduce(used / wall, op=common.require_mpi4py().MAX))


def _fusion_times(comm: Any, ds: Any, workload: fusion.Workload, args: argparse.Namespace
                  ) -> Tuple[Dict[str, List[float]], int]:
    variants = fusion.variants_for(workload, ds, None, [fusion.ASYNC, fusion.ONE_BUFFER])
    fusion.measure(comm, workload, variants, args.iters, args.warmup_iters)
    return {v.key: v.times for v in variants}, sum(v.wrong_total for v in variants)


def sweep_engine(comm: Any, ds: Any, key: str, values: Sequence[Any], workload: fusion.Workload,
                 args: argparse.Namespace, progress: common.Progress,
                 measure_latency: bool) -> Dict[str, Any]:
    """Restarts the engine with ``key`` = each value and measures the fusion workload (and the
    4 KiB latency and idle CPU, for the cycle time)."""
    pooled: Dict[Any, Dict[str, List[float]]] = {v: {} for v in values}
    idle: Dict[Any, List[float]] = {v: [] for v in values}
    wrong = 0
    for round_number in range(args.rounds):
        for value in _rounds_order(values, round_number):
            progress.update(f"{key} = {value}, round {round_number + 1}")
            ds.init(**{key: value})
            try:
                times, bad = _fusion_times(comm, ds, workload, args)
                wrong += bad
                for name, series in times.items():
                    pooled[value].setdefault(name, []).extend(series)
                if measure_latency:
                    pooled[value].setdefault("latency_4KiB", []).extend(
                        _engine_latency(comm, ds, 4096, args))
                    idle[value].append(_idle_cpu(comm, args.idle_seconds))
            finally:
                ds.shutdown()
    rows = []
    for value in values:
        row: Dict[str, Any] = {key: value}
        for name, series in pooled[value].items():
            row[f"{name}_times_s"] = series
            row[f"{name}_ms"] = common.median(series) * 1e3
        if measure_latency:
            row["idle_cpu_fraction"] = float(np.median(idle[value]))
        rows.append(row)
    return {"results": rows, "wrong": wrong}


def _async_ratio(row: Dict[str, Any]) -> float:
    """(a)/(b): the async time relative to the one-buffer time measured beside it. The two are
    interleaved repetition by repetition, so the ratio cancels most of the drift of a shared
    machine that the absolute times carry from one engine restart to the next."""
    return row["async_ms"] / row["one_buffer_ms"]


def suggest_cycle(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The longest cycle time (least idle CPU) whose (a)/(b) ratio is within the tolerance of
    the best one and whose 4 KiB latency is within the tolerance (or 10 us) of the best."""
    best_ratio = min(_async_ratio(r) for r in rows)
    best_latency = min(r["latency_4KiB_ms"] for r in rows)
    good = [r for r in rows if _within(_async_ratio(r), best_ratio)
            and (_within(r["latency_4KiB_ms"], best_latency)
                 or r["latency_4KiB_ms"] - best_latency <= LATENCY_SLACK_MS)]
    chosen = max(good or rows, key=lambda r: r["cycle_time_ms"])
    return {"cycle_time_ms": chosen["cycle_time_ms"]}


def suggest_fusion(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The smallest fusion threshold whose (a)/(b) ratio is within the tolerance of the best (a
    smaller threshold starts reducing the first gradients sooner in a real backward pass)."""
    best = min(_async_ratio(r) for r in rows)
    chosen = min((r for r in rows if _within(_async_ratio(r), best)),
                 key=lambda r: r["fusion_threshold_bytes"])
    return {"fusion_threshold_bytes": chosen["fusion_threshold_bytes"]}


# --- driver and report --------------------------------------------------------------------------

def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Runs the chosen sweeps on every rank; rank 0 prints the tables and the suggestions."""
    MPI = common.require_mpi4py()
    import dist_sync as ds
    from dist_sync import _core
    from dist_sync import config as ds_config

    sweeps = [s.strip() for s in args.sweep.split(",") if s.strip()]
    unknown = set(sweeps) - set(SWEEPS)
    if unknown:
        raise SystemExit(f"--sweep: unknown {sorted(unknown)}; choose from {', '.join(SWEEPS)}")
    if args.iters < 1 or args.warmup_iters < 0 or args.rounds < 1:
        raise SystemExit("-n and --rounds must be >= 1, -w >= 0")
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    base = ds_config.load()
    ds.init()
    env = common.environment(comm, argv, base)
    ds.shutdown()   # the algorithm sweeps need the engine stopped
    progress = common.Progress(rank == 0 and not args.no_progress, delay=0.0)
    out = sys.stdout
    report: Dict[str, Any] = {"benchmark": "tune", "environment": env,
                              "settings": {"iterations": args.iters, "warmup": args.warmup_iters,
                                           "rounds": args.rounds, "tolerance": TOLERANCE},
                              "sweeps": {}}
    suggested: Dict[str, Any] = {}
    wrong = 0
    if rank == 0:
        print(f"# dist_sync tune: {size} ranks on {', '.join(env['hosts'])} ({env['cpu_count']} "
              f"CPUs); {args.iters} iterations x {args.rounds} rounds per setting; time = median "
              f"of the slowest rank; busbw in GB/s", file=out, flush=True)
    if "segments" in sweeps:
        progress.start("tune")
        result = sweep_segments(_core, size, args, progress)
        progress.clear()
        report["sweeps"]["segments"] = result
        suggested.update(result["suggested"])
        if rank == 0:
            _print_segments(out, result, args)
    ring_settings = {k: suggested.get(k, base[k]) for k in ("ring_segment_bytes", "ring_in_flight")}
    if "small" in sweeps:
        progress.start("tune")
        result = sweep_small(_core, size, ring_settings, args, progress)
        progress.clear()
        report["sweeps"]["small"] = result
        suggested.update(result["suggested"])
        if rank == 0:
            _print_small(out, result)
    if "cycle" in sweeps or "fusion" in sweeps:
        workload = fusion.Workload(fusion.scaled_counts(args.scale), rank, size)
        for sweep, setting, values, suggest, latency in (
                ("cycle", "cycle_time_ms", args.cycle_times, suggest_cycle, True),
                ("fusion", "fusion_threshold_bytes", args.fusion_thresholds, suggest_fusion, False)):
            if sweep not in sweeps:
                continue
            progress.start("tune")
            result = sweep_engine(comm, ds, setting, values, workload, args, progress,
                                  measure_latency=latency)
            progress.clear()
            result["suggested"] = suggest(result["results"])
            wrong += result["wrong"]
            report["sweeps"][sweep] = result
            suggested.update(result["suggested"])
            if rank == 0:
                _print_engine(out, setting, result, latency=latency)
    report["suggested"] = suggested
    report["current_defaults"] = {k: base[k] for k in suggested}
    if rank == 0:
        print("# suggested defaults (current in brackets):", file=out)
        for key, value in suggested.items():
            print(f"#   {key} = {value}   [{base[key]}]", file=out)
        if wrong:
            print(f"# WRONG VALUES: {wrong}", file=out)
        out.flush()
        if args.json:
            common.write_json(args.json, report)
    return 1 if wrong else 0


def _print_segments(out: Any, result: Dict[str, Any], args: argparse.Namespace) -> None:
    by_key = {(r["bytes"], r["ring_segment_bytes"], r["ring_in_flight"]): r["busbw_GBps"]
              for r in result["results"]}
    print("\n# ring busbw (GB/s) by segment size (rows) and segments in flight (columns)", file=out)
    for nbytes in args.sizes:
        columns = [common.Column(f"{common.format_bytes(nbytes)}: segment", 18, common.fmt_str)]
        columns += [common.Column(f"x{f}", 7, common.fmt_float(2)) for f in args.in_flight]
        rows = [[common.format_bytes(s)] + [by_key[(nbytes, s, f)] for f in args.in_flight]
                for s in args.segments]
        print("\n".join(common.render_table(columns, rows)), file=out)
    chosen = result["suggested"]
    near = ", ".join(f"{common.format_bytes(c['ring_segment_bytes'])} x{c['ring_in_flight']}"
                     for c in result["within_tolerance"])
    print(f"# best: segment {common.format_bytes(chosen['ring_segment_bytes'])} x"
          f"{chosen['ring_in_flight']} in flight; within {TOLERANCE:.0%}: {near}", file=out,
          flush=True)


def _print_small(out: Any, result: Dict[str, Any]) -> None:
    print("\n# ring vs recursive doubling (algorithm only, in place)", file=out)
    columns = [common.Column("size", 10, common.fmt_str),
               common.Column("ring(us)", 10, common.fmt_float(1)),
               common.Column("rd(us)", 10, common.fmt_float(1)),
               common.Column("rd/ring", 8, common.fmt_float(2))]
    rows = [[common.format_bytes(r["bytes"]), r["ring_us"], r["recursive_doubling_us"],
             r["recursive_doubling_us"] / r["ring_us"]] for r in result["results"]]
    print("\n".join(common.render_table(columns, rows)), file=out)
    print(f"# least total slowdown with recursive doubling up to "
          f"{common.format_bytes(result['suggested']['small_allreduce_bytes'])}", file=out, flush=True)


def _print_engine(out: Any, key: str, result: Dict[str, Any], latency: bool) -> None:
    print(f"\n# engine with each {key}: ResNet-50 gradients async (a) and as one buffer (b)", file=out)
    columns = [common.Column(key, 22, common.fmt_str),
               common.Column("(a)ms", 8, common.fmt_float(2)),
               common.Column("(b)ms", 8, common.fmt_float(2)),
               common.Column("(a)/(b)", 8, common.fmt_float(2))]
    if latency:
        columns += [common.Column("4KiB(us)", 9, common.fmt_float(1)),
                    common.Column("idle%", 6, common.fmt_float(1))]
    rows = []
    for r in result["results"]:
        row = [r[key], r["async_ms"], r["one_buffer_ms"], r["async_ms"] / r["one_buffer_ms"]]
        if latency:
            row += [r["latency_4KiB_ms"] * 1e3, r["idle_cpu_fraction"] * 100]
        rows.append(row)
    print("\n".join(common.render_table(columns, rows)), file=out)
    print(f"# suggested {key} = {result['suggested'][key]}", file=out, flush=True)
