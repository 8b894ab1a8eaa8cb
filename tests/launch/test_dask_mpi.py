"""dist_sync.dask on a real Dask cluster of MPI ranks (dask-mpi: 1 scheduler, 1 client,
3 workers). One launch runs every check of tests/launch/dask_worker.py on a shared cluster
(Dask starts slowly); each check is reported here as its own test."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict

import pytest

HERE = Path(__file__).resolve().parent
CHECKS_SCRIPT = HERE / "dask_worker.py"


def _check_names():
    spec = importlib.util.spec_from_file_location("_dask_worker", CHECKS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.CHECKS)


@lru_cache(maxsize=None)
def _launch(out_dir: str) -> Dict[str, Any]:
    pytest.importorskip("dask_mpi")
    import dist_sync
    out = os.path.join(out_dir, "results.json")
    env = dict(os.environ, DASK_LOGGING__DISTRIBUTED="error",
               DIST_SYNC_STALL_TIMEOUT_SECONDS="60")   # a mismatch fails instead of hanging
    package_parent = str(Path(dist_sync.__file__).resolve().parents[1])
    if not package_parent.startswith(sys.prefix):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent,
                                                          env.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "dist_sync.run", "-np", "5", "--timeout", "400",
               str(CHECKS_SCRIPT), out]
    done = subprocess.run(command, capture_output=True, text=True, timeout=460, env=env,
                          stdin=subprocess.DEVNULL)
    if not os.path.exists(out):
        return {"failure": f"exit code {done.returncode}\n{done.stdout[-10000:]}\n"
                           f"{done.stderr[-10000:]}"}
    with open(out) as handle:
        return {"results": json.load(handle), "exit_code": done.returncode,
                "output": done.stdout[-5000:] + done.stderr[-5000:]}


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    return _launch(str(tmp_path_factory.mktemp("dask")))


@pytest.mark.parametrize("name", _check_names())
def test_check(launch, name):
    assert "failure" not in launch, launch.get("failure")
    result = launch["results"][name]
    assert result["ok"], result["error"]


def test_the_cluster_shut_down_cleanly(launch):
    assert "failure" not in launch, launch.get("failure")
    assert launch["exit_code"] == 0, launch["output"]


def test_without_dask_the_import_says_what_to_install():
    code = ("import sys\n"
            "sys.modules['distributed'] = None\n"
            "try:\n"
            "    import dist_sync.dask\n"
            "except ImportError as error:\n"
            "    print(error)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=HERE.parents[1])
    assert done.returncode == 0, done.stderr
    assert "dist_sync.dask needs dask, distributed and dask-mpi" in done.stdout
    assert "pip install .[dask]" in done.stdout
