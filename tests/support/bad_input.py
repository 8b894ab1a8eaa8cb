"""Shared by the bad-input workers: run a case that must raise, return its message, and prove
the engine still works afterwards."""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple, Type, Union

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
