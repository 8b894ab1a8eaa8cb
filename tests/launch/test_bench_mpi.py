"""Smoke tests of ``python -m dist_sync.bench launch`` (and the command line of ``dask``): it runs
and its JSON holds every number. No timing assertions (docs/benchmarks.md has the numbers)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dist_sync

_PACKAGE_PARENT = str(Path(dist_sync.__file__).resolve().parents[1])
ENV = dict(os.environ)
if not _PACKAGE_PARENT.startswith(sys.prefix):
    ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, ENV.get("PYTHONPATH", "")]))


def run(command, timeout=300):
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_launch_bench(tmp_path):
    out = tmp_path / "launch.json"
    output = run([sys.executable, "-m", "dist_sync.bench", "launch", "-np", "2", "--repeats", "3",
                  "--json", str(out)])
    assert "dist_sync.run / bare mpirun:" in output, output
    results = json.loads(out.read_text())["results"]
    for form in ("bare_mpirun", "dist_sync_run"):
        assert len(results[form]["times_s"]) == 3 and results[form]["median_s"] > 0
        assert len(results[form]["cpu_s"]) == 3 and results[form]["cpu_median_s"] > 0
    assert results["ratio_of_medians"] == pytest.approx(
        results["dist_sync_run"]["median_s"] / results["bare_mpirun"]["median_s"])
    assert results["launcher_probe_s"] > 0


@pytest.mark.parametrize("benchmark", ["launch", "dask"])
def test_bench_refuses_fewer_than_three_repeats(benchmark):
    # (dask's measurement itself runs in tests/launch/dask_worker.py, on the shared cluster.)
    done = subprocess.run([sys.executable, "-m", "dist_sync.bench", benchmark, "--repeats", "2"],
                          capture_output=True, text=True, timeout=60, env=ENV)
    assert done.returncode == 2 and "--repeats must be at least 3" in done.stderr
