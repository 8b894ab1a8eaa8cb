"""Every test of a test_*_mpi.py file is marked `mpi`: `pytest -m "not mpi" tests` runs the
tests that start no MPI job."""
from typing import List

import pytest


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        if item.path.name.endswith("_mpi.py"):
            item.add_marker(pytest.mark.mpi)
