"""`make sanitize`: the extension built with AddressSanitizer + UndefinedBehaviorSanitizer and with
ThreadSanitizer, each out of tree, and the tests that exercise its C++ run against each build.

    python tools/sanitize.py [address] [thread]      (default: both)

Each build lives in build/sanitize-<kind>/: CMake's tree in cmake/, and an importable copy of the
package in pkg/dist_sync (the Python sources plus the sanitized _core and _testhooks). The normal in-place
extension is never touched. Tests run from that directory (not the repository root, whose
dist_sync/ would shadow the copy) with PYTHONPATH=pkg, and the sanitizer runtime is preloaded
into the Python processes: python itself is not instrumented, so the runtime must come first
(``$(gcc -print-file-name=libasan.so)``). mpirun is wrapped so that it runs without the runtime and
passes it to the ranks only (tests/sanitize/mpirun).

What runs:
- address,undefined: the in-process collectives over the thread communicator (every algorithm,
  N = 1..16, fixed and hypothesis-drawn sizes and settings) and short engine runs under mpirun
  (every collective, mismatches, shutdown by one rank, join, randomized batches with tiny
  fusion/segment/cache settings, an uncaught exception on one rank).
- thread: the engine's threads — a background thread per process fed by Python threads, handles
  completed across threads, shutdown racing submissions — under mpirun, and the thread
  communicator's N threads per process.
Each runtime option below says why it is set; tests/sanitize/tsan.supp holds the (so far empty)
ThreadSanitizer suppressions.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
SANITIZE_DIR = ROOT / "tests" / "sanitize"
# The extension modules a build makes (patterns of their files).
MODULES = ("_core*.so", "_testhooks*.so")
sys.path.insert(0, str(ROOT / "tools"))
from find_mpi import find_mpicxx  # noqa: E402

# The -fsanitize= list, the runtime to preload and the tests of each build.
KINDS: Dict[str, Dict[str, object]] = {
    "address": {
        "flags": "address,undefined",
        "runtime": "libasan.so",
        "tests": [
            "tests/collectives/test_algorithms_local.py",
            "tests/randomized/test_random_local.py",
            "tests/engine/test_engine_mpi.py::test_every_collective[2]",
            "tests/engine/test_engine_mpi.py::test_mismatches_fail_on_every_rank[3]",
            "tests/engine/test_engine_mpi.py::test_shutdown_by_one_rank_fails_the_others_with_its_name",
            "tests/engine/test_engine_mpi.py::test_join[3]",
            "tests/randomized/test_random_mpi.py",
            "tests/faults/test_faults_mpi.py::test_exception_on_one_rank_names_it_on_every_rank[numpy-3]",
            # Lifetimes across the Python/C++ and thread boundaries: dropped handles, one handle
            # synchronized by two threads, memory in flight, interrupted waits.
            "tests/faults/test_reliability_mpi.py",
            "tests/faults/test_faults_mpi.py::test_ctrl_c_while_waiting_raises_at_once_and_the_others_learn_why",
        ],
    },
    "thread": {
        "flags": "thread",
        "runtime": "libtsan.so",
        "tests": [
            "tests/engine/test_engine_mpi.py::test_every_collective[2]",
            "tests/engine/test_engine_mpi.py::test_every_collective[3]",
            "tests/engine/test_engine_mpi.py::test_shutdown_by_one_rank_fails_the_others_with_its_name",
            "tests/engine/test_engine_mpi.py::test_exception_on_one_rank_reaches_the_others",
            "tests/engine/test_engine_mpi.py::test_join[2]",
            "tests/engine/test_threads_mpi.py",
            "tests/collectives/test_algorithms_local.py::test_ring_allreduce_every_size",
            "tests/collectives/test_algorithms_local.py::test_hierarchical_allreduce",
        ],
    },
}


def mpicxx() -> str:
    """The MPI wrapper of this environment (the one `make install` builds against)."""
    beside = Path(sys.executable).parent / "mpicxx"
    found = str(beside) if beside.exists() else find_mpicxx()
    if found is None:
        raise SystemExit("no mpicxx found: run `make install` first")
    return found


def runtime_library(name: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True,
                          check=True).stdout.strip()
    if not os.path.isabs(path) or not Path(path).exists():
        raise SystemExit(f"gcc has no {name} (install the gcc sanitizer runtimes)")
    return path


def build(kind: str, flags: str, out: Path) -> Path:
    """Configures and builds the sanitized extension modules into out/pkg/dist_sync; returns pkg/."""
    import pybind11

    cmake_dir, pkg = out / "cmake", out / "pkg"
    package = pkg / "dist_sync"
    cmake_dir.mkdir(parents=True, exist_ok=True)
    configure = [
        "cmake", str(ROOT), "-GNinja",
        f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={package}",
        # -O1 (what both sanitizers' manuals advise) and line tables only: the build is about half
        # the compile time of RelWithDebInfo's -O2 -g, and the reports' stacks keep file:line.
        "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1",
        f"-DPython_EXECUTABLE={sys.executable}",
        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        f"-DMPI_CXX_COMPILER={mpicxx()}",
        f"-DDIST_SYNC_SANITIZE={flags}",
        "-DCMAKE_CUDA_COMPILER=",
    ]
    subprocess.run(configure, cwd=cmake_dir, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", ".", "--parallel", str(os.cpu_count() or 2)],
                   cwd=cmake_dir, check=True)
    # The Python sources beside the sanitized modules (never a stale or unsanitized one).
    for stale in package.glob("**/*.py"):
        stale.unlink()
    shutil.copytree(ROOT / "dist_sync", package, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(*MODULES, "__pycache__"))
    return pkg


def environment(kind: str, runtime: str, pkg: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(pkg)
    # libstdc++ too: python does not link it, so without it the runtime finds no real
    # __cxa_throw to intercept when it starts, and the first C++ exception aborts
    # ("CHECK failed: ... real___cxa_throw").
    env["LD_PRELOAD"] = f"{runtime} {runtime_library('libstdc++.so.6')}"
    env["DIST_SYNC_TEST_MPIRUN"] = str(SANITIZE_DIR / "mpirun")
    env["DIST_SYNC_TEST_REAL_MPIRUN"] = str(Path(sys.executable).parent / "mpirun")
    # Ranks outnumber cores and every instrumented process is several times slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    if kind == "address":
        env["ASAN_OPTIONS"] = ":".join([
            "detect_leaks=0",        # CPython and Open MPI keep allocations until exit by design
            "halt_on_error=1",
            "abort_on_error=1",      # a core-style abort, so mpirun reports the rank as failed
            "strict_init_order=1",
            "detect_stack_use_after_return=1",
        ])
        env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    else:
        # UCX's memory hooks (libucm, which the Open MPI wheel's libmpi loads) run from a
        # thread's stack teardown, where TSan no longer knows the thread, and crash the process
        # at exit. They keep RDMA registration caches coherent; a single host has none.
        env["UCX_MEM_EVENTS"] = "no"
        # PMIx's shared-memory data store maps its segment at a fixed address, which TSan's
        # shadow memory occupies, and MPI_Init fails; the hash store keeps the data in-process.
        env["PMIX_MCA_gds"] = "hash"
        # Open MPI's TCP transport takes two of its own locks in both orders while it adds and
        # removes peers during MPI_Init (a lock-order report inside libopen-pal, not ours); the
        # ranks of these tests share one host and talk through shared memory anyway.
        env["OMPI_MCA_btl"] = "self,sm"
        env["TSAN_OPTIONS"] = ":".join([
            "halt_on_error=1",
            "second_deadlock_stack=1",
            f"suppressions={SANITIZE_DIR / 'tsan.supp'}",
        ])
    return env


def run_kind(kind: str) -> float:
    spec = KINDS[kind]
    out = ROOT / "build" / f"sanitize-{kind}"
    started = time.monotonic()
    pkg = build(kind, str(spec["flags"]), out)
    env = environment(kind, runtime_library(str(spec["runtime"])), pkg)
    # The copy must be what the tests import, or they would test the normal build.
    where = subprocess.run([sys.executable, "-c", "import dist_sync._core as c, dist_sync._testhooks as t; "
                            "print(c.__file__); print(t.__file__)"],
                           cwd=out, env=env, capture_output=True, text=True)
    paths = where.stdout.split()
    if where.returncode != 0 or len(paths) != 2 or not all(p.startswith(str(pkg)) for p in paths):
        raise SystemExit(f"the sanitized build is not what Python imports: {where.stdout}{where.stderr}")
    tests: List[str] = [str(ROOT / t) for t in spec["tests"]]  # type: ignore[union-attr]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=15",
               f"--rootdir={ROOT}", *tests]
    print(f"== {kind} ({spec['flags']}): {len(tests)} test targets", flush=True)
    result = subprocess.run(command, cwd=out, env=env)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"sanitizer run '{kind}' failed (exit {result.returncode})")
    print(f"== {kind}: clean in {seconds:.0f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kinds", nargs="*", metavar="{" + ",".join(sorted(KINDS)) + "}",
                        help="which builds to run (default: all)")
    kinds = parser.parse_args().kinds or sorted(KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown sanitizer build(s) {unknown}; choose from {sorted(KINDS)}")
    total = sum(run_kind(kind) for kind in kinds)
    print(f"== sanitizers clean: {', '.join(kinds)} in {total:.0f} s")


if __name__ == "__main__":
    main()
