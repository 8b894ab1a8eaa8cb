"""``python -m dist_sync.bench fusion``: what tensor fusion buys on a real model's gradients.

ResNet-50's 161 parameter tensors (25,557,032 float32 values, 102 MB; sizes from 64 values to
2.4 million) are reduced, in this order within every repetition (rotated, so no variant always
follows the same one):

(a) ``async``: all 161 submitted with ``allreduce_async_`` (named, in place), newest layer
    first as backpropagation produces them, then all synchronized: the engine negotiates them
    together and fuses them into few ring passes (DIST_SYNC_FUSION_THRESHOLD);
(b) ``one_buffer``: one allreduce of a single buffer of the same total size, the lower bound
    fusion approaches;
(c) ``one_by_one``: each tensor synchronously, one after the other (no fusion possible);
(d) ``buckets``: DDP-style buckets through dist_sync: copied into a 1 MiB first bucket and
    25 MiB buckets after it (torch DDP's default caps), each bucket allreduced asynchronously,
    copied back;
(e) ``gloo_buckets``: the same buckets through torch.distributed gloo (what DDP itself does on
    CPU), if torch is importable;
(f) ``async_views``: (a) again, but the 161 tensors are consecutive views of one large array.
    (a) and (b) differ in two ways, the fusion machinery (161 requests, spans, negotiation) and
    the memory: numpy puts arrays of 4 MiB and more on 2 MiB huge pages and smaller ones on
    4 KiB pages, which makes MPI's shared-memory copies slower (Note [Huge pages] in
    csrc/common/host_buffer.h). (f) has (a)'s machinery and (b)'s memory, so it tells the two
    apart.

The variants run at each ``--scale`` in turn (default ``1,0.01``): at full size, then with every
tensor at 1 % of its size (~1 MB in all), where what 161 separate operations cost (submission,
negotiation, completion) dominates rather than moving bytes, as it does for a model's norm
layers, biases and small embeddings.

Every variant is checked (exact integer sums, Note [Exact check values] in common.py). Timing
follows Note [How a benchmark iteration is timed]: barrier, the variant, max over ranks,
median over repetitions. The first (warm-up) repetitions negotiate every name and fill the
response cache, as the first training step would.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import common
from .resnet50 import scaled_counts

log = logging.getLogger("dist_sync.bench.fusion")

FIRST_BUCKET_BYTES = 1 << 20   # torch DDP: dist._DEFAULT_FIRST_BUCKET_BYTES
BUCKET_BYTES = 25 << 20        # torch DDP: bucket_cap_mb=25
# Full size, then 1 %: at 1 % (~1 MB in all) the per-operation cost of 161 small tensors
# dominates, which is what norm layers, biases and small embeddings cost a real model.
DEFAULT_SCALES = (1.0, 0.01)

ASYNC, ONE_BUFFER, ONE_BY_ONE, BUCKETS, GLOO_BUCKETS, ASYNC_VIEWS, GROUPED = (
    "async", "one_buffer", "one_by_one", "buckets", "gloo_buckets", "async_views", "grouped")
LABELS = {
    ASYNC: "(a) 161 async + synchronize",
    ONE_BUFFER: "(b) one buffer, same total",
    ONE_BY_ONE: "(c) 161 one by one, sync",
    BUCKETS: "(d) DDP buckets, dist_sync",
    GLOO_BUCKETS: "(e) DDP buckets, gloo",
    ASYNC_VIEWS: "(f) (a) on views of one array",
    GROUPED: "(g) one grouped_allreduce_",
}
VARIANTS = (ASYNC, ONE_BUFFER, ONE_BY_ONE, BUCKETS, GLOO_BUCKETS, ASYNC_VIEWS, GROUPED)


def ddp_buckets(nbytes: Sequence[int], first_cap: int = FIRST_BUCKET_BYTES,
                cap: int = BUCKET_BYTES) -> List[List[int]]:
    """Tensor indices per bucket, the way torch DDP assigns them: in reverse parameter order
    (the order backward produces gradients), a bucket closing once it holds at least its cap
    (the first bucket's cap is smaller so communication starts early)."""
    buckets: List[List[int]] = [[]]
    filled = 0
    for index in reversed(range(len(nbytes))):
        buckets[-1].append(index)
        filled += nbytes[index]
        if filled >= (first_cap if len(buckets) == 1 else cap):
            buckets.append([])
            filled = 0
    return [b for b in buckets if b]


@dataclass
class Workload:
    """The 161 gradient tensors (separate allocations, as a model's are), a flat buffer of the
    same total, the 161 tensors again as views of one array, DDP buckets, and the exact
    expected sums."""
    counts: List[int]
    rank: int
    size: int
    dtype: str = "float32"
    tensors: List[np.ndarray] = field(init=False)
    flat: np.ndarray = field(init=False)
    views: List[np.ndarray] = field(init=False)
    _carved: np.ndarray = field(init=False)
    offsets: List[int] = field(init=False)
    buckets: List[List[int]] = field(init=False)
    bucket_buffers: List[np.ndarray] = field(init=False)
    _source: np.ndarray = field(init=False)
    _expected: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        total = sum(self.counts)
        self._source = common.rank_input(total, self.rank, self.size, self.dtype)
        self._expected = common.expected_sum(total, self.size, self.dtype)
        self.offsets = list(np.cumsum([0] + self.counts[:-1]))
        self.tensors = [np.empty(c, dtype=self.dtype) for c in self.counts]
        self.flat = np.empty(total, dtype=self.dtype)
        self._carved = np.empty(total, dtype=self.dtype)
        self.views = [self._view(self._carved, i) for i in range(len(self.counts))]
        itemsize = np.dtype(self.dtype).itemsize
        self.buckets = ddp_buckets([c * itemsize for c in self.counts])
        self.bucket_buffers = [np.empty(sum(self.counts[i] for i in b), dtype=self.dtype)
                               for b in self.buckets]
        self.refill_tensors()
        self.refill_flat()

    @property
    def total_bytes(self) -> int:
        return self.flat.nbytes

    def _view(self, array: np.ndarray, index: int) -> np.ndarray:
        start = self.offsets[index]
        return array[start:start + self.counts[index]]

    def refill_tensors(self) -> None:
        """Puts this rank's input back into the 161 tensors."""
        for index, tensor in enumerate(self.tensors):
            np.copyto(tensor, self._view(self._source, index))

    def refill_flat(self) -> None:
        """Puts this rank's input back into the flat buffer."""
        np.copyto(self.flat, self._source)

    def refill_views(self) -> None:
        """Puts this rank's input back into the array the views are carved from."""
        np.copyto(self._carved, self._source)

    def wrong_in_tensors(self) -> int:
        return sum(common.count_wrong(t, self._view(self._expected, i))
                   for i, t in enumerate(self.tensors))

    def wrong_in_flat(self) -> int:
        return common.count_wrong(self.flat, self._expected)

    def wrong_in_views(self) -> int:
        return common.count_wrong(self._carved, self._expected)

    # --- the variants (each leaves its result where its checker looks) -------------------

    def run_async(self, ds: Any, views: bool = False) -> None:
        tensors, prefix = (self.views, "resnet50.view") if views else (self.tensors, "resnet50")
        handles = [ds.allreduce_async_(tensors[i], op=ds.Sum, name=f"{prefix}.{i}")
                   for i in reversed(range(len(tensors)))]
        for handle in handles:
            ds.synchronize(handle)

    def run_grouped(self, ds: Any) -> None:
        ds.grouped_allreduce_(self.tensors[::-1], op=ds.Sum, name="resnet50.grouped")

    def run_one_buffer(self, ds: Any) -> None:
        ds.allreduce_(self.flat, op=ds.Sum, name="resnet50.flat")

    def run_one_by_one(self, ds: Any) -> None:
        for i in reversed(range(len(self.tensors))):
            ds.allreduce_(self.tensors[i], op=ds.Sum, name=f"resnet50.{i}")

    def _fill_bucket(self, number: int) -> np.ndarray:
        bucket = self.bucket_buffers[number]
        np.concatenate([self.tensors[i] for i in self.buckets[number]], out=bucket)
        return bucket

    def _empty_bucket(self, number: int) -> None:
        bucket, start = self.bucket_buffers[number], 0
        for i in self.buckets[number]:
            np.copyto(self.tensors[i], bucket[start:start + self.counts[i]])
            start += self.counts[i]

    def run_buckets(self, ds: Any) -> None:
        handles = [ds.allreduce_async_(self._fill_bucket(b), op=ds.Sum, name=f"resnet50.bucket.{b}")
                   for b in range(len(self.buckets))]
        for number, handle in enumerate(handles):
            ds.synchronize(handle)
            self._empty_bucket(number)

    def run_gloo_buckets(self, dist: Any) -> None:
        import torch
        works = [dist.all_reduce(torch.from_numpy(self._fill_bucket(b)), async_op=True)
                 for b in range(len(self.buckets))]
        for number, work in enumerate(works):
            work.wait()
            self._empty_bucket(number)


@dataclass
class Variant:
    """One way of reducing the gradients: ``refill`` restores the inputs it reduces (untimed),
    ``run`` reduces them, ``wrong`` counts wrong values afterwards."""
    key: str
    run: Callable[[], Any]
    refill: Callable[[], None]
    wrong: Callable[[], int]
    times: List[float] = field(default_factory=list)
    wrong_total: int = 0


def variants_for(workload: Workload, ds: Any, dist: Any, wanted: Sequence[str]) -> List[Variant]:
    """The runnable variants among ``wanted`` (gloo only if ``dist`` is set)."""
    runs: Dict[str, Callable[[], Any]] = {
        ASYNC: lambda: workload.run_async(ds),
        ONE_BUFFER: lambda: workload.run_one_buffer(ds),
        ONE_BY_ONE: lambda: workload.run_one_by_one(ds),
        BUCKETS: lambda: workload.run_buckets(ds),
        GLOO_BUCKETS: lambda: workload.run_gloo_buckets(dist),
        ASYNC_VIEWS: lambda: workload.run_async(ds, views=True),
        GROUPED: lambda: workload.run_grouped(ds),
    }
    variants = []
    for key in wanted:
        if key == GLOO_BUCKETS and dist is None:
            continue
        if key == ONE_BUFFER:
            variants.append(Variant(key, runs[key], workload.refill_flat, workload.wrong_in_flat))
        elif key == ASYNC_VIEWS:
            variants.append(Variant(key, runs[key], workload.refill_views, workload.wrong_in_views))
        else:
            variants.append(Variant(key, runs[key], workload.refill_tensors,
                                    workload.wrong_in_tensors))
    return variants


def measure(comm: Any, workload: Workload, variants: Sequence[Variant], iterations: int,
            warmup: int, progress: Optional[common.Progress] = None) -> None:
    """Runs every variant ``warmup + iterations`` times, interleaved and rotated; leaves the
    slowest-rank time per timed iteration in ``variant.times`` and the wrong values summed over
    ranks in ``variant.wrong_total`` (on every rank)."""
    total = warmup + iterations
    for iteration in range(total):
        shift = iteration % len(variants)
        for variant in list(variants[shift:]) + list(variants[:shift]):
            if progress is not None:
                progress.update(f"{LABELS[variant.key]}, repetition {iteration + 1}/{total}")
            variant.refill()
            comm.Barrier()
            seconds = common.timed(variant.run)
            if iteration >= warmup:
                variant.times.append(seconds)
            variant.wrong_total += variant.wrong()
    for variant in variants:
        variant.times = list(common.slowest_per_iteration(comm, variant.times))
        variant.wrong_total = common.sum_over_ranks(comm, variant.wrong_total)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--iters", type=int, default=10,
                        help="timed repetitions of each variant (default 10)")
    parser.add_argument("-w", "--warmup_iters", type=int, default=3,
                        help="untimed repetitions first (default 3)")
    parser.add_argument("--scale", type=_scales, default=list(DEFAULT_SCALES),
                        help="comma-separated factors to multiply every tensor's size by, one "
                             "table section each (default 1,0.01: the real ResNet-50, then the "
                             "same 161 tensors at 1 %% of their size, where the per-operation "
                             "cost dominates; e.g. 0.01 alone for a quick run)")
    parser.add_argument("--skip", default="",
                        help=f"comma-separated variants to leave out: {', '.join(VARIANTS[2:])} "
                             f"(async and one_buffer always run)")
    parser.add_argument("--json", metavar="FILE", help="write every number to FILE (rank 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def _scales(text: str) -> List[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"scales must be positive numbers, got {text!r}")
    return values


def summary(variants: Sequence[Variant], total_bytes: int, size: int) -> Dict[str, Any]:
    """Per-variant numbers and the two ratios the targets are stated in."""
    results: Dict[str, Any] = {}
    for variant in variants:
        seconds = common.median(variant.times)
        results[variant.key] = {
            "times_s": [float(t) for t in variant.times],
            "time_ms": common.finite_or_none(seconds * 1e3),
            "busbw_GBps": common.finite_or_none(
                total_bytes / seconds / 1e9 * common.busbw_factor(size)) if seconds > 0 else None,
            "wrong": int(variant.wrong_total),
        }

    def ratio(a: str, b: str) -> Optional[float]:
        return common.ratio(results, a, b, "time_ms")
    return {"variants": results,
            "ratios": {"async_over_one_buffer": ratio(ASYNC, ONE_BUFFER),
                       "one_by_one_over_async": ratio(ONE_BY_ONE, ASYNC),
                       "buckets_over_async": ratio(BUCKETS, ASYNC),
                       "gloo_buckets_over_async": ratio(GLOO_BUCKETS, ASYNC),
                       "async_views_over_one_buffer": ratio(ASYNC_VIEWS, ONE_BUFFER),
                       "grouped_over_one_buffer": ratio(GROUPED, ONE_BUFFER)}}


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Runs the benchmark on every rank, once per scale; rank 0 prints and writes the JSON.
    Returns the exit code."""
    MPI = common.require_mpi4py()
    import dist_sync as ds
    from dist_sync import config as ds_config

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(VARIANTS[2:])
    if unknown:
        raise SystemExit(f"--skip: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS[2:])}")
    if args.iters < 1 or args.warmup_iters < 0:
        raise SystemExit("-n must be >= 1 and -w >= 0")
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    settings = ds_config.load()
    ds.init()
    notes: List[str] = []
    dist = None
    if GLOO_BUCKETS not in skip:
        dist, reason = common.init_gloo(comm)
        if dist is None:
            notes.append(f"gloo buckets skipped: {reason}")
    env = common.environment(comm, argv, settings)
    runs: List[Dict[str, Any]] = []
    wrong = 0
    for scale in args.scale:
        workload = Workload(scaled_counts(scale), rank, size)
        log.debug("DDP buckets (tensor indices): %s", workload.buckets)
        variants = variants_for(workload, ds, dist, [v for v in VARIANTS if v not in skip])
        progress = common.Progress(rank == 0 and not args.no_progress)
        progress.start(f"fusion x{scale:g}")
        measure(comm, workload, variants, args.iters, args.warmup_iters, progress)
        progress.clear()
        result = summary(variants, workload.total_bytes, size)
        wrong += sum(v["wrong"] for v in result["variants"].values())
        runs.append({"settings": {"iterations": args.iters, "warmup": args.warmup_iters,
                                  "scale": scale, "tensors": len(workload.counts),
                                  "elements": int(sum(workload.counts)),
                                  "total_bytes": workload.total_bytes, "dtype": workload.dtype,
                                  "bucket_sizes_bytes": [int(b.nbytes)
                                                         for b in workload.bucket_buffers],
                                  "tensor_counts": workload.counts},
                     **result})
        if rank == 0:
            _print(sys.stdout, env, args, workload, scale, result, notes, header=len(runs) == 1)
        del workload, variants
    if rank == 0 and args.json:
        # The first scale's numbers at the top level (what one --scale writes); every scale's
        # under "scales".
        common.write_json(args.json, {"benchmark": "fusion", "environment": env, "notes": notes,
                                      **runs[0], "scales": runs})
    common.stop_gloo(dist)
    ds.shutdown()
    return 1 if wrong else 0


def _print(out: Any, env: Dict[str, Any], args: argparse.Namespace, workload: Workload,
           scale: float, result: Dict[str, Any], notes: Sequence[str], header: bool) -> None:
    config = env["dist_sync_config"]
    if header:
        print(f"# dist_sync fusion benchmark: ResNet-50's gradients, {env['ranks']} ranks on "
              f"{', '.join(env['hosts'])} ({env['cpu_count']} CPUs)", file=out)
        print(f"# {args.iters} timed repetitions after {args.warmup_iters} warm-up; time = median "
              f"of the slowest rank; fusion threshold {config['fusion_threshold_bytes']} B, cycle "
              f"{config['cycle_time_ms']} ms", file=out)
        for note in notes:
            print(f"# note: {note}", file=out)
    print(f"# x{scale:g}: {len(workload.counts)} tensors, {sum(workload.counts):,} float32 = "
          f"{common.format_bytes(workload.total_bytes)}; {len(workload.buckets)} DDP buckets",
          file=out)
    columns = [common.Column("variant", 30, common.fmt_str),
               common.Column("time(ms)", 10, common.fmt_float(2)),
               common.Column("busbw", 7, common.fmt_float(2)),
               common.Column("x(b)", 6, common.fmt_float(2)),
               common.Column("#wrong", 6, common.fmt_int)]
    variants = result["variants"]
    base = (variants.get(ONE_BUFFER) or {}).get("time_ms")
    rows = [[LABELS[key], v["time_ms"], v["busbw_GBps"],
             v["time_ms"] / base if base and v["time_ms"] else None, v["wrong"]]
            for key, v in variants.items()]
    print("\n".join(common.render_table(columns, rows)), file=out)
    ratios = result["ratios"]
    # At full size fusion should make the 161 tensors cost little more than one buffer; at 1 %
    # each tensor's fixed submission cost dominates, so the aim there is looser.
    target = 1.2 if scale >= 1 else 3.0
    parts = [f"(a)/(b) = {_fmt(ratios['async_over_one_buffer'])} (target <= {target:g})"]
    if ratios["one_by_one_over_async"] is not None:
        parts.append(f"(c)/(a) = {_fmt(ratios['one_by_one_over_async'])}")
    print("# " + "   ".join(parts), file=out, flush=True)


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"
