"""dist_sync.run: starts a Python function on N ranks through the MPI launcher and returns
what every rank returned."""
from __future__ import annotations

import inspect
import linecache
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TextIO

from . import mpi
from .errors import raise_for_outcomes
from .job import Job
from .payload import RECORD_SEGMENTS, read_outcomes, read_segments, write_payload


def run(fn: Callable[..., Any], args: Sequence[Any] = (), kwargs: Optional[Dict[str, Any]] = None,
        np: int = 2, hosts: mpi.Hosts = None, env: Optional[Mapping[str, str]] = None, *,
        mpirun: Optional[str] = None, mpirun_args: Sequence[str] = (),
        timeout: Optional[float] = None, shared_dir: Optional[str] = None,
        prefix_output: bool = True, stdout: Optional[TextIO] = None,
        stderr: Optional[TextIO] = None) -> List[Any]:
    """Runs ``fn(*args, **kwargs)`` on ``np`` ranks of a new MPI job and returns the list of
    the ranks' return values, in rank order.

    ``fn`` (which usually calls ``dist_sync.init()`` or ``hvd.init()`` first) and its
    arguments are sent with cloudpickle, so lambdas, closures and functions defined in a
    notebook or ``__main__`` work; functions of importable modules are imported on the ranks,
    with the caller's ``sys.path``. The job is started by the MPI launcher beside this Python
    interpreter (as ``mpirun -np N`` would start a script), its output streamed to this
    process's ``sys.stdout``/``sys.stderr`` as it arrives, each line prefixed with ``[rank]``.

    Args:
        fn: the function every rank calls.
        args, kwargs: its arguments (the same on every rank).
        np: the number of ranks.
        hosts: ``"host1:2,host2:2"`` (or a list of ``"host:slots"``) to run on other hosts;
            None runs every rank here, where ranks may outnumber cores.
        env: extra environment variables for the ranks (forwarded to every host).
        mpirun: the launcher to use (default: ``mpirun``/``mpiexec`` beside this interpreter,
            else on ``PATH``); Open MPI and MPICH (Hydra) launchers are recognised.
        mpirun_args: further launcher flags, appended as given.
        timeout: seconds after which the job is ended and TimeoutError raised.
        shared_dir: where the job's directory (the pickled call, the results) is made; with
            ``hosts`` on other machines it must be visible on all of them (default: the
            system's temporary directory).
        prefix_output: False streams the ranks' lines without the ``[rank]`` prefix.
        stdout, stderr: where the ranks' output goes (default: ``sys.stdout``/``sys.stderr``
            at the time of the call).

    Raises:
        RankError: a rank raised; the message holds its traceback (the first rank to fail
            where several did), and the exception it raised is the ``__cause__`` where it
            could be sent back. Every other rank has been ended.
        JobError: the job failed without a rank reporting why (the launcher could not start
            it, or a rank was killed); the message holds the last lines of output.
        TimeoutError: ``timeout`` passed; the job has been ended.
        KeyboardInterrupt: after ending the job, which leaves no process and no MPI
            shared-memory file behind.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    kwargs = dict(kwargs or {})
    launcher = mpi.find_launcher(mpirun)
    extra_env = {str(k): str(v) for k, v in (env or {}).items()}
    job_env = mpi.environment(launcher, extra_env, hosts)
    _make_importable(job_env)
    command = mpi.command(launcher, np, hosts, forwarded_variables(job_env, extra_env, hosts),
                          mpirun_args)
    job_dir = tempfile.mkdtemp(prefix="dist_sync_run_", dir=shared_dir)
    try:
        write_payload(job_dir, fn, args, kwargs)
        argv = command + [sys.executable, "-m", "dist_sync.launch.on_rank", job_dir]
        if launcher.flavor != mpi.OPENMPI:   # Open MPI's launcher removes its segments itself
            argv.append(RECORD_SEGMENTS)
        job = Job(argv, job_env, launcher.flavor, stdout, stderr, prefix_output)
        job.recorded_segments = lambda: read_segments(job_dir)
        try:
            exit_code = job.wait(timeout)
        except TimeoutError:
            raise TimeoutError(f"dist_sync.run: {_name(fn)} on {np} ranks did not finish "
                               f"within {timeout:g} s; the job was ended") from None
        outcomes = read_outcomes(job_dir, np)
        for outcome in outcomes:
            if outcome is not None and not outcome.ok:
                outcome.traceback = localize_traceback(outcome.traceback, fn)
        return raise_for_outcomes(outcomes, f"dist_sync.run({_name(fn)})", exit_code,
                                  list(job.pump.tail),
                                  missing_reason="left no result (ended by the launcher)")
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


_DYNAMIC_FRAME = re.compile(r'^(\s*)File "<dynamic-code>", line (\d+), in (.+)$')


def localize_traceback(text: str, fn: Callable[..., Any]) -> str:
    """A rank's traceback with the file and source lines of functions that cloudpickle sent by
    value (it names their file ``<dynamic-code>``): the caller knows where ``fn`` came from."""
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        path = None
    if not path:
        return text
    lines = text.splitlines()
    result = []
    for line in lines:
        match = _DYNAMIC_FRAME.match(line)
        if match is None:
            result.append(line)
            continue
        indent, number, name = match.groups()
        result.append(f'{indent}File "{path}", line {number}, in {name}')
        source = linecache.getline(path, int(number)).strip()  # the rank had none to show
        if source:
            result.append(f"{indent}  {source}")
    return "\n".join(result) + "\n"


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def forwarded_variables(job_env: Mapping[str, str], extra_env: Mapping[str, str],
                        hosts: mpi.Hosts) -> List[str]:
    """The variables Open MPI must forward to other hosts (it forwards none by itself): the
    caller's ``env``, dist_sync's settings and what Python needs to find and stream."""
    if hosts is None:
        return []
    names = set(extra_env) | {"PYTHONUNBUFFERED", "PYTHONPATH"}
    names |= {name for name in job_env if name.startswith("DIST_SYNC_")}
    return sorted(name for name in names if name in job_env)


def _make_importable(env: Dict[str, str]) -> None:
    """Lets the ranks' ``python -m dist_sync.launch.on_rank`` find this dist_sync even where
    it is not installed (a source tree on the caller's sys.path). An installed one is left
    alone: putting site-packages on PYTHONPATH would put it before the standard library."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    installed = {os.path.abspath(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    if package_parent in installed:
        return
    current = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_parent not in current:
        env["PYTHONPATH"] = os.pathsep.join(current + [package_parent])
