"""tests/harness.py for a virtual cluster: runs a worker script on ranks spread over netns hosts.

Workers are the same as under plain mpirun (tests/workers/*.py, or tests/multihost/workers/*.py):
they call ``_common.main(fn)`` and every rank's result comes back as a harness.MpiRun. The
difference is the launch: mpirun starts on host 0 and reaches the other hosts over TCP through
the launcher agent, and only what is forwarded with ``-x`` reaches the ranks (see netns_agent.sh).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from tests.multihost.netns import VirtualCluster
from tests.support import harness




def run(cluster: VirtualCluster, worker: str, ranks_per_host: Union[int, Sequence[int]],
        args: Any = None, timeout: float = 120.0, env: Optional[Dict[str, str]] = None,
        mpirun_args: Sequence[str] = ()) -> harness.MpiRun:
    """Runs `worker` with JSON `args` on `ranks_per_host` ranks per host; `env` reaches every rank."""
    with tempfile.TemporaryDirectory(prefix="dist_sync_mh_") as out_dir:
        rank_env = {
            # The hosts start with a clean environment: the ranks import as harness.worker_env's.
            "PYTHONPATH": os.pathsep.join(harness.import_path()),
            "PYTHONSAFEPATH": "1",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",           # ranks outnumber cores
            "DIST_SYNC_TEST_OUT": out_dir,
        }
        rank_env.update(env or {})
        command = cluster.mpirun_command([sys.executable, "-m", harness.worker_module(worker),
                                          json.dumps(args if args is not None else {})],
                                         ranks_per_host, env=rank_env, mpirun_args=mpirun_args)
        returncode, output, timed_out = cluster.run(command, timeout)
        result = harness.MpiRun(returncode, output, timed_out)
        for path in Path(out_dir).glob("rank*.json"):
            data = json.loads(path.read_text())
            result.ranks[data["rank"]] = harness.RankResult(data["rank"], data["ok"],
                                                            data.get("value"), data.get("error", ""))
        return result


def run_ok(cluster: VirtualCluster, worker: str, ranks_per_host: Union[int, Sequence[int]],
           args: Any = None, timeout: float = 120.0, env: Optional[Dict[str, str]] = None) -> list:
    """Every rank's value; AssertionError with all output unless every rank succeeded."""
    layout = cluster.layout(ranks_per_host)
    return run(cluster, worker, layout, args, timeout, env).values(sum(layout))


def host_of_rank(layout: Sequence[int]) -> list:
    """Host index of every rank when ranks fill hosts in order (mpirun --map-by slot)."""
    return [host for host, count in enumerate(layout) for _ in range(count)]
