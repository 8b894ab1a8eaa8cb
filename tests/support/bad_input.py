"""The bad-input tests of the numpy and torch APIs. Worker side: Cases runs misuse that must raise
and keeps its message, proving the engine still works after each. Test side: every rank's
message of a case must hold the expected substrings."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple, Type, Union

from tests.support import harness

NOT_INITIALIZED = ("DistSyncError: dist_sync is not initialized: call dist_sync.init() "
                   "(or hvd.init()) first")
NOT_A_HANDLE = "TypeError: expected a dist_sync handle (returned by an *_async call), got "

# Marks a case that raised the wrong exception type, or none at all.
WRONG = "WRONG:"

Expected = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


class Cases:
    """Runs misuse cases in order; each must raise `expected` (anything else is recorded with
    the WRONG prefix, so one bad case doesn't hide the rest). After each one, `alive()` (a
    correct collective) must still succeed: the engine survived the misuse."""

    def __init__(self, alive: Callable[[], None]) -> None:
        self.alive = alive
        self.messages: Dict[str, str] = {}

    def expect(self, label: str, expected: Expected, fn: Callable[[], Any],
               check_alive: bool = True) -> None:
        assert label not in self.messages, label
        try:
            value = fn()
        except expected as error:
            self.messages[label] = f"{type(error).__name__}: {error}"
        except Exception as error:  # noqa: BLE001 - the test reports it as this case's failure
            self.messages[label] = f"{WRONG} {type(error).__name__}: {error}"
        else:
            self.messages[label] = f"{WRONG} no error raised (got {value!r})"[:500]
        if check_alive:
            self.alive()


# --- test side ---------------------------------------------------------------------------------

def messages(worker: str, np_: int) -> List[Dict[str, str]]:
    """Every rank's case -> message of the worker's misuse scenario (one launch per size)."""
    return harness.launch(worker, np_, "misuse", timeout=180).values()


def check_case(worker: str, np_: int, case: str, expected: Tuple[str, ...]) -> None:
    """Every rank's message of `case` holds each of `expected` ({size}, {size_plus_1}, {last},
    {others}, {ones}: filled in for `np_` ranks)."""
    last = np_ - 1
    others = f"rank 0" if np_ == 2 else "ranks " + ", ".join(str(r) for r in range(last))
    values = dict(size=np_, size_plus_1=np_ + 1, last=last, others=others,
                  ones=", ".join(["1"] * np_))
    for rank, by_case in enumerate(messages(worker, np_)):
        if case == "duplicate_name" and rank == last:
            continue  # the last rank submits late and never reuses the name
        assert case in by_case, f"rank {rank}: case {case} did not run"
        for text in expected:
            assert text.format(**values) in by_case[case], f"rank {rank}: {by_case[case]}"


def check_every_case_is_checked(worker: str, cases: Dict[str, Tuple[str, ...]]) -> None:
    """The worker ran exactly the cases the test has expectations for."""
    ran = set(messages(worker, 2)[0])
    assert ran == set(cases), \
        f"unchecked: {sorted(ran - set(cases))}; missing: {sorted(set(cases) - ran)}"
