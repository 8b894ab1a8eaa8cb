"""tests/support/harness.py for a virtual cluster: runs a worker's check or scenario on ranks
spread over netns hosts.

Workers are the same as under plain mpirun (multihost_worker.py here, or any other topic's), and
what the ranks record comes back as a harness.MpiRun. The difference is the launch: mpirun starts
on host 0 and reaches the other hosts over TCP through the launcher agent, and only what is
forwarded with ``-x`` reaches the ranks (see netns_agent.sh).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from tests.multihost.netns import VirtualCluster
from tests.support import harness


def run(cluster: VirtualCluster, worker: str, ranks_per_host: Union[int, Sequence[int]],
        name: str, args: Any = None, timeout: float = 120.0,
        env: Optional[Dict[str, str]] = None, mpirun_args: Sequence[str] = ()) -> harness.MpiRun:
    """Runs check or scenario `name` of module `worker` with JSON `args` on `ranks_per_host`
    ranks per host; `env` reaches every rank."""
    layout = cluster.layout(ranks_per_host)
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
        command = cluster.mpirun_command(harness.worker_command(worker, [name], args), layout,
                                         env=rank_env, mpirun_args=mpirun_args)
        returncode, output, timed_out = cluster.run(command, timeout)
        return harness.read_results(Path(out_dir), harness.MpiRun(sum(layout), returncode, output,
                                                                  timed_out, name))


def run_ok(cluster: VirtualCluster, worker: str, ranks_per_host: Union[int, Sequence[int]],
           name: str, args: Any = None, timeout: float = 120.0,
           env: Optional[Dict[str, str]] = None) -> List[Any]:
    """Every rank's value; AssertionError with all output unless every rank succeeded."""
    return run(cluster, worker, ranks_per_host, name, args, timeout, env).values()


def host_of_rank(layout: Sequence[int]) -> list:
    """Host index of every rank when ranks fill hosts in order (mpirun --map-by slot)."""
    return [host for host, count in enumerate(layout) for _ in range(count)]
