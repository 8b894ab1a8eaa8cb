"""dist_sync.run and ``python -m dist_sync.run``: values come back in rank order, a failing
rank's traceback reaches the caller, and an interrupted or timed-out job leaves no process and
no MPI shared-memory file behind. Each check launches real ranks through the installed MPI's
launcher (Open MPI's mpirun, or MPICH's mpiexec under `make test-mpich`)."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

import dist_sync
from dist_sync.launch import JobError, RankError

# Lets a subprocess of this test import the dist_sync under test: a source tree's, or the one
# installed in this environment (under `make test-mpich`, the MPICH build).
_PACKAGE_PARENT = str(Path(dist_sync.__file__).resolve().parents[1])
CHILD_ENV = dict(os.environ)
if not _PACKAGE_PARENT.startswith(sys.prefix):
    CHILD_ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [
        _PACKAGE_PARENT, os.environ.get("PYTHONPATH", "")]))


def allreduce_ranks(scale):
    import numpy
    import dist_sync
    dist_sync.init()
    total = dist_sync.allreduce(numpy.array([dist_sync.rank() * scale], numpy.int64),
                                op=dist_sync.Sum)
    result = (dist_sync.rank(), dist_sync.size(), int(total[0]))
    dist_sync.shutdown()
    return result


@pytest.mark.parametrize("np_", [1, 3])
def test_values_come_back_in_rank_order(np_):
    values = dist_sync.run(allreduce_ranks, args=(10,), np=np_, timeout=120)
    expected_total = 10 * sum(range(np_))
    assert values == [(r, np_, expected_total) for r in range(np_)]


def test_closures_kwargs_and_numpy_values():
    offset = np.arange(3)

    def shifted(scale, *, power):
        import dist_sync
        dist_sync.init()
        return (offset + dist_sync.rank()) * scale ** power

    values = dist_sync.run(shifted, args=(2,), kwargs={"power": 3}, np=2, timeout=120)
    assert [v.tolist() for v in values] == [[0, 8, 16], [8, 16, 24]]


def test_functions_of_importable_modules_are_imported_on_the_ranks(tmp_path, monkeypatch):
    (tmp_path / "launch_helper_module.py").write_text(textwrap.dedent("""
        import os
        def where():
            return __name__, int(os.environ["LAUNCH_TEST_VALUE"])
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import launch_helper_module
    values = dist_sync.run(launch_helper_module.where, np=2, env={"LAUNCH_TEST_VALUE": "7"},
                           timeout=120)
    assert values == [("launch_helper_module", 7)] * 2


def test_output_is_streamed_with_rank_prefixes():
    def talk():
        import sys
        import dist_sync
        dist_sync.init()
        rank = dist_sync.rank()
        print(f"hello from {rank}", end="")     # finished by the next print
        print(" and goodbye")
        print(f"trouble on {rank}", file=sys.stderr)
        sys.stdout.write("no newline at the end")
        return rank

    out, err = io.StringIO(), io.StringIO()
    assert dist_sync.run(talk, np=2, stdout=out, stderr=err, timeout=120) == [0, 1]
    for rank in range(2):
        assert f"[{rank}] hello from {rank} and goodbye\n" in out.getvalue()
        assert f"[{rank}] no newline at the end\n" in out.getvalue()
        assert f"[{rank}] trouble on {rank}\n" in err.getvalue()
    plain = io.StringIO()
    dist_sync.run(talk, np=1, stdout=plain, stderr=io.StringIO(), prefix_output=False,
                  timeout=120)
    assert "hello from 0 and goodbye\n" in plain.getvalue() and "[0]" not in plain.getvalue()


def raise_on_rank_one():
    import numpy
    import dist_sync
    dist_sync.init()
    if dist_sync.rank() == 1:
        raise ValueError("bad batch 17")
    dist_sync.allreduce(numpy.ones(4), name="grad.w")   # fails: rank 1 has left
    return "unreachable"


