"""The Keras example runs end to end under mpirun (2 ranks), reaches its target and writes its
checkpoint from rank 0 only."""
from __future__ import annotations

import re
import subprocess
import sys

from tests.support import ROOT, harness


def test_train_digits_keras_reaches_95_percent(tmp_path):
    checkpoint = tmp_path / "digits.weights.h5"
    command = harness.launch_command(2) + [
        sys.executable, str(ROOT / "examples" / "train_digits_keras.py"),
        "--checkpoint", str(checkpoint)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=harness.mpi_env({"DIST_SYNC_STALL_TIMEOUT_SECONDS": "120"}))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    finals = re.findall(r"final test accuracy ([\d.]+) \((\d+)/360, 2 ranks", output)
    assert len(finals) == 1, output  # printed by rank 0 only
    assert float(finals[0][0]) > 0.95, output
    assert checkpoint.exists()
