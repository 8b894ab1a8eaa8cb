"""Smoke tests of ``python -m dist_sync.bench``: every subcommand runs under mpirun on tiny sizes
and its JSON holds every size/variant with no wrong values, which ``python -m benchmarks.report``
turns into Markdown. No timing assertions: this box is
shared and the numbers are the benchmark's business, not the test's."""
import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest

from tests.support import ROOT, harness

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def run_bench(np_, args, timeout=180):
    """Runs the bench CLI on np_ ranks; returns (exit code, combined output)."""
    command = harness.launch_command(np_) + [sys.executable, "-m", "dist_sync.bench", *args]
    env = harness.mpi_env({"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env, cwd=ROOT, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"bench timed out:\n{output[-5000:]}")
    return process.returncode, output


def run_report(paths):
    """``python -m benchmarks.report`` (no MPI); returns its Markdown."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.report", *map(str, paths)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_allreduce_table_and_json(tmp_path):
    out, plot = tmp_path / "out.json", tmp_path / "busbw.png"
    args = ["allreduce", "-b", "4K", "-e", "64K", "-f", "4", "-n", "3", "-w", "1",
            "--json", str(out)]
    if HAS_MATPLOTLIB:
        args += ["--plot", str(plot)]
    code, output = run_bench(2, args)
    assert code == 0, output
    data = json.loads(out.read_text())
    assert data["benchmark"] == "allreduce"
    env = data["environment"]
    assert env["ranks"] == 2 and env["dist_sync_mpi_library"] and env["command"].endswith(
        " ".join(args))
    assert env["dist_sync_config"]["ring_segment_bytes"] >= 0  # 0: chosen per transport
    tools = ["dist_sync", "dist_sync_raw", "mpi_allreduce", "mpi_sendrecv"] + (
        ["gloo"] if HAS_TORCH else [])
    assert set(tools) <= set(data["settings"]["tools"])
    results = data["results"]
    assert [r["bytes"] for r in results] == [4096, 16384, 65536]
    for row in results:
        assert row["count"] == row["bytes"] // 4 and row["dtype"] == "float32"
        for tool in tools:
            numbers = row[tool]
            assert numbers["wrong"] == 0, (row["bytes"], tool)
            assert len(numbers["times_s"]) == 3 and all(t > 0 for t in numbers["times_s"])
            assert numbers["time_us"] > 0 and numbers["busbw_GBps"] > 0
            # busbw = algbw * 2(N-1)/N, which is 1 for two ranks (1 for sendrecv by definition)
            assert numbers["busbw_GBps"] == pytest.approx(numbers["algbw_GBps"])
        ratios = row["ratios"]
        assert ratios["dist_sync_speedup_vs_mpi_allreduce"] == pytest.approx(
            row["mpi_allreduce"]["time_us"] / row["dist_sync"]["time_us"])
    # The table: a header and one line per size, then the check summary.
    lines = [line for line in output.splitlines() if line.strip().startswith(("4096 ", "16384 ", "65536 "))]
    assert len(lines) == 3, output
    assert "Out of bounds values : 0 OK" in output
    if HAS_MATPLOTLIB:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same file twice, as repeated runs: Markdown rows per size, medians over the runs.
    report = run_report([out, out])
    assert "#### allreduce, 2 ranks" in report and "2 run(s)" in report
    lines = report.replace("\u00a0", " ").splitlines()  # sizes are written "4<nbsp>KiB"
    for size in ("| 4 KiB |", "| 16 KiB |", "| 64 KiB |"):
        (line,) = [l for l in lines if l.startswith(size)]
        assert line.endswith("| 0 |"), line  # #wrong


def test_allreduce_other_dtype_and_skips(tmp_path):
    out = tmp_path / "out.json"
    code, output = run_bench(3, ["allreduce", "-b", "1000", "-e", "1000", "-f", "2", "-d", "int8",
                                 "-n", "2", "-w", "0", "--skip", "gloo,raw", "--json", str(out)])
    assert code == 0, output
    data = json.loads(out.read_text())
    (row,) = data["results"]
    assert row["count"] == 1000 and row["dtype"] == "int8"
    assert "gloo" not in row and "dist_sync_raw" not in row
    assert row["dist_sync"]["wrong"] == 0 and row["mpi_allreduce"]["wrong"] == 0
    # three ranks: busbw = algbw * 4/3
    assert row["dist_sync"]["busbw_GBps"] == pytest.approx(row["dist_sync"]["algbw_GBps"] * 4 / 3)


def test_fusion_reduced_scale(tmp_path):
    out = tmp_path / "fusion.json"
    code, output = run_bench(2, ["fusion", "--scale", "0.01,0.002", "-n", "2", "-w", "1",
                                 "--json", str(out)])
    assert code == 0, output
    data = json.loads(out.read_text())
    # One section per scale, in the order given; the first one's numbers also at the top level.
    assert [run["settings"]["scale"] for run in data["scales"]] == [0.01, 0.002]
    assert data["scales"][0]["variants"] == data["variants"]
    assert data["scales"][1]["settings"]["elements"] < data["settings"]["elements"]
    assert all(v["wrong"] == 0 for run in data["scales"] for v in run["variants"].values())
    assert "# x0.01: 161 tensors" in output and "# x0.002: 161 tensors" in output
    assert output.count("(a)/(b) =") == 2
    settings = data["settings"]
    assert settings["tensors"] == 161 and len(settings["tensor_counts"]) == 161
    assert sum(settings["bucket_sizes_bytes"]) == settings["total_bytes"] == settings["elements"] * 4
    variants = data["variants"]
    expected = {"async", "one_buffer", "one_by_one", "buckets", "async_views", "grouped"} | (
        {"gloo_buckets"} if HAS_TORCH else set())
    assert set(variants) == expected
    for name, numbers in variants.items():
        assert numbers["wrong"] == 0, name
        assert len(numbers["times_s"]) == 2 and numbers["time_ms"] > 0
    assert data["ratios"]["async_over_one_buffer"] == pytest.approx(
        variants["async"]["time_ms"] / variants["one_buffer"]["time_ms"])
    assert "(a)/(b) =" in output
    report = run_report([out])
    assert "#### fusion, 2 ranks" in report and "| (a) 161 × allreduce_async_" in report


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_train_modes_side_by_side(tmp_path):
    out, picture = tmp_path / "train.json", tmp_path / "train.png"
    args = ["train", "--width", "64", "--steps", "2", "--rounds", "2", "-w", "1", "--json", str(out)]
    if HAS_MATPLOTLIB:
        args += ["--plot", str(picture)]
    code, output = run_bench(2, args)
    assert code == 0, output
    data = json.loads(out.read_text())
    modes = data["modes"]
    assert set(modes) == {"none", "dist_sync", "ddp"}
    for name, numbers in modes.items():
        # Parameters bit-identical on every rank wherever gradients were averaged.
        assert numbers["ranks_differing"] == 0, name
        assert [len(r) for r in numbers["times_s"]] == [2, 2] and numbers["step_ms"] > 0
    settings = data["settings"]
    assert settings["parameters"] == 4 * (64 * 64 + 64) + 64 * 10 + 10
    assert data["ratios"]["dist_sync_over_none"] == pytest.approx(
        modes["dist_sync"]["step_ms"] / modes["none"]["step_ms"])
    assert "dist_sync / none =" in output and "dist_sync / ddp =" in output
    assert not HAS_MATPLOTLIB or picture.stat().st_size > 0
    report = run_report([out])
    assert "#### train, 2 ranks" in report and "| dist_sync DistributedOptimizer |" in report


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_horovod_api_script_runs_on_dist_sync(tmp_path):
    # The side-by-side script uses only Horovod's API, so its dist_sync run is checked here
    # (Horovod itself is never a dependency).
    out = tmp_path / "api.json"
    command = harness.launch_command(2) + [
        sys.executable, "-m", "benchmarks.horovod_api", "--api", "dist_sync.torch",
        "--scale", "0.002", "--calls", "5", "--iters", "2", "--warmup", "1", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=180,
                            env=harness.mpi_env({"PYTHONPATH": str(ROOT)}))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert data["wrong"] == 0 and data["ranks"] == 2
    assert set(data["median_s"]) == {"small_async", "small_buffer", "sync_4k", "mlp_step",
                                     "mlp_local"}
    table = subprocess.run([sys.executable, "-m", "benchmarks.horovod_api", "--table", str(out)],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert table.returncode == 0 and "| api.json | dist_sync.torch |" in table.stdout


def test_tune_small_sweeps(tmp_path):
    out = tmp_path / "tune.json"
    code, output = run_bench(2, ["tune", "-n", "2", "-w", "1", "--rounds", "2",
                                 "--sizes", "256K", "--segments", "32K,128K", "--in-flight", "1,2",
                                 "--small-sizes", "1K,8K", "--cycle-times", "0.5,2",
                                 "--fusion-thresholds", "0,1M", "--scale", "0.002",
                                 "--idle-seconds", "0.2", "--json", str(out)], timeout=300)
    assert code == 0, output
    data = json.loads(out.read_text())
    sweeps = data["sweeps"]
    assert len(sweeps["segments"]["results"]) == 4
    assert all(len(r["times_s"]) == 4 for r in sweeps["segments"]["results"])  # 2 x 2 rounds
    assert [r["bytes"] for r in sweeps["small"]["results"]] == [1024, 8192]
    assert [r["cycle_time_ms"] for r in sweeps["cycle"]["results"]] == [0.5, 2.0]
    assert all(0 <= r["idle_cpu_fraction"] < 2 for r in sweeps["cycle"]["results"])
    assert [r["fusion_threshold_bytes"] for r in sweeps["fusion"]["results"]] == [0, 1 << 20]
    suggested = data["suggested"]
    assert suggested["ring_segment_bytes"] in (32 << 10, 128 << 10)
    assert suggested["ring_in_flight"] in (1, 2)
    assert suggested["small_allreduce_bytes"] in (0, 1024, 8192)
    assert suggested["cycle_time_ms"] in (0.5, 2.0)
    assert suggested["fusion_threshold_bytes"] in (0, 1 << 20)
    assert "suggested defaults" in output
    report = run_report([out])
    assert "#### tune, 2 ranks" in report and "Suggested: `ring_segment_bytes`" in report


@pytest.mark.parametrize("name", ["scaling", "report"])
def test_benchmarks_of_the_checkout_are_named(name):
    # Not installed with the package: the command line says how to run them from a checkout.
    result = subprocess.run([sys.executable, "-m", "dist_sync.bench", name, "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert f"run `python -m benchmarks.{name}` (benchmarks/{name}.py)" in result.stderr
    assert "needs a source checkout" in result.stderr


def test_bad_arguments_are_refused():
    result = subprocess.run([sys.executable, "-m", "dist_sync.bench", "allreduce", "-b", "lots"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2 and "lots" in result.stderr
