"""The engine fed by several Python threads at once (threads_worker.py): right
results, handles finished by another thread, shutdown racing submissions — and nothing hangs.
`make sanitize` runs this under ThreadSanitizer as the engine's threading test."""
from __future__ import annotations

import pytest

from tests.support import harness

WORKER = "tests.engine.threads_worker"


@pytest.mark.parametrize("np_", [2, 3])
def test_engine_from_many_threads(np_):
    results = harness.run_ok(WORKER, np_, "many_threads", {"threads": 4, "ops": 60}, timeout=240)
    for out in results:
        assert out["ops"] == 4 * 60
        assert out["racing_failed"] <= 1  # the racing thread stops at its first failure
