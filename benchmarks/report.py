"""``python -m benchmarks.report FILE.json ...``: Markdown tables from benchmark JSON files.

docs/benchmarks.md is made with it, so whoever reruns the benchmarks on another machine can
regenerate its tables the same way. Several files of the same benchmark and rank count (repeated
runs) are combined: each number is the median over the runs, and the speed-ups also show their
range over the runs, so a reader can see how much a shared machine moved them. Needs no MPI.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from dist_sync.bench import common
from dist_sync.bench.allreduce import TOOLS as ALLREDUCE_TOOLS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE.json",
                        help="JSON written by the allreduce, fusion or tune benchmark (--json)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw busbw against size from the allreduce files, medians over "
                             "runs (one file per rank count: FILE_<N>ranks.png when several)")


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    """The median of the values that were measured (None: not measured in that run)."""
    present = [v for v in values if v is not None]
    return common.median(present) if present else None


def _range(values: Sequence[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
    present = [v for v in values if v is not None]
    return (min(present), max(present)) if present else (None, None)


def _num(value: Optional[float], digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ratio(values: Sequence[Optional[float]]) -> str:
    middle = _median(values)
    low, high = _range(values)
    if middle is None:
        return "–"
    if len([v for v in values if v is not None]) == 1 or low == high:
        return f"{middle:.2f}"
    return f"{middle:.2f} ({low:.2f}–{high:.2f})"


def _size(nbytes: int) -> str:
    return common.format_bytes(nbytes).replace(" ", "\u00a0")


def _table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print("| " + " | ".join(header) + " |", file=out)
    print("|" + "|".join("---:" if i else ":---" for i in range(len(header))) + "|", file=out)
    for row in rows:
        print("| " + " | ".join(row) + " |", file=out)


def _runs_line(out: TextIO, runs: Sequence[Dict[str, Any]]) -> None:
    env = runs[0]["environment"]
    dates = sorted(r["environment"]["date"] for r in runs)
    loads = [r["environment"].get("load_average_start", [None])[0] for r in runs]
    commands = list(dict.fromkeys(r["environment"]["command"] for r in runs))
    print(f"{len(runs)} run(s), {env['ranks']} ranks on {', '.join(env['hosts'])} "
          f"({env['cpu_count']} CPUs, {env['cpu_model']}), {dates[0]} to {dates[-1]}; "
          f"1-minute load average at the start of each run: "
          f"{', '.join(_num(x, 2) for x in loads)}; "
          f"{'command' if len(commands) == 1 else 'commands'}: "
          f"{'; '.join(f'`{c}`' for c in commands)}", file=out)
    print(file=out)


def _by_size(runs: Sequence[Dict[str, Any]]) -> Dict[int, List[Dict[str, Any]]]:
    by_size: Dict[int, List[Dict[str, Any]]] = defaultdict(list)
    for run in runs:
        for row in run["results"]:
            by_size[row["bytes"]].append(row)
    return by_size


def _tools(by_size: Dict[int, List[Dict[str, Any]]]) -> List[str]:
    return [t for t in ALLREDUCE_TOOLS if any(t in r for rows in by_size.values() for r in rows)]


def allreduce_plot(runs: Sequence[Dict[str, Any]], path: str) -> None:
    """The allreduce benchmark's plot, from the medians over runs."""
    from dist_sync.bench import allreduce
    by_size = _by_size(runs)
    tools = _tools(by_size)
    rows = [{"bytes": nbytes, **{tool: {"busbw_GBps": _median(
                [(e.get(tool) or {}).get("busbw_GBps") for e in entries])} for tool in tools}}
            for nbytes, entries in sorted(by_size.items())]
    env = runs[0]["environment"]
    dtype = runs[0]["settings"]["dtype"]
    allreduce.plot(rows, tools, path, f"allreduce {dtype}, {env['ranks']} ranks on "
                   f"{env['hostname']} ({env['cpu_count']} CPUs), median of {len(runs)} run(s)")


