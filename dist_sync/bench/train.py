"""``python -m dist_sync.bench train``: a training step through dist_sync, through torch DDP, and
with no communication at all, side by side in one run.

The model is a communication-heavy MLP, ``--layers`` x Linear(width, width) + Linear(width,
classes) (default 4 x 2048 + 10: 16.8 M parameters, 67 MB of float32 gradients per step), batch
``--batch-size`` per rank, plain SGD, ``--threads`` intra-op threads per rank (default 1, so the
ranks do not fight over the cores). Modes, each with its own copy of the same initial model:

``none``       the optimizer alone on every rank: no communication; the floor a perfectly hidden
               allreduce would reach;
``dist_sync``  ``dist_sync.torch.DistributedOptimizer`` (gradients submitted from backward hooks
               as they are produced, fused by the engine, awaited in ``step()``);
``ddp``        ``torch.nn.parallel.DistributedDataParallel`` over gloo (25 MiB buckets reduced
               during backward), what a torch user would pick instead.

Timing: the modes take turns, ``--steps`` steps each per round, the order rotated every round;
each step is barrier, zero_grad + forward + backward + step, the slowest rank's time, and a
mode's number is the median over all its timed steps. After the run, every mode that
communicates must have bit-identical parameters on every rank (``#differ`` counts the ranks
whose parameters differ from rank 0's); the run fails otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import common

log = logging.getLogger("dist_sync.bench.train")

NONE, DIST_SYNC, DDP = "none", "dist_sync", "ddp"
MODES = (NONE, DIST_SYNC, DDP)
LABELS = {NONE: "no communication", DIST_SYNC: "dist_sync DistributedOptimizer",
          DDP: "torch DDP (gloo)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=int, default=4, help="hidden Linear layers (default 4)")
    parser.add_argument("--width", type=int, default=2048, help="their width (default 2048)")
    parser.add_argument("--classes", type=int, default=10, help="outputs (default 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="per rank (default 32)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads per rank (default 1)")
    parser.add_argument("--steps", type=int, default=10,
                        help="timed steps per mode per round (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the modes (default 3)")
    parser.add_argument("-w", "--warmup_steps", type=int, default=3,
                        help="untimed steps of each mode first (default 3)")
    parser.add_argument("--skip", default="", help="comma-separated modes to leave out: ddp")
    parser.add_argument("--json", metavar="FILE", help="write every number to FILE (rank 0)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw each mode's step times per round (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def build_model(args: argparse.Namespace) -> Any:
    import torch.nn as nn
    layers: List[Any] = []
    for _ in range(args.layers):
        layers += [nn.Linear(args.width, args.width), nn.ReLU()]
    layers.append(nn.Linear(args.width, args.classes))
    return nn.Sequential(*layers)


def make_step(model: Any, optimizer: Any, data: Any, target: Any) -> Callable[[], None]:
    import torch.nn.functional as F

    def step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(model(data), target).backward()
        optimizer.step()
    return step


def parameter_digest(model: Any) -> str:
    digest = hashlib.sha256()
    for parameter in model.parameters():
        digest.update(parameter.detach().numpy().tobytes())
    return digest.hexdigest()


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Runs the benchmark on every rank; rank 0 prints and writes the JSON and plot."""
    MPI = common.require_mpi4py()
    import torch
    import dist_sync.torch as hvd
    from dist_sync import config as ds_config

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - {DDP}:
        raise SystemExit(f"--skip: only {DDP} can be left out, got {sorted(skip)}")
    if min(args.layers, args.width, args.classes, args.batch_size, args.threads, args.steps,
           args.rounds) < 1 or args.warmup_steps < 0:
        raise SystemExit("--layers, --width, --classes, --batch-size, --threads, --steps and "
                         "--rounds must be >= 1, -w >= 0")
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    settings = ds_config.load()
    hvd.init()
    torch.set_num_threads(args.threads)
    notes: List[str] = []
    dist = None
    if DDP not in skip:
        dist, reason = common.init_gloo(comm)
        torch.set_num_threads(args.threads)
        if dist is None:
            notes.append(f"ddp skipped: {reason}")
    env = common.environment(comm, argv, settings)

    torch.manual_seed(0)
    base = build_model(args)
    parameters = sum(p.numel() for p in base.parameters())
    generator = torch.Generator().manual_seed(1 + rank)
    data = torch.randn(args.batch_size, args.width, generator=generator)
    target = torch.randint(0, args.classes, (args.batch_size,), generator=generator)

    models: Dict[str, Any] = {}
    steps: Dict[str, Callable[[], None]] = {}
    for mode in MODES:
        if mode == DDP and dist is None:
            continue
        model = build_model(args)
        model.load_state_dict(base.state_dict())
        if mode == DDP:
            model = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        if mode == DIST_SYNC:
            optimizer = hvd.DistributedOptimizer(optimizer,
                                                 named_parameters=model.named_parameters())
        models[mode] = model
        steps[mode] = make_step(model, optimizer, data, target)

    progress = common.Progress(rank == 0 and not args.no_progress)
    progress.start("train")
    for mode, step in steps.items():
        progress.update(f"{mode}: warm-up")
        for _ in range(args.warmup_steps):
            step()
    times: Dict[str, List[List[float]]] = {mode: [] for mode in steps}
    order = list(steps)
    for round_index in range(args.rounds):
        shift = round_index % len(order)
        for mode in order[shift:] + order[:shift]:
            progress.update(f"{mode}: round {round_index + 1}/{args.rounds}")
            local = []
            for _ in range(args.steps):
                comm.Barrier()
                local.append(common.timed(steps[mode]))
            times[mode].append([float(t) for t in common.slowest_per_iteration(comm, local)])
    progress.clear()

    differ: Dict[str, int] = {}
    for mode, model in models.items():
        digests = comm.allgather(parameter_digest(model))
        differ[mode] = 0 if mode == NONE else sum(d != digests[0] for d in digests)

    result = summarize(times, differ)
    if rank == 0:
        _print(sys.stdout, env, args, parameters, result, notes)
        if args.json:
            common.write_json(args.json, {
                "benchmark": "train", "environment": env, "notes": notes,
                "settings": {"layers": args.layers, "width": args.width,
                             "classes": args.classes, "batch_size": args.batch_size,
                             "threads": args.threads, "steps": args.steps,
                             "rounds": args.rounds, "warmup_steps": args.warmup_steps,
                             "parameters": parameters},
                **result})
        if args.plot:
            plot(result, args.plot, f"{parameters / 1e6:.1f} M-parameter MLP, batch "
                                    f"{args.batch_size}, {size} ranks")
    common.stop_gloo(dist)
    hvd.shutdown()
    return 1 if any(differ.values()) else 0


