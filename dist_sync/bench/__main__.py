"""Command line of the benchmarks: ``mpirun -np N python -m dist_sync.bench <benchmark> ...``."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional, Sequence

# Benchmarks that need a source checkout, so are not installed: how to run them there.
_MOVED = {
    "scaling": "python -m benchmarks.scaling",
    "report": "python -m benchmarks.report",
}
# Installed benchmarks with their own argument parser (argparse here only lists them): their
# arguments are handed over untouched.
_DELEGATED = {
    "launch": "dist_sync.run's start-up against a bare mpirun of the same function "
              "(not under mpirun; dist_sync.bench.launch, see its --help)",
    "dask": "rows/s a rank reads from its Dask partitions against one process iterating the "
            "same pandas data (under mpirun -np 5; dist_sync.bench.dask, see its --help)",
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; imports nothing heavy (``--help`` stays fast)."""
    from . import allreduce, fusion, process_sets, train, tune

    parser = argparse.ArgumentParser(
        prog="python -m dist_sync.bench",
        description="dist_sync benchmarks. Run under mpirun, e.g. "
                    "mpirun -np 2 python -m dist_sync.bench allreduce -b 4K -e 256M -f 4",
        epilog="docs/benchmarks.md says how each benchmark is measured and how to reproduce "
               "the published numbers. Benchmarks that need a source checkout are run from its "
               "root: " + ", ".join(_MOVED.values()) + ".")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    allreduce.add_arguments(sub.add_parser(
        "allreduce", help="allreduce throughput against MPI_Allreduce, gloo and MPI_Sendrecv",
        description=allreduce.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    fusion.add_arguments(sub.add_parser(
        "fusion", help="ResNet-50's 161 gradients: async through the engine vs one buffer vs "
                       "one by one vs DDP-style buckets",
        description=fusion.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    process_sets.add_arguments(sub.add_parser(
        "process_sets", help="two disjoint process sets allreducing at the same time vs each "
                             "alone, one after the other, and the global set",
        description=process_sets.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    train.add_arguments(sub.add_parser(
        "train", help="a training step through dist_sync, through torch DDP and with no "
                      "communication, side by side",
        description=train.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    tune.add_arguments(sub.add_parser(
        "tune", help="sweep the tunables and suggest defaults",
        description=tune.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    for name, text in _DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def run_delegated(benchmark: str, argv: Sequence[str]) -> int:
    """Hands ``argv`` to dist_sync.bench.<benchmark>."""
    module = importlib.import_module(f"{__package__}.{benchmark}")
    return int(module.main(list(argv)))


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    position = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if position is not None and argv[position] in _MOVED:
        print(f"python -m dist_sync.bench {argv[position]}: this benchmark needs a source "
              f"checkout of dist_sync and is not installed with it; from the root of a checkout "
              f"run `{_MOVED[argv[position]]}` (benchmarks/{argv[position]}.py).", file=sys.stderr)
        return 2
    if position is not None and argv[position] in _DELEGATED:
        logging.basicConfig(level=logging.DEBUG if "-v" in argv[:position] or
                            "--verbose" in argv[:position] else logging.WARNING)
        return run_delegated(argv[position], argv[position + 1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    runner = importlib.import_module(f"{__package__}.{args.benchmark}")
    try:
        # The recorded command line is what followed "python -m dist_sync.bench".
        return int(runner.run(args, argv))
    except BrokenPipeError:
        # The table was piped into something that stopped reading (`| head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
