"""Nothing hangs, nothing is silently wrong: a rank that dies, raises or stalls ends the job on
every rank with a message naming it, and the job leaves no process and no /dev/shm segment
behind. Every run has a subprocess timeout: a hang fails the test instead of blocking it.

Under Open MPI's mpirun a dying rank makes mpirun end the others with SIGTERM at once, so what
the user sees there is each rank's SIGTERM report (Note [Saying why mpirun ended a rank]);
with ``--enable-recovery`` mpirun lets them run on, and the engine's own liveness check
(Waiter, kill(pid, 0)) must fail their operations with the lost rank's name.
"""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import List, Optional

import pytest

from tests.support import faults, harness

# MPICH's mpiexec (hydra) ends the other ranks with SIGKILL, which no process can report on,
# and leaves its /dev/shm/mpich_shm_* segment behind; these tests describe Open MPI's behaviour.
pytestmark = pytest.mark.skipif(harness.mpi_flavor(harness.mpirun_path()) != "openmpi",
                                reason="fault reporting under mpirun is specified for Open MPI")

WORKER = "tests.faults.faults_worker"
# "Every other rank stops within 60 seconds": the whole job, start-up included.
JOB_TIMEOUT = 60.0


def run_dead_rank(tmp_path: Path, np_: int, how: str, during: str,
                  mpirun_args: Optional[List[str]] = None):
    job = faults.token()
    victim = 1
    run = harness.run(WORKER, np_, "dead_rank",
                      {"how": how, "during": during, "victim": victim,
                       "info_dir": str(tmp_path), "token": job},
                      timeout=JOB_TIMEOUT, mpirun_args=mpirun_args)
    assert not run.timed_out, run.describe()
    assert run.returncode != 0, run.describe()
    records = faults.process_records(tmp_path)
    assert sorted(records) == list(range(np_)), run.describe()
    assert faults.leftover_processes(job) == []
    assert faults.leftover_shm(records) == [], run.describe()
    lost = f"rank {victim} (pid {records[victim]['pid']} on "
    return run, lost, [r for r in range(np_) if r != victim]


@pytest.mark.parametrize("np_,how,during", [
    (2, "sigkill", "small"),
    (3, "sigkill", "small"),
    (3, "exit", "small"),
    (2, "sigkill", "large"),
    (3, "exit", "large"),
])
def test_dead_rank_is_named_by_every_other_rank(tmp_path, np_, how, during):
    run, lost, survivors = run_dead_rank(tmp_path, np_, how, during)
    lines = faults.sigterm_lines(run.output)
    for rank in survivors:
        # Either mpirun's SIGTERM came first (the usual case) and the rank's report names the
        # lost rank, or the engine noticed first and the rank's error does.
        if rank in lines:
            assert "Ranks on this host that had exited or been killed: " + lost in lines[rank], \
                run.describe()
        else:
            assert rank in run.ranks and lost in run.ranks[rank].value["error"], run.describe()
    assert "process rank 1" in run.output or "[prterun" in run.output  # mpirun's own note


@pytest.mark.parametrize("how,during", [("sigkill", "small"), ("exit", "large")])
def test_dead_rank_detected_by_the_engine_when_mpirun_lets_the_job_run_on(tmp_path, how, during):
    # --enable-recovery: mpirun does not end the job when a rank dies, so only dist_sync's own
    # check stands between the survivors and a hang.
    run, lost, survivors = run_dead_rank(tmp_path, 3, how, during,
                                         mpirun_args=["--enable-recovery"])
    for rank in survivors:
        assert rank in run.ranks, run.describe()
        error = run.ranks[rank].value["error"]
        assert lost in error and "has exited or been killed" in error, run.describe()
        assert f"[dist_sync rank {rank}] ERROR: " in run.output


@pytest.mark.parametrize("framework,np_", [("numpy", 2), ("numpy", 3), ("torch", 2), ("torch", 3),
                                           ("thread", 3)])