def summarize(times: Dict[str, List[List[float]]], differ: Dict[str, int]) -> Dict[str, Any]:
    """Median step per mode (over all rounds) and per round, and the ratios the targets are
    stated in."""
    modes: Dict[str, Any] = {}
    for mode, rounds in times.items():
        every = [t for r in rounds for t in r]
        modes[mode] = {"times_s": rounds,
                       "step_ms": common.finite_or_none(common.median(every) * 1e3),
                       "round_step_ms": [common.finite_or_none(common.median(r) * 1e3)
                                         for r in rounds],
                       "ranks_differing": differ[mode]}
    return {"modes": modes,
            "ratios": {"dist_sync_over_none": common.ratio(modes, DIST_SYNC, NONE, "step_ms"),
                       "ddp_over_none": common.ratio(modes, DDP, NONE, "step_ms"),
                       "dist_sync_over_ddp": common.ratio(modes, DIST_SYNC, DDP, "step_ms")}}


def _print(out: Any, env: Dict[str, Any], args: argparse.Namespace, parameters: int,
           result: Dict[str, Any], notes: Sequence[str]) -> None:
    print(f"# dist_sync training-step benchmark: {args.layers} x Linear({args.width}, "
          f"{args.width}) + Linear({args.width}, {args.classes}), {parameters / 1e6:.1f} M "
          f"parameters, batch {args.batch_size} per rank, SGD, {args.threads} thread(s) per rank; "
          f"{env['ranks']} ranks on {', '.join(env['hosts'])} ({env['cpu_count']} CPUs)", file=out)
    print(f"# {args.rounds} rounds x {args.steps} timed steps per mode after {args.warmup_steps} "
          f"warm-up; step = median of the slowest rank", file=out)
    for note in notes:
        print(f"# note: {note}", file=out)
    modes = result["modes"]
    base = (modes.get(NONE) or {}).get("step_ms")
    columns = [common.Column("mode", 31, common.fmt_str),
               common.Column("step(ms)", 9, common.fmt_float(2)),
               common.Column("x none", 7, common.fmt_float(2)),
               common.Column("per round (ms)", 24, common.fmt_str),
               common.Column("#differ", 7, common.fmt_int)]
    rows = [[LABELS[mode], v["step_ms"], v["step_ms"] / base if base and v["step_ms"] else None,
             " ".join(f"{t:.1f}" for t in v["round_step_ms"]), v["ranks_differing"]]
            for mode, v in modes.items()]
    print("\n".join(common.render_table(columns, rows)), file=out)
    ratios = result["ratios"]
    parts = [f"dist_sync / none = {_fmt(ratios['dist_sync_over_none'])}"]
    if ratios["dist_sync_over_ddp"] is not None:
        parts += [f"ddp / none = {_fmt(ratios['ddp_over_none'])}",
                  f"dist_sync / ddp = {_fmt(ratios['dist_sync_over_ddp'])}"]
    print("# " + "   ".join(parts), file=out, flush=True)


def plot(result: Dict[str, Any], path: str, title: str) -> None:
    """Each mode's step times, one box per mode and round."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    labels, data = [], []
    for mode, values in result["modes"].items():
        for index, times in enumerate(values["times_s"]):
            labels.append(f"{mode}\nround {index + 1}")
            data.append([t * 1e3 for t in times])
    axes.boxplot(data)
    axes.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    axes.set_ylabel("step time (ms, slowest rank)")
    axes.set_title(title)
    axes.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"