def allreduce_tables(out: TextIO, runs: Sequence[Dict[str, Any]]) -> None:
    """One table for runs of ``python -m dist_sync.bench allreduce`` with the same rank count."""
    _runs_line(out, runs)
    by_size = _by_size(runs)
    tools = _tools(by_size)
    header = ["size"]
    titles = {"dist_sync": "dist_sync", "dist_sync_raw": "algorithm only",
              "mpi_allreduce": "MPI_Allreduce", "gloo": "gloo", "mpi_sendrecv": "MPI_Sendrecv"}
    for tool in tools:
        header += [f"{titles[tool]} µs", f"{titles[tool]} {'bw' if tool == 'mpi_sendrecv' else 'busbw'}"]
    ratio_keys = [("mpi_allreduce", "× MPI_Allreduce"), ("gloo", "× gloo")]
    header += [title for key, title in ratio_keys if key in tools]
    if "mpi_sendrecv" in tools:
        header.append("busbw / Sendrecv bw")
    header.append("#wrong")
    rows = []
    for nbytes in sorted(by_size):
        entries = by_size[nbytes]
        row = [_size(nbytes)]
        for tool in tools:
            row.append(_num(_median([(e.get(tool) or {}).get("time_us") for e in entries]), 1))
            row.append(_num(_median([(e.get(tool) or {}).get("busbw_GBps") for e in entries]), 2))
        for key, _ in ratio_keys:
            if key in tools:
                row.append(_ratio([e["ratios"].get(f"dist_sync_speedup_vs_{key}") for e in entries]))
        if "mpi_sendrecv" in tools:
            row.append(_ratio([e["ratios"].get("dist_sync_busbw_fraction_of_mpi_sendrecv")
                               for e in entries]))
        row.append(str(sum((e.get(t) or {}).get("wrong", 0) for e in entries for t in tools)))
        rows.append(row)
    _table(out, header, rows)
    print("\nTimes: median over iterations of the slowest rank (µs), then the median over runs; "
          "bandwidths in GB/s (10^9 B/s); × columns: the other's time / dist_sync's (median, "
          "range over runs in brackets).", file=out)


def fusion_tables(out: TextIO, runs: Sequence[Dict[str, Any]]) -> None:
    """One table for runs of ``python -m dist_sync.bench fusion`` with the same rank count."""
    _runs_line(out, runs)
    labels = {"async": "(a) 161 × allreduce_async_, then synchronize",
              "one_buffer": "(b) one buffer of the same total size",
              "one_by_one": "(c) 161 × synchronous allreduce_",
              "buckets": "(d) DDP-style buckets through dist_sync",
              "gloo_buckets": "(e) DDP-style buckets through gloo",
              "async_views": "(f) as (a), the tensors carved from one array",
              "grouped": "(g) the 161 tensors in one grouped_allreduce_"}
    rows = []
    for key, label in labels.items():
        times = [r["variants"][key]["time_ms"] for r in runs if key in r["variants"]]
        if not times:
            continue
        wrong = sum(r["variants"][key]["wrong"] for r in runs if key in r["variants"])
        over_b = [r["variants"][key]["time_ms"] / r["variants"]["one_buffer"]["time_ms"]
                  for r in runs if key in r["variants"]]
        rows.append([label, _num(_median(times), 2), _ratio(over_b), str(wrong)])
    _table(out, ["variant", "time (ms)", "÷ (b)", "#wrong"], rows)
    ratios = [r["ratios"] for r in runs]
    print(f"\n(a)/(b) = {_ratio([x['async_over_one_buffer'] for x in ratios])}, "
          f"(c)/(a) = {_ratio([x['one_by_one_over_async'] for x in ratios])} "
          f"(median over runs, range in brackets).", file=out)


def train_tables(out: TextIO, runs: Sequence[Dict[str, Any]]) -> None:
    """One table for runs of ``python -m dist_sync.bench train`` with the same rank count."""
    _runs_line(out, runs)
    labels = {"none": "no communication", "dist_sync": "dist_sync DistributedOptimizer",
              "ddp": "torch DDP (gloo)"}
    rows = []
    for key, label in labels.items():
        present = [r for r in runs if key in r["modes"]]
        if not present:
            continue
        steps = [r["modes"][key]["step_ms"] for r in present]
        over_none = [r["modes"][key]["step_ms"] / r["modes"]["none"]["step_ms"] for r in present]
        differ = sum(r["modes"][key]["ranks_differing"] for r in present)
        rows.append([label, _num(_median(steps), 2), _ratio(over_none), str(differ)])
    _table(out, ["mode", "step (ms)", "÷ no communication", "#ranks differing"], rows)
    ratios = [r["ratios"] for r in runs]
    print(f"\ndist_sync / no communication = "
          f"{_ratio([x['dist_sync_over_none'] for x in ratios])}, dist_sync / DDP = "
          f"{_ratio([x['dist_sync_over_ddp'] for x in ratios])} "
          f"(median over runs, range in brackets).", file=out)