def test_exception_on_one_rank_names_it_on_every_rank(tmp_path, framework, np_):
    job = faults.token()
    run = harness.run(WORKER, np_, "exception_in_training",
                      {"framework": framework, "victim": 1, "step": 3,
                       "info_dir": str(tmp_path), "token": job},
                      timeout=120 if framework == "torch" else JOB_TIMEOUT)
    assert not run.timed_out, run.describe()
    assert run.returncode != 0, run.describe()
    assert "ValueError: bad batch 3" in run.output  # the victim's own traceback
    cause = "rank 1 exited with an uncaught ValueError: bad batch 3"
    lines = faults.sigterm_lines(run.output)
    for rank in (0, 2)[:np_ - 1]:
        # The rank raised the error itself (and recorded it), or mpirun's SIGTERM came first
        # and the rank's report carries the reason its engine had stopped.
        if rank in run.ranks:
            assert cause in run.ranks[rank].value["error"], run.describe()
        else:
            assert rank in lines and "dist_sync had stopped: " in lines[rank] \
                and cause in lines[rank], run.describe()
    assert faults.leftover_processes(job) == []
    assert faults.leftover_shm(faults.process_records(tmp_path)) == [], run.describe()


def missing(np_: int) -> str:
    """How the stall inspector describes the stalled (last) rank and the others."""
    waiting = ", ".join(str(r) for r in range(np_ - 1))
    return f"submitted by {'rank' if np_ == 2 else 'ranks'} {waiting} but not by rank {np_ - 1}"


@pytest.mark.parametrize("cached", [False, True], ids=["negotiated", "cached"])
@pytest.mark.parametrize("np_", [2, 3])
def test_stall_warning_names_tensor_and_missing_rank(tmp_path, np_, cached):
    run = harness.run(WORKER, np_, "stall", {"cached": cached, "sleep": 4,
                                             "info_dir": str(tmp_path), "token": faults.token()},
                      timeout=90, env={"DIST_SYNC_STALL_WARNING_SECONDS": "1"})
    values = run.values()
    assert all(v["error"] is None for v in values), run.describe()
    if cached:  # the stalled round really went through the cache
        assert all(v["cache_hits"] >= 1 for v in values), values
    assert "[dist_sync rank 0] WARNING: Stalled operations" in run.output, run.output
    assert f"allreduce 'stalled.tensor' was {missing(np_)}" in run.output, run.output


@pytest.mark.parametrize("cached", [False, True], ids=["negotiated", "cached"])
@pytest.mark.parametrize("np_", [2, 3])
def test_stall_timeout_fails_every_rank_with_tensor_and_missing_rank(tmp_path, np_, cached):
    job = faults.token()
    env = {"DIST_SYNC_STALL_WARNING_SECONDS": "1", "DIST_SYNC_STALL_TIMEOUT_SECONDS": "3",
           "DIST_SYNC_FATAL_GRACE_SECONDS": "2"}
    run = harness.run(WORKER, np_, "stall", {"cached": cached, "sleep": 600,
                                             "info_dir": str(tmp_path), "token": job},
                      timeout=JOB_TIMEOUT, env=env)
    assert not run.timed_out, run.describe()
    assert run.returncode != 0, run.describe()  # the sleeping rank's engine ended the job
    stall = f"allreduce 'stalled.tensor' was {missing(np_)}"
    for rank in range(np_ - 1):  # the waiting ranks fail their allreduce with the message
        assert rank in run.ranks, run.describe()
        error = run.ranks[rank].value["error"]
        assert "Stall timeout" in error and "DIST_SYNC_STALL_TIMEOUT_SECONDS" in error \
            and stall in error, run.describe()
    # Every engine, the stalled rank's included, logs it; the stalled rank, asleep in Python,
    # then ends the job after DIST_SYNC_FATAL_GRACE_SECONDS.
    for rank in range(np_):
        assert f"[dist_sync rank {rank}] ERROR: Stall timeout" in run.output, run.describe()
    assert f"[dist_sync rank {np_ - 1}] ERROR: ending the job after the error above" in run.output
    assert faults.leftover_processes(job) == []
    assert faults.leftover_shm(faults.process_records(tmp_path)) == [], run.describe()


