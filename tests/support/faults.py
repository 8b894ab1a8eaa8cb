"""Fault injection under mpirun. Worker side: each rank records its pid and the /dev/shm files it
maps (record_process). Test side: what a job left behind (processes, /dev/shm segments) and the
per-rank lines dist_sync prints when mpirun ends a rank."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, List

from tests.support.worker import world_rank

# The line a rank writes when mpirun ends it with SIGTERM (Note [Saying why mpirun ended a rank],
# csrc/common/termination_report.cc).
SIGTERM_LINE = re.compile(r"^\[dist_sync rank (\d+)\] terminated by SIGTERM.*$", re.MULTILINE)


# --- worker side -------------------------------------------------------------------------------

def mapped_shm_files() -> List[str]:
    """The /dev/shm files this process maps (MPI's shared-memory segments), unlinked ones
    excluded (those vanish with the last process that maps them)."""
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].startswith("/dev/shm/"):
                path = fields[5].strip()
                if not path.endswith("(deleted)"):
                    paths.add(path)
    return sorted(paths)


def record_process(info_dir: str) -> None:
    """Writes info_dir/process<rank>.json: {"rank", "pid", "shm"}; call it after the first
    collective, when MPI has mapped its segments."""
    rank = world_rank()
    path = os.path.join(info_dir, f"process{rank}.json")
    with open(path + ".tmp", "w") as out:
        json.dump({"rank": rank, "pid": os.getpid(), "shm": mapped_shm_files()}, out)
    os.replace(path + ".tmp", path)


# --- test side ---------------------------------------------------------------------------------

def token() -> str:
    """A string unique to one job, passed on its command line so leftovers can be found."""
    return f"dist-sync-fault-{uuid.uuid4().hex}"


def _plain_environment() -> Dict[str, str]:
    """This environment without a preloaded sanitizer runtime (make sanitize preloads one into
    the test process; a tool like pgrep must not inherit it: it can hang there)."""
    return {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}


def leftover_processes(job_token: str, settle_seconds: float = 10.0) -> List[str]:
    """Processes whose command line still holds `job_token`, after giving them up to
    `settle_seconds` to disappear (mpirun has exited; a straggler would be a leak)."""
    deadline = time.monotonic() + settle_seconds
    while True:
        found = subprocess.run(["pgrep", "-af", job_token], capture_output=True, text=True,
                               env=_plain_environment(), timeout=60)
        lines = [line for line in found.stdout.splitlines() if line.strip()]
        if not lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def process_records(info_dir: Path) -> Dict[int, dict]:
    """rank -> {"pid", "shm"} as written by record_process."""
    records = {}
    for path in info_dir.glob("process*.json"):
        data = json.loads(path.read_text())
        records[data["rank"]] = data
    return records


def leftover_shm(records: Dict[int, dict], settle_seconds: float = 10.0) -> List[str]:
    """The /dev/shm files the job's ranks mapped that still exist (after up to `settle_seconds`
    for mpirun's cleanup to finish)."""
    paths = sorted({path for record in records.values() for path in record["shm"]})
    deadline = time.monotonic() + settle_seconds
    while True:
        left = [path for path in paths if Path(path).exists()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def sigterm_lines(output: str) -> Dict[int, str]:
    """rank -> the SIGTERM report line that rank printed."""
    return {int(match.group(1)): match.group(0) for match in SIGTERM_LINE.finditer(output)}
