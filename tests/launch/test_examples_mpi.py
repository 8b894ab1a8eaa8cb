"""The launch examples run end to end as the README shows and report what they promise."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dist_sync

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_PACKAGE_PARENT = str(Path(dist_sync.__file__).resolve().parents[1])
ENV = dict(os.environ, DIST_SYNC_STALL_TIMEOUT_SECONDS="120")
if not _PACKAGE_PARENT.startswith(sys.prefix):
    ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, ENV.get("PYTHONPATH", "")]))


def run(command, timeout=400):
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV,
                          stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return done.stdout


def test_run_from_python_trains_and_returns_every_ranks_result():
    output = run([sys.executable, str(EXAMPLES / "run_from_python.py"), "--np", "2"])
    epochs = re.findall(r"^\[0\] epoch +(\d+) +test accuracy ([\d.]+)$", output, re.M)
    assert len(epochs) == 15, output
    match = re.search(r"^test accuracy per rank \[([\d.]+), ([\d.]+)\]; rank 0's weights scored "
                      r"here: ([\d.]+) \(above the 0\.95 target\)$", output, re.M)
    assert match, output
    per_rank = [float(match.group(1)), float(match.group(2))]
    assert per_rank[0] == per_rank[1] == float(epochs[-1][1])   # replicas stay identical
    assert abs(float(match.group(3)) - per_rank[0]) < 1e-3      # the caller's own scoring


def test_train_dask_reaches_95_percent_on_the_worker_ranks():
    pytest.importorskip("dask_mpi")
    output = run([sys.executable, "-m", "dist_sync.run", "-np", "5", "--no-prefix",
                  str(EXAMPLES / "train_dask.py")])
    assert re.search(r"^12 partitions on 3 workers: rows per worker \[\d+, \d+, \d+\]", output,
                     re.M), output
    epochs = re.findall(r"^epoch +(\d+) +train loss ([\d.]+) +test accuracy ([\d.]+) +"
                        r"\(1437 rows on 3 workers\)$", output, re.M)
    assert len(epochs) == 12, output
    assert float(epochs[-1][1]) < float(epochs[0][1]), "loss did not decrease"
    final = re.search(r"^final test accuracy ([\d.]+) \(above the 0\.95 target\); rows per "
                      r"worker \[(\d+), (\d+), (\d+)\]$", output, re.M)
    assert final and float(final.group(1)) > 0.95, output
    assert sum(int(final.group(i)) for i in (2, 3, 4)) == 1437


def readme_block(section: str) -> str:
    """The first Python code block of a README section."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    body = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return body.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_launching_from_python_runs(tmp_path):
    script = tmp_path / "launch_readme.py"
    script.write_text(readme_block("Launching from Python"))
    output = run([sys.executable, str(script)], timeout=120)
    assert "[(0, 30.0), (1, 30.0), (2, 30.0)]" in output, output
    for rank in range(3):
        assert f"[{rank}] rank {rank} sees 30\n" in output, output


def test_readme_data_in_dask_runs(tmp_path):
    pytest.importorskip("dask_mpi")
    script = tmp_path / "dask_readme.py"
    script.write_text(readme_block("Data in Dask"))
    output = run([sys.executable, "-m", "dist_sync.run", "-np", "5", "--no-prefix", str(script)])
    match = re.search(r"^rows per worker: \[(\d+), (\d+), (\d+)\] of 1797$", output, re.M)
    assert match and sum(int(match.group(i)) for i in (1, 2, 3)) == 1797, output
