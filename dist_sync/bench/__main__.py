"""Command line of the benchmarks: ``mpirun -np N python -m dist_sync.bench <benchmark> ...``."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional, Sequence

# Benchmarks with their own argument parser (argparse here only lists them): their arguments
# are handed over untouched.
_DELEGATED = {
    "scaling": "multi-host scaling: ring allreduce against a parameter server "
               "(dist_sync.bench.scaling; see its --help)",
    "launch": "dist_sync.run's start-up against a bare mpirun of the same function "
              "(not under mpirun; dist_sync.bench.launch, see its --help)",
    "dask": "rows/s a rank reads from its Dask partitions against one process iterating the "
            "same pandas data (under mpirun -np 5; dist_sync.bench.dask, see its --help)",
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; imports nothing heavy (``--help`` stays fast)."""
    from . import allreduce, fusion, report, tune

    parser = argparse.ArgumentParser(
        prog="python -m dist_sync.bench",
        description="dist_sync benchmarks. Run under mpirun, e.g. "
                    "mpirun -np 2 python -m dist_sync.bench allreduce -b 4K -e 256M -f 4",
        epilog="docs/benchmarks.md says how each benchmark is measured and how to reproduce "
               "the published numbers.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    allreduce.add_arguments(sub.add_parser(
        "allreduce", help="allreduce throughput against MPI_Allreduce, gloo and MPI_Sendrecv",
        description=allreduce.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    fusion.add_arguments(sub.add_parser(
        "fusion", help="ResNet-50's 161 gradients: async through the engine vs one buffer vs "
                       "one by one vs DDP-style buckets",
        description=fusion.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    tune.add_arguments(sub.add_parser(
        "tune", help="sweep the tunables and suggest defaults",
        description=tune.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    report.add_arguments(sub.add_parser(
        "report", help="Markdown tables from the JSON files of the benchmarks above (no MPI)",
        description=report.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    for name, text in _DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def run_delegated(benchmark: str, argv: Sequence[str]) -> int:
    """Hands ``argv`` to dist_sync.bench.<benchmark>, which may not be part of this build."""
    name = f"{__package__}.{benchmark}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:
            raise  # the benchmark exists but one of its own imports is missing: show that
        print(f"python -m dist_sync.bench {benchmark}: the {benchmark} benchmark "
              f"(dist_sync/bench/{benchmark}.py) is not part of this installation of dist_sync.",
              file=sys.stderr)
        return 2
    return int(module.main(list(argv)))


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # A delegated benchmark gets every argument after its name, its own --help included.
    position = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
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