def test_a_failing_rank_raises_in_the_caller_with_its_traceback():
    started = time.monotonic()
    with pytest.raises(RankError) as caught:
        dist_sync.run(raise_on_rank_one, np=3, stdout=io.StringIO(), stderr=io.StringIO(),
                      timeout=120)
    error = caught.value
    assert error.rank == 1 and error.size == 3 and error.error_type == "ValueError"
    message = str(error)
    assert message.startswith("rank 1 of 3 failed in dist_sync.run(raise_on_rank_one):")
    assert "Traceback (most recent call last):" in message
    assert f'File "{__file__}"' in message and "in raise_on_rank_one" in message
    assert 'raise ValueError("bad batch 17")' in message
    assert "ValueError: bad batch 17" in message
    # The others were ended: by the launcher, or by dist_sync telling them why.
    assert "rank 0 " in message and "rank 2 " in message
    assert isinstance(error.__cause__, ValueError) and str(error.__cause__) == "bad batch 17"
    assert error.exit_code != 0
    assert time.monotonic() - started < 100


def test_a_killed_rank_fails_the_job_and_leaves_no_shared_memory(tmp_path):
    def die(out):
        import os
        import time
        import numpy
        import dist_sync
        dist_sync.init()
        if dist_sync.rank() == 1:
            time.sleep(0.5)
            os._exit(3)
        with open("/proc/self/maps") as maps, open(out, "w") as handle:
            handle.write("\n".join({line.split(None, 5)[5].strip() for line in maps
                                    if "/dev/shm/" in line and "(deleted)" not in line}))
        dist_sync.allreduce(numpy.ones(4))

    segments = tmp_path / "segments"
    with pytest.raises(JobError) as caught:
        dist_sync.run(die, args=(str(segments),), np=2, stdout=io.StringIO(),
                      stderr=io.StringIO(), timeout=120)
    assert not isinstance(caught.value, RankError)
    message = str(caught.value)
    assert "dist_sync.run(" in message and "failed (launcher exit code" in message
    assert "rank 1 left no result" in message
    assert caught.value.exit_code != 0   # Open MPI names the rank in its output; MPICH does not
    mapped = [p for p in segments.read_text().splitlines() if p]
    assert mapped and [p for p in mapped if os.path.exists(p)] == []


def test_an_unpicklable_return_value_is_reported():
    def lock():
        import threading
        return threading.Lock()

    with pytest.raises(RankError, match=r"the return value of rank 0 \(lock\) cannot be pickled"):
        dist_sync.run(lock, np=1, stdout=io.StringIO(), stderr=io.StringIO(), timeout=120)


def test_bad_arguments_raise_before_anything_starts():
    with pytest.raises(TypeError, match="fn must be callable"):
        dist_sync.run("train.py")
    with pytest.raises(ValueError, match="np must be a positive int"):
        dist_sync.run(print, np=0)
    with pytest.raises(FileNotFoundError, match="does not exist or is not executable"):
        dist_sync.run(print, mpirun="/nonexistent/mpirun")
    with pytest.raises(TypeError, match="cannot send 'print' and its arguments"):
        dist_sync.run(print, args=(threading.Lock(),))


def _alive(pid: int) -> bool:
    """True while a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pids: List[int], seconds: float = 10.0) -> List[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


# Each rank records its pid, its launcher's pid and the shared-memory files it has mapped, then
# sleeps; the caller is interrupted (or times out) meanwhile.
SLEEPER = textwrap.dedent("""
    import json, os, signal, sys, time
    import dist_sync

    # A job started in the background may inherit SIGINT ignored; Ctrl-C in a terminal is not.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def sleeper(out_dir, ignore_sigterm):
        import json, os, signal, time
        import dist_sync
        dist_sync.init()
        if ignore_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open("/proc/self/maps") as maps:
            shm = sorted({line.split(None, 5)[5].strip() for line in maps
                          if "/dev/shm/" in line and "(deleted)" not in line})
        path = os.path.join(out_dir, f"{dist_sync.rank()}.json")
        with open(path + ".tmp", "w") as handle:
            json.dump({"pid": os.getpid(), "ppid": os.getppid(), "shm": shm}, handle)
        os.replace(path + ".tmp", path)
        time.sleep(600)

    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else None
    dist_sync.run(sleeper, args=(sys.argv[1], sys.argv[2] == "1"), np=3, timeout=timeout)
