"""Elastic training (dist_sync.torch.elastic) under `mpirun --with-ft ulfm`: ranks SIGKILLed
mid-epoch, rank 0 among them, one after another, or in the middle of a 64 MiB fused allreduce;
the survivors finish with bit-identical parameters, no committed sample seen twice or skipped,
and the accuracy target. A replacement is spawned and merged back to the launched size, unless
DIST_SYNC_ELASTIC_MAX_NP forbids it (the shrink tests set it so). Below
DIST_SYNC_ELASTIC_MIN_NP, on an exception, and without ULFM the job ends on every rank with a
message instead.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.elastic import elastic_worker
from tests.support import ROOT, harness

# ULFM is Open MPI's (MPICH's mpiexec has no --with-ft).
pytestmark = pytest.mark.skipif(harness.mpi_flavor(harness.mpirun_path()) != "openmpi",
                                reason="elastic training needs Open MPI's ULFM")

WORKER = "tests.elastic.elastic_worker"
ULFM = ["--with-ft", "ulfm"]
JOB_TIMEOUT = 180.0  # start-up included; the runs take seconds
ACCURACY_TARGET = 0.9
# The job keeps the size the losses leave (no replacements spawned).
NO_GROWTH = {"DIST_SYNC_ELASTIC_MAX_NP": "1"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    elastic_worker.save_digits(path)
    return str(path)


def train(digits, np_, kills=(), raise_at=(), env=NO_GROWTH, epochs=2, **more):
    return harness.run(WORKER, np_, "train",
                       {"data": digits, "kills": [list(k) for k in kills],
                        "raise_at": [list(k) for k in raise_at], "epochs": epochs,
                        **more},
                       timeout=JOB_TIMEOUT, env=env, mpirun_args=ULFM)


def survivors(run, np_, killed):
    """The survivors' values (by world rank), after the checks every surviving run passes."""
    assert not run.timed_out, run.describe()
    ranks = run.ranks
    for victim in killed:
        assert "killed_at" in ranks[victim].value, run.describe()
    alive = {r: ranks[r].value for r in range(np_) if r not in killed}
    assert all(ranks[r].ok for r in alive), run.describe()
    return alive


def check_training(values, dataset_epochs):
    """Parameters bit-identical on every survivor, accuracy reached, and in every epoch each
    sample used by a committed step exactly once, but for the epoch's last step, padded with
    fewer than size() repeated samples."""
    digests = {v["digest"] for v in values.values()}
    assert len(digests) == 1, digests
    first = next(iter(values.values()))
    assert all(v["seen"] == first["seen"] for v in values.values())
    assert first["accuracy"] >= ACCURACY_TARGET, first["accuracy"]
    steps = defaultdict(list)
    for epoch, indices in first["seen"]:
        steps[epoch].append(indices)
    assert sorted(steps) == list(range(dataset_epochs))
    for epoch, batches in steps.items():
        before_last = [i for batch in batches[:-1] for i in batch]
        assert len(before_last) == len(set(before_last)), f"epoch {epoch}: a sample seen twice"
        every = [i for batch in batches for i in batch]
        assert set(every) == set(range(first["dataset"])), f"epoch {epoch}: samples skipped"
        assert len(every) - first["dataset"] < len(batches[-1]), f"epoch {epoch}: padding"


def test_survivors_finish_after_a_rank_is_killed_mid_epoch(digits):
    run = train(digits, 3, kills=[(1, 0, 5)])
    values = survivors(run, 3, killed=[1])
    check_training(values, 2)
    for value in values.values():
        assert value["size"] == 2
        assert [r["size"] for r in value["resets"]] == [2]
    assert sorted(v["rank"] for v in values.values()) == [0, 1]
    assert values[0]["rank"] == 0 and values[2]["rank"] == 1  # the old order, renumbered
    assert "lost rank 1 (pid " in run.output, run.describe()  # the survivors' log names it
    assert "spawning" not in run.output, run.describe()  # DIST_SYNC_ELASTIC_MAX_NP=1


def test_a_replacement_is_spawned_and_the_job_grows_back_to_its_size(digits):
    # Steps on 2 ranks slow enough (up to ~15 s in all) that the replacement, seconds to start,
    # joins mid-training, even on a loaded machine.
    run = train(digits, 3, kills=[(1, 0, 5)], env={}, shrunk_step_sleep=0.2)
    values = survivors(run, 3, killed=[1])
    assert run.returncode == 0, run.describe()  # mpirun counts the replacement's end as proper
    assert 100 in run.ranks, run.describe()  # the first spawned job's rank 0
    joiner = run.ranks[100]
    assert joiner.ok, run.describe()
    final = {**values, 100: joiner.value}
    check_training(final, 2)
    for value in final.values():
        assert value["size"] == 3
    for value in values.values():
        assert [r["size"] for r in value["resets"]] == [2, 3]
        assert not value["joined"]
    assert joiner.value["joined"] and [r["size"] for r in joiner.value["resets"]] == [3]
    # Survivors first, in their order, then the replacement.
    assert [final[r]["rank"] for r in (0, 2, 100)] == [0, 1, 2]
    # Committed steps: 5 on 3 ranks, some on 2, the rest on 3 again (the replacement trained).
    sizes = final[0]["sizes"]
    assert sizes[:5] == [3] * 5 and 2 in sizes and sizes[-1] == 3, sizes
    grown = sizes.index(3, 5)
    assert set(sizes[5:grown]) == {2} and set(sizes[grown:]) == {3}, sizes
    assert "spawning 1 replacement(s) to grow back to 3 rank(s)" in run.output, run.describe()
    assert "1 replacement(s) joined; continuing on 3 rank(s)" in run.output, run.describe()


