"""The PyTorch examples run end to end under mpirun (2 ranks) and report what they promise."""
from __future__ import annotations

import re
import subprocess
import sys

from tests.support import ROOT, harness

EXAMPLES = ROOT / "examples"


def run_example(script: str, *args: str, timeout: float = 240) -> str:
    command = harness.launch_command(2) + [sys.executable, str(EXAMPLES / script), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=harness.mpi_env({"DIST_SYNC_STALL_TIMEOUT_SECONDS": "120"}))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_train_digits_reaches_95_percent():
    output = run_example("train_digits.py")
    epochs = re.findall(r"epoch +(\d+) +train loss ([\d.]+) +test accuracy ([\d.]+) "
                        r"\((\d+)/360\) +\[2 ranks\]", output)
    assert len(epochs) == 12, output
    final = float(re.search(r"final test accuracy ([\d.]+)", output).group(1))
    assert final > 0.95, output
    assert float(epochs[-1][1]) < float(epochs[0][1]), "loss did not decrease"


def test_synthetic_benchmark_compare_output():
    output = run_example("synthetic_benchmark.py", "--model", "resnet18", "--image-size", "32",
                         "--batch-size", "4", "--num-warmup-batches", "1",
                         "--num-batches-per-iter", "1", "--num-iters", "2", "--compare")
    for pattern in (r"Model: resnet18 \(11\.7M parameters\)", r"Number of CPUs: 2",
                    r"Iter #1: [\d.]+ img/sec per CPU \(DistributedDataParallel: [\d.]+\)",
                    r"dist_sync Img/sec per CPU: [\d.]+ \+-[\d.]+",
                    r"dist_sync Total img/sec on 2 CPU\(s\): [\d.]+ \+-[\d.]+",
                    r"DistributedDataParallel \(gloo\) Img/sec per CPU: [\d.]+",
                    r"Single-process img/sec: [\d.]+",
                    r"Scaling efficiency .*: dist_sync [\d.]+%, DistributedDataParallel [\d.]+%"):
        assert re.search(pattern, output), f"{pattern!r} not in:\n{output}"


def test_synthetic_benchmark_refuses_adasum_on_three_ranks():
    """--use-adasum runs (Adasum needs a power-of-two number of ranks; 3 is refused, clearly)."""
    command = harness.launch_command(3) + [sys.executable, str(EXAMPLES / "synthetic_benchmark.py"),
                                           "--use-adasum", "--model", "resnet18",
                                           "--image-size", "32", "--batch-size", "2",
                                           "--num-warmup-batches", "1", "--num-iters", "1",
                                           "--num-batches-per-iter", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=harness.mpi_env())
    assert done.returncode != 0
    assert "Adasum needs a power-of-two number of ranks, got 3" in done.stdout + done.stderr