""")


def _start_sleepers(tmp_path: Path, ignore_sigterm: bool, timeout: str = ""):
    script = tmp_path / "launcher.py"
    script.write_text(SLEEPER)
    out_dir = tmp_path / "ranks"
    out_dir.mkdir()
    argv = [sys.executable, str(script), str(out_dir), "1" if ignore_sigterm else "0"]
    process = subprocess.Popen(argv + ([timeout] if timeout else []), env=CHILD_ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 90
    ranks: Dict[int, dict] = {}
    while len(ranks) < 3:
        if time.monotonic() > deadline or process.poll() is not None:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the ranks did not start:\n{process.communicate()[0]}")
        for path in out_dir.glob("*.json"):
            ranks[int(path.stem)] = json.loads(path.read_text())
        time.sleep(0.05)
    return process, ranks


def _assert_nothing_left(ranks: Dict[int, dict], shared_memory: bool = True) -> None:
    pids = [info["pid"] for info in ranks.values()] + [info["ppid"] for info in ranks.values()]
    assert _wait_gone(pids) == [], "processes of the job are still running"
    if not shared_memory:
        return
    shm = {path for info in ranks.values() for path in info["shm"]}
    assert shm, "the ranks mapped no shared memory: nothing was checked"
    assert [p for p in shm if os.path.exists(p)] == []


@pytest.mark.parametrize("ignore_sigterm", [False, True], ids=["plain", "ranks-ignore-sigterm"])
def test_ctrl_c_ends_the_job_and_leaves_nothing_behind(tmp_path, ignore_sigterm):
    process, ranks = _start_sleepers(tmp_path, ignore_sigterm)
    process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"the caller did not return after Ctrl-C:\n{process.communicate()[0]}")
    assert process.returncode != 0
    assert "KeyboardInterrupt" in output, output
    _assert_nothing_left(ranks)


def test_a_killed_caller_takes_its_job_with_it(tmp_path):
    process, ranks = _start_sleepers(tmp_path, False)
    process.kill()
    process.communicate(timeout=60)
    # The launcher gets SIGTERM and ends the ranks. With nobody left to read its output it may
    # not remove its shared memory (README, "Launching from Python"): processes only.
    _assert_nothing_left(ranks, shared_memory=False)
    for path in {p for info in ranks.values() for p in info["shm"]}:
        if os.path.exists(path):
            os.unlink(path)


def test_a_timeout_ends_the_job_and_leaves_nothing_behind(tmp_path):
    process, ranks = _start_sleepers(tmp_path, False, timeout="8")
    try:
        output, _ = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"the timeout did not end the job:\n{process.communicate()[0]}")
    assert process.returncode != 0
    assert "TimeoutError: dist_sync.run: sleeper on 3 ranks did not finish within 8 s; " \
           "the job was ended" in output, output
    _assert_nothing_left(ranks)


def test_dist_sync_run_is_the_function_even_after_importing_the_module():
    code = ("import types, dist_sync, dist_sync.run\n"
            "assert isinstance(dist_sync.run, types.FunctionType), type(dist_sync.run)\n"
            "from dist_sync import run\n"
            "assert run is dist_sync.run\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], env=CHILD_ENV, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dist_sync.run", *args], env=CHILD_ENV,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_command_line_starts_a_script_on_n_ranks(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import sys
        import dist_sync
        dist_sync.init()
        print("rank", dist_sync.rank(), "of", dist_sync.size(), "args", sys.argv[1:])
        sys.exit(int(sys.argv[1]) if dist_sync.rank() == 1 else 0)
    """))
    done = _cli("-np", "3", str(script), "0", "--flag")
    assert done.returncode == 0, done.stdout + done.stderr
    for rank in range(3):
        assert f"[{rank}] rank {rank} of 3 args ['0', '--flag']\n" in done.stdout
    failed = _cli("-np", "2", str(script), "5")
    assert failed.returncode != 0
    plain = _cli("-np", "1", "--no-prefix", sys.executable, str(script), "0")
    assert plain.returncode == 0 and plain.stdout == "rank 0 of 1 args ['0']\n", plain.stdout


def test_command_line_usage_errors():
    done = _cli("train.py")
    assert done.returncode == 2 and "-np" in done.stderr
    done = _cli("-np", "2")
    assert done.returncode == 2 and "no script or command to run" in done.stderr
    done = _cli("-np", "2", "--mpirun", "/nonexistent/mpirun", "train.py")
    assert done.returncode == 2 and "does not exist or is not executable" in done.stderr
