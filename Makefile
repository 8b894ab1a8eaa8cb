# dist_sync developer entry points. `make demo` and `make test` work on a fresh clone: they
# create the virtual environments, install every dependency (MPI included) and build.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_MPICH := .venv-mpich
BIN := $(abspath $(VENV))/bin
BIN_MPICH := $(abspath $(VENV_MPICH))/bin
SOURCES := $(shell find csrc -name '*.cc' -o -name '*.h') CMakeLists.txt setup.py pyproject.toml tools/*.py

# Open MPI as root, more ranks than cores, no slow network probe at start-up (README: "Open MPI").
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_btl := ^ofi
export OMPI_MCA_mtl := ^ofi
export PRTE_MCA_rmaps_default_mapping_policy := :oversubscribe
MPIRUN := $(BIN)/mpirun -np 2 --bind-to none

.PHONY: demo test test-unit test-mpich test-multihost install install-mpich bench clean sanitize soak

# Environment with the Open MPI wheel, torch (CPU) and the test tools; the extension built in place.
$(VENV)/.deps: requirements/build.txt requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements/dev.txt
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	PATH=$(BIN):$$PATH $(BIN)/pip install --disable-pip-version-check -q --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.built

# Second environment: the same sources built against MPICH (installed, not in place, so the two
# builds never overwrite each other's extension).
$(VENV_MPICH)/.deps: requirements/build.txt requirements/mpich.txt
	$(PYTHON) -m venv $(VENV_MPICH)
	$(BIN_MPICH)/pip install --disable-pip-version-check -q -r requirements/mpich.txt
	touch $@

$(VENV_MPICH)/.built: $(VENV_MPICH)/.deps $(SOURCES) $(shell find dist_sync -name '*.py')
	PATH=$(BIN_MPICH):$$PATH DIST_SYNC_MPICXX=$(BIN_MPICH)/mpicxx \
	  $(BIN_MPICH)/pip install --disable-pip-version-check -q --no-build-isolation --no-deps --force-reinstall .
	touch $@

install-mpich: $(VENV_MPICH)/.built

# The main job: data-parallel training on 2 ranks, then the speed of that training through
# dist_sync against DistributedDataParallel (gloo) on a ResNet-18.
demo: install
	$(MPIRUN) $(BIN)/python examples/train_digits.py
	$(MPIRUN) $(BIN)/python examples/train_digits_keras.py
	$(MPIRUN) $(BIN)/python examples/synthetic_benchmark.py --model resnet18 --image-size 64 \
	  --batch-size 16 --num-warmup-batches 2 --num-batches-per-iter 2 --num-iters 3 --compare

# Everything CI runs: the suite on Open MPI, the engine's MPI tests on MPICH, the multi-host
# tests on network-namespace hosts (needs root; skipped with a message otherwise) and the
# sanitizer builds.
test: test-unit test-mpich test-multihost sanitize

test-unit: install
	$(BIN)/python -m pytest -q --durations=25 tests

# The engine's MPI tests again, against MPICH (the in-process collective tests use no MPI, so
# they run once, above). pytest, not `python -m pytest`, and pytest's
# --import-mode=append, so the installed MPICH build is imported rather than the checkout's
# in-place Open MPI one; PYTHONSAFEPATH keeps ranks that dist_sync.run starts from the checkout
# from importing it too).
test-mpich: install-mpich
	PYTHONSAFEPATH=1 DIST_SYNC_TEST_MPIRUN=$(BIN_MPICH)/mpirun $(BIN_MPICH)/pytest -q -p no:cacheprovider \
	  tests/engine/test_allreduce_mpi.py tests/engine/test_engine_mpi.py tests/launch/test_run_mpi.py
	@# MPICH leaves its shared-memory file behind when a job ends in MPI_Abort (the stall-timeout test).
	rm -f /dev/shm/mpich_shm_* 2>/dev/null || true

# Needs root; installs iproute2 (ip, tc) if the machine lacks it.
test-multihost: install
	@command -v ip >/dev/null && command -v tc >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2)
	bash tests/multihost/run.sh

# The extension again with AddressSanitizer + UndefinedBehaviorSanitizer and with ThreadSanitizer
# (out of tree, in build/sanitize-*; the in-place build is untouched), run against the tests that
# exercise the C++: tools/sanitize.py says what runs and why each runtime option is set.
sanitize: install
	$(BIN)/python tools/sanitize.py

# 20 000 fused small and 200 large allreduces on 2 ranks: every result checked, RSS watched.
soak: install
	$(MPIRUN) $(BIN)/python -m benchmarks.soak

clean:
	rm -rf build $(VENV) $(VENV_MPICH) dist_sync/_core*.so dist_sync/_testhooks*.so \
	  dist_sync/tensorflow/libdist_sync_tf_ops.so *.egg-info
