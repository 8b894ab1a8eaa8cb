"""What Horovod scripts and Horovod's own tests rely on (tests/torch_api/horovod_compat_worker.py),
under mpirun with 2 and 4 ranks (Adasum needs a power of two), each check reported as a test."""
from __future__ import annotations

from tests.support import harness

WORKER = "tests.torch_api.horovod_compat_worker"


@harness.each_check(WORKER, [2, 4])
def test_check(np_: int, name: str) -> None:
    harness.check_values(harness.launch(WORKER, np_, env=harness.FAIL_FAST), name)


def test_process_set_page_examples() -> None:
    """Horovod's process-set page's three examples on 4 ranks, against its printed lines and a
    numpy average over each set's members."""
    import numpy as np

    values = harness.run_ok(WORKER, 4, "process_set_page_examples", timeout=240,
                            env=harness.FAIL_FAST)
    printed = ["ProcessSet(process_set_id=0, ranks=[0, 1, 2, 3], mpi_comm=None)",
               "ProcessSet(process_set_id=1, ranks=[0, 2], mpi_comm=None)",
               "ProcessSet(process_set_id=2, ranks=[1, 3], mpi_comm=None)"]
    for rank, value in enumerate(values):
        members = [0, 2] if rank % 2 == 0 else [1, 3]
        expected = np.mean([[float(r), 1.0] for r in members], axis=0).tolist()
        assert value["static"] == value["dynamic"] == printed, value
        assert value["comm_ranks"] == [[0, 1, 2, 3], members], value
        for key in ("static_result", "comm_result", "dynamic_result"):
            assert value[key] == expected, (key, value)
