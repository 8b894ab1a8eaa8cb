"""The launcher's pieces without a launcher: command lines for Open MPI and MPICH, rank-tagged
output turned into prefixed lines, and the choice of the failure to report."""
from __future__ import annotations

import collections
import io

import pytest

from dist_sync.launch import mpi
from dist_sync.launch.errors import JobError, RankError, first_failure, raise_for_outcomes
from dist_sync.launch.output import RankOutput
from dist_sync.launch.payload import Outcome

OPENMPI = mpi.Launcher("/x/mpirun", mpi.OPENMPI)
MPICH = mpi.Launcher("/x/mpiexec", mpi.MPICH)


def test_open_mpi_command_line():
    assert mpi.command(OPENMPI, 4) == ["/x/mpirun", "-np", "4", "--bind-to", "none",
                                       "--tag-output", "--oversubscribe"]
    assert mpi.command(OPENMPI, 2, hosts=["a:1", "b:1"], forwarded_env=["X"],
                       extra_args=["--mca", "btl", "tcp,self"]) == [
        "/x/mpirun", "-np", "2", "--bind-to", "none", "--tag-output", "--host", "a:1,b:1",
        "-x", "X", "--mca", "btl", "tcp,self"]


def test_mpich_command_line():
    assert mpi.command(MPICH, 3, hosts="a:2, b:1") == [
        "/x/mpiexec", "-n", "3", "-bind-to", "none", "-prepend-pattern", "[dist_sync:%r] ",
        "-hosts", "a:2,b:1"]


def test_bad_rank_counts_and_hosts():
    for bad in (0, -1, 2.0, True, "2"):
        with pytest.raises(ValueError, match="np must be a positive int"):
            mpi.command(OPENMPI, bad)
    with pytest.raises(ValueError, match="names no host"):
        mpi.command(OPENMPI, 2, hosts=" , ")


def test_environment_never_overrides_the_callers_settings(monkeypatch):
    monkeypatch.setenv("OMPI_MCA_btl", "tcp,self")
    monkeypatch.delenv("OMPI_MCA_mtl", raising=False)
    env = mpi.environment(OPENMPI, {"A": 1})
    assert env["A"] == "1" and env["OMPI_MCA_btl"] == "tcp,self"
    assert env["OMPI_MCA_mtl"] == "^ofi" and env["PYTHONUNBUFFERED"] == "1"
    # Other hosts may need the network providers this host's shared memory does not.
    assert "OMPI_MCA_mtl" not in mpi.environment(OPENMPI, None, hosts="a:1")
    assert "OMPI_MCA_mtl" not in mpi.environment(MPICH, None)


def feed(flavor, *chunks):
    target, tail = io.StringIO(), collections.deque()
    stream = RankOutput(flavor, target, tail)
    for chunk in chunks:
        stream.feed(chunk)
    stream.close()
    return target.getvalue()


def test_open_mpi_tags_become_prefixes_and_partial_lines_are_joined():
    text = feed(mpi.OPENMPI,
                "[1,0]<stdout>: hello\n[1,1]<stdout>: par",         # a tag split across reads
                "tial[1,0]<stdout>: other\n",
                "[1,1]<stdout>:  rest\nlauncher says hi\n",
                "[1,1]<stdout>: never ended")
    assert text.splitlines() == ["[0] hello", "[0] other", "[1] partial rest",
                                 "launcher says hi", "[1] never ended"]


def test_hydra_tags_mid_line_and_text_that_looks_like_a_tag():
    # What mpiexec -prepend-pattern printed for unbuffered prints of two ranks.
    assert feed(mpi.MPICH, "[dist_sync:12] step [0] done\n[dist_sync:1] par[dist_sync:0] a\n",
                "[dist_sync:1] tial\n\nplain\n").splitlines() == [
        "[12] step [0] done", "[0] a", "[1] partial", "", "plain"]


def outcome(rank, error_type="", at=0.0, ok=False):
    return Outcome(rank, ok, value=rank if ok else None, error_type=error_type,
                   error_message=f"{error_type} on {rank}", traceback=f"tb {rank}\n",
                   failed_at=at)


def test_the_first_failure_that_is_not_a_consequence_is_reported():
    outcomes = [outcome(0, "DistSyncError", at=1.0), outcome(1, "ValueError", at=2.0),
                outcome(2, "KeyError", at=3.0), None]
    assert first_failure(outcomes).rank == 1
    with pytest.raises(RankError) as caught:
        raise_for_outcomes(outcomes, "job", exit_code=1, missing_reason="was killed")
    assert caught.value.rank == 1 and caught.value.size == 4
    assert str(caught.value).startswith("rank 1 of 4 failed in job:\ntb 1")
    assert "rank 0 raised DistSyncError: DistSyncError on 0; rank 2 raised KeyError" in \
        str(caught.value) and "rank 3 was killed" in str(caught.value)
    only_consequences = [outcome(0, "DistSyncError", at=5.0), outcome(1, "DistSyncError", at=4.0)]
    assert first_failure(only_consequences).rank == 1


def test_no_rank_failed_but_the_launcher_did():
    with pytest.raises(JobError, match=r"job failed \(launcher exit code 2\): rank 1 left no "
                                       r"result\. Last output:\nboom") as caught:
        raise_for_outcomes([outcome(0, ok=True), None], "job", exit_code=2, tail=["boom"])
    assert not isinstance(caught.value, RankError)
    assert raise_for_outcomes([outcome(0, ok=True), outcome(1, ok=True)], "job", 0) == [0, 1]
