"""``python -m dist_sync.run -np 4 train.py [args]``: starts a script (or any command) on N
ranks, like ``mpirun`` with the flags dist_sync needs and every line prefixed with its rank."""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import List, Optional

from . import mpi
from .job import Job
from .runner import forwarded_variables


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dist_sync.run",
        description="Start a training script on N ranks through the MPI launcher beside this "
                    "Python (Open MPI's mpirun or MPICH's mpiexec), with the flags dist_sync "
                    "needs: no binding to cores, more ranks than cores on one host, running "
                    "as root. Each output line is prefixed with its rank. Ctrl-C ends every "
                    "rank.",
        epilog="examples: python -m dist_sync.run -np 4 train.py --epochs 3 | "
               "python -m dist_sync.run -np 2 -H a:1,b:1 python -u train.py")
    parser.add_argument("-np", "-n", "--num-proc", dest="np", type=int, required=True,
                        help="number of ranks")
    parser.add_argument("-H", "--hosts", default=None,
                        help="hosts and slots, e.g. a:2,b:2 (default: every rank on this host)")
    parser.add_argument("--mpirun", default=None,
                        help="the MPI launcher (default: mpirun/mpiexec beside this Python, "
                             "else on PATH)")
    parser.add_argument("--mpi-args", default="",
                        help="further launcher flags, as one shell-quoted string")
    parser.add_argument("--timeout", type=float, default=None,
                        help="end the job after this many seconds (exit code 124)")
    parser.add_argument("--no-prefix", action="store_true",
                        help="do not prefix output lines with their rank")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="a .py script (run with this Python) and its arguments, or any "
                             "command")
    return parser


def program(command: List[str]) -> List[str]:
    """A script runs with this interpreter; anything else runs as given."""
    if command and command[0].endswith(".py"):
        return [sys.executable] + command
    return command


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.command:
        parser.error("no script or command to run")
    try:
        launcher = mpi.find_launcher(args.mpirun)
        env = mpi.environment(launcher, None, args.hosts)
        line = mpi.command(launcher, args.np, args.hosts, forwarded_variables(env, {}, args.hosts),
                           shlex.split(args.mpi_args))
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        parser.error(str(error))
    job = Job(line + program(args.command), env, launcher.flavor, prefix=not args.no_prefix)
    try:
        return job.wait(args.timeout)
    except TimeoutError:
        print(f"dist_sync.run: the job did not finish within {args.timeout:g} s; it was ended",
              file=sys.stderr)
        return 124
    except KeyboardInterrupt:
        print("dist_sync.run: interrupted; the job was ended", file=sys.stderr)
        return 130