def tune_tables(out: TextIO, run: Dict[str, Any]) -> None:
    """The sweeps of one ``python -m dist_sync.bench tune`` run."""
    _runs_line(out, [run])
    sweeps = run["sweeps"]
    if "segments" in sweeps:
        results = sweeps["segments"]["results"]
        sizes = sorted({r["bytes"] for r in results})
        in_flight = sorted({r["ring_in_flight"] for r in results})
        segments = sorted({r["ring_segment_bytes"] for r in results})
        value = {(r["bytes"], r["ring_segment_bytes"], r["ring_in_flight"]): r["busbw_GBps"]
                 for r in results}
        for nbytes in sizes:
            print(f"Ring busbw (GB/s), {common.format_bytes(nbytes)}, algorithm only:\n", file=out)
            _table(out, ["segment"] + [f"{f} in flight" for f in in_flight],
                   [[_size(s)] + [_num(value[(nbytes, s, f)], 2) for f in in_flight]
                    for s in segments])
            print(file=out)
    if "small" in sweeps:
        print("Ring against recursive doubling (µs, algorithm only, in place):\n", file=out)
        _table(out, ["size", "ring", "recursive doubling", "rd / ring"],
               [[_size(r["bytes"]), _num(r["ring_us"], 1), _num(r["recursive_doubling_us"], 1),
                 _num(r["recursive_doubling_us"] / r["ring_us"], 2)]
                for r in sweeps["small"]["results"]])
        print(file=out)
    for key, title in (("cycle", "cycle_time_ms"), ("fusion", "fusion_threshold_bytes")):
        if key not in sweeps:
            continue
        latency = key == "cycle"
        header = [title, "(a) async ms", "(b) one buffer ms", "(a)/(b)"]
        if latency:
            header += ["4 KiB allreduce µs", "idle CPU %"]
        rows = []
        for r in sweeps[key]["results"]:
            label = _size(r[title]) if key == "fusion" else f"{r[title]:g}"
            row = [label, _num(r["async_ms"], 2), _num(r["one_buffer_ms"], 2),
                   _num(r["async_ms"] / r["one_buffer_ms"], 2)]
            if latency:
                row += [_num(r["latency_4KiB_ms"] * 1e3, 1), _num(r["idle_cpu_fraction"] * 100, 1)]
            rows.append(row)
        print(f"Engine with each {title} (ResNet-50 gradients):\n", file=out)
        _table(out, header, rows)
        print(file=out)
    print("Suggested: " + ", ".join(f"`{k}` = {v}" for k, v in run["suggested"].items())
          + " (current: " + ", ".join(f"{v}" for v in run["current_defaults"].values()) + ")",
          file=out)


def run(args: argparse.Namespace) -> int:
    """Prints Markdown for every group of files (same benchmark and rank count)."""
    groups: Dict[Tuple[str, int, Optional[float]], List[Dict[str, Any]]] = defaultdict(list)
    for path in args.files:
        with open(path) as handle:
            data = json.load(handle)
        if data["benchmark"] == "fusion" and len(data.get("scales", [])) > 1:
            # One table per scale: every section of the run, with the run's environment.
            for section in data["scales"]:
                groups[("fusion", data["environment"]["ranks"],
                        section["settings"]["scale"])].append(
                    {**section, "environment": data["environment"]})
        else:
            scale = data.get("settings", {}).get("scale") if data["benchmark"] == "fusion" \
                else None
            groups[(data["benchmark"], data["environment"]["ranks"], scale)].append(data)
    out = sys.stdout
    if args.plot:
        plotted = [(ranks, runs) for (benchmark, ranks, _), runs in groups.items()
                   if benchmark == "allreduce"]
        for ranks, runs in plotted:
            path = args.plot
            if len(plotted) > 1:
                stem, dot, extension = args.plot.rpartition(".")
                path = f"{stem}_{ranks}ranks.{extension}" if dot else f"{args.plot}_{ranks}ranks"
            allreduce_plot(runs, path)
    for (benchmark, ranks, scale), runs in groups.items():
        at_scale = f", tensors at x{scale:g}" if scale not in (None, 1.0) else ""
        print(f"#### {benchmark}, {ranks} ranks{at_scale}\n", file=out)
        if benchmark == "allreduce":
            allreduce_tables(out, runs)
        elif benchmark == "fusion":
            fusion_tables(out, runs)
        elif benchmark == "train":
            train_tables(out, runs)
        elif benchmark == "tune":
            for one in runs:
                tune_tables(out, one)
        else:
            print(f"(no report for benchmark {benchmark!r})", file=out)
        print(file=out)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Markdown tables from the JSON files of python -m dist_sync.bench "
                    "allreduce, fusion and tune (--json)")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
