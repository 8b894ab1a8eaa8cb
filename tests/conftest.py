"""Every test of a test_*_mpi.py file is marked `mpi`: `pytest -m "not mpi" tests` runs the
tests that start no MPI job. After every test, Open MPI session directories left by launchers
that are gone are removed (see below)."""
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, List

import pytest


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        if item.path.name.endswith("_mpi.py"):
            item.add_marker(pytest.mark.mpi)


def _remove_stale_session_directories() -> None:
    # mpirun (prterun) keeps its PMIx rendezvous files in <tmp>/ompi.<its pid>; a launcher
    # killed by a test (a job's time limit, a deliberate kill) leaves the directory behind, and
    # once process ids wrap round (pid_max can be 32768) a new launcher with the same pid fails
    # at start: "The PMIx server's listener thread failed to start".
    for directory in Path(tempfile.gettempdir()).glob("ompi.*"):
        pid = directory.name.partition(".")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_stale_mpi_session_directories() -> Iterator[None]:
    yield
    if os.name == "posix":
        _remove_stale_session_directories()