@pytest.fixture
def removable_interpreter(tmp_path, monkeypatch):
    """A virtual environment that is this one but for its own bin/python (a link to the same
    interpreter), which a test may delete: jobs launched meanwhile run it."""
    config = Path(sys.prefix) / "pyvenv.cfg"
    if not config.exists():
        pytest.skip("the tests do not run in a virtual environment")
    (tmp_path / "bin").mkdir()
    (tmp_path / "pyvenv.cfg").write_text(config.read_text())
    (tmp_path / "lib").symlink_to(Path(sys.prefix) / "lib")
    (tmp_path / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setenv("DIST_SYNC_TEST_MPIRUN", harness.mpirun_path())
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    return sys.executable


def test_rank_0_then_another_killed_one_after_another(digits, removable_interpreter):
    # Replacements are wanted (the starting size), but the first victim takes the interpreter's
    # path with it: every spawn fails at once, is warned about, and the job keeps its size.
    run = train(digits, 4, kills=[(0, 0, 3), (2, 1, 2)], env={}, unlink_interpreter=True)
    # 3 survivors of the first loss, 2 of the second
    assert run.output.count(f"no replacements join (spawning `{removable_interpreter} -m "
                            f"{WORKER} ") == 5, run.describe()
    assert "MPI_Comm_spawn failed" in run.output, run.describe()
    assert "training continues on 2 rank(s)" in run.output, run.describe()
    values = survivors(run, 4, killed=[0, 2])
    check_training(values, 2)
    for value in values.values():
        assert [r["size"] for r in value["resets"]] == [3, 2]
        assert value["size"] == 2
    # The survivors keep their order: world rank 1 coordinates after rank 0 is lost.
    assert values[1]["rank"] == 0 and values[3]["rank"] == 1
    assert [r["rank"] for r in values[1]["resets"]] == [0, 0]
    assert [r["rank"] for r in values[3]["resets"]] == [2, 1]


def test_rank_killed_during_a_64_mib_fused_allreduce(tmp_path):
    # Growth wanted (the starting size), but the host discovery script lists no free slot.
    discover = tmp_path / "discover.sh"
    discover.write_text("#!/bin/sh\necho localhost:3\n")
    discover.chmod(0o755)
    run = harness.run(WORKER, 4, "fused_allreduce", {"victim": 2, "delay": 0.005},
                      timeout=JOB_TIMEOUT, mpirun_args=ULFM,
                      env={"DIST_SYNC_ELASTIC_HOST_DISCOVERY_SCRIPT": str(discover)})
    assert "spawning" not in run.output, run.describe()
    values = survivors(run, 4, killed=[2])
    count = 16
    alive = [0, 1, 3]
    expected = [float(sum(r + 1 + t for r in alive)) for t in range(count)] * 2
    for value in values.values():
        assert value["size"] == 3
        assert value["sums"] == expected
        assert value["attempts"] == [4, 3]


def test_below_min_np_every_survivor_ends_with_a_message(digits):
    run = train(digits, 3, kills=[(1, 0, 2)], env={"DIST_SYNC_ELASTIC_MIN_NP": "3"})
    assert "spawning" not in run.output, run.describe()
    assert not run.timed_out, run.describe()
    assert run.returncode != 0, run.describe()
    for rank in (0, 2):
        result = run.ranks[rank]
        assert not result.ok, run.describe()
        assert "only 2 rank(s) are left" in result.error, run.describe()
        assert "DIST_SYNC_ELASTIC_MIN_NP=3" in result.error, run.describe()


def test_an_exception_still_ends_the_job(digits):
    run = train(digits, 3, raise_at=[(1, 0, 3)])
    assert not run.timed_out, run.describe()
    assert run.returncode != 0, run.describe()
    assert "ValueError: bad batch at epoch 0 step 3" in run.ranks[1].error
    for rank in (0, 2):
        result = run.ranks[rank]
        assert not result.ok, run.describe()
        assert "rank 1 exited with an uncaught ValueError: bad batch" in result.error, \
            run.describe()
        assert "RanksLostError" not in result.error


def test_elastic_run_without_ulfm_says_how_to_launch():
    run = harness.run(WORKER, 2, "elastic_without_ulfm", timeout=JOB_TIMEOUT)
    assert not run.timed_out, run.describe()
    assert run.returncode != 0, run.describe()
    for rank in (0, 1):
        assert "mpirun --with-ft ulfm" in run.ranks[rank].error, run.describe()
        assert "launched without --with-ft ulfm" in run.ranks[rank].error, run.describe()


def test_the_example_trains_through_a_killed_rank():
    """examples/train_elastic.py as a user runs it: rank 1 SIGKILLs itself mid-epoch; the job
    carries on, grows back to 3 ranks and reaches the example's accuracy target."""
    command = harness.launch_command(3, ULFM) + [
        sys.executable, str(ROOT / "examples" / "train_elastic.py"), "--simulate-failure", "1,2,5"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=JOB_TIMEOUT,
                          env=harness.mpi_env())
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "rank 1: simulating a failure (SIGKILL) before batch 5 of epoch 2" in output, output
    assert "continuing on 2 rank(s) instead of 3" in output, output
    assert "1 replacement(s) joined; continuing on 3 rank(s)" in output, output
    epochs = [int(n) for n in re.findall(r"^epoch +(\d+) +test accuracy", output, re.M)]
    # Every epoch reported once, in order; the one whose closing commit merged the replacement
    # skips its line (the commit raises HostsUpdatedInterrupt before the report).
    assert epochs == sorted(set(epochs)) and set(epochs) <= set(range(1, 9)), output
    assert len(epochs) >= 7, output
    final = re.search(r"final test accuracy ([\d.]+) on 3 ranks \(above", output)
    assert final, output
