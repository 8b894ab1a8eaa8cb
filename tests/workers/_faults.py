"""Worker-side helpers of the fault tests (tests/faults.py is the test side): each rank writes
its pid and the /dev/shm files it maps, so the test can check afterwards that no process and no
shared-memory segment of the job was left behind."""
from __future__ import annotations

import json
import os
from typing import List

from _common import world_rank


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