@pytest.mark.parametrize("btl", [None, "^ofi"], ids=["default", "exclusions"])
def test_singleton_run_leaves_no_shared_memory(btl):
    # `python train.py` without mpirun: Open MPI is a singleton with no launcher to remove its
    # shared-memory segment, so dist_sync keeps the transport out (Note [Singleton shared memory]).
    (mapped,) = harness.run_ok(WORKER, None, "singleton", timeout=JOB_TIMEOUT,
                               env={"OMPI_MCA_btl": btl})   # None: not set at all
    assert faults.leftover_shm({0: {"shm": mapped}}, settle_seconds=2) == []


def sigterm_probe(mode: str) -> "subprocess.CompletedProcess[str]":
    """Runs the worker's sigterm scenario alone and sends it SIGTERM once it is ready (the
    forked_child mode signals its own child)."""
    process = subprocess.Popen(harness.worker_command(WORKER, ["sigterm"], {"mode": mode}),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=harness.worker_env())
    try:
        if mode != "forked_child":
            assert process.stdout.readline().strip() == "ready"
            process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=JOB_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_sigterm_report_names_no_lost_rank_in_a_lone_process():
    done = sigterm_probe("running")
    assert done.returncode == -signal.SIGTERM, done  # still dies of SIGTERM, as by default
    assert "[dist_sync rank 0] terminated by SIGTERM" in done.stderr
    assert "No other rank on this host had exited" in done.stderr


@pytest.mark.parametrize("mode", ["user_handler", "forked_child", "after_shutdown"])
def test_sigterm_report_stays_out_of_the_way(mode):
    # A handler of the user's is kept; a child forked after init() and a process after
    # shutdown() die of SIGTERM silently, as without dist_sync.
    done = sigterm_probe(mode)
    assert "terminated by SIGTERM" not in done.stderr, done
    if mode == "user_handler":
        assert done.returncode == 7 and "user handler ran" in done.stdout, done
    elif mode == "forked_child":
        assert done.returncode == 0 and f"child ended by signal {int(signal.SIGTERM)}" in done.stdout, done
    else:
        assert done.returncode == -signal.SIGTERM, done


@pytest.mark.parametrize("np_", [2, 3])
def test_ctrl_c_while_waiting_raises_at_once_and_the_others_learn_why(tmp_path, np_):
    job = faults.token()
    # Without interruptible waits the interrupted rank would sit out the stall timeout (600 s
    # here) and the harness's timeout would end the job instead.
    run = harness.run(WORKER, np_, "interrupted_wait", {"info_dir": str(tmp_path), "token": job},
                      timeout=JOB_TIMEOUT, env={"DIST_SYNC_STALL_TIMEOUT_SECONDS": "600"})
    assert not run.timed_out, run.describe()
    assert run.returncode != 0, run.describe()
    last = np_ - 1
    assert run.ranks[last].value == {"interrupted": True}, run.describe()
    assert "KeyboardInterrupt" in run.output
    cause = f"rank {last} was interrupted (KeyboardInterrupt)"
    lines = faults.sigterm_lines(run.output)
    for rank in range(last):
        if rank in run.ranks:
            assert cause in run.ranks[rank].value["error"], run.describe()
        else:
            assert rank in lines and cause in lines[rank], run.describe()
    assert faults.leftover_processes(job) == []
    assert faults.leftover_shm(faults.process_records(tmp_path)) == [], run.describe()


@pytest.mark.parametrize("interrupt", [False, True])
def test_init_on_one_rank_alone_does_not_hang(tmp_path, interrupt):
    job = faults.token()
    run = harness.run(WORKER, 2, "init_alone",
                      {"info_dir": str(tmp_path), "token": job, "interrupt": interrupt},
                      timeout=JOB_TIMEOUT, env={"DIST_SYNC_INIT_TIMEOUT_SECONDS": "3"})
    assert not run.timed_out, run.describe()
    first = run.ranks[0].value
    if interrupt:
        assert first == {"interrupted": True}, run.describe()
    else:
        error = first["error"]
        assert "dist_sync.init() is collective: all 2 ranks must call it, but rank 0 waited 3 s " \
               "(DIST_SYNC_INIT_TIMEOUT_SECONDS) and not every rank did" in error, run.describe()
    assert run.ranks[1].value == {"rank": 1}
    assert faults.leftover_processes(job) == []
