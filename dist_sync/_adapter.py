"""What the front end needs to know about a framework's tensors: the array adapter.

Note [Array adapters]
Every collective is built once, framework-neutrally, in dist_sync/_builders.py. What differs
between numpy arrays, torch tensors and TensorFlow tensors — how to check that a value is one,
make a contiguous input, allocate an output, read the engine's result buffer, mark a tensor
written in place, and how its memory reaches the engine (a numpy array's pointer, a torch
tensor's data_ptr(), a CUDA tensor staged through pinned host memory) — is answered by one
adapter object per framework (dist_sync/_numpy.py, dist_sync/torch/_adapter.py). A framework
binding is its adapter plus its own glue (optimizers, autograd, callbacks); it never builds an
engine request itself.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Protocol, Sequence, Tuple

from ._session import Handle, RawResult


class Entry:
    """One tensor of an operation, as a builder hands it to :meth:`ArrayAdapter.submit`.

    ``source``: the contiguous input. ``target``: the tensor the engine's result is written to
    (``source`` itself in place), or None when the engine allocates the result (allgather,
    alltoall, reducescatter; see :meth:`ArrayAdapter.result`). ``copy_in``: False when the engine
    ignores this rank's input (a broadcast's non-root ranks), so staging can skip its copy.
    """

    __slots__ = ("name", "source", "target", "copy_in")

    def __init__(self, name: str, source: Any, target: Any = None, copy_in: bool = True) -> None:
        self.name = name
        self.source = source
        self.target = target
        self.copy_in = copy_in


class ArrayAdapter(Protocol):
    """A framework's tensors as the front end sees them (Note [Array adapters]). ``what`` in
    every method is the user-facing operation name that error messages start with."""

    #: How one of this framework's tensors, and a list of them, are called in messages
    #: ("array" / "numpy arrays", "tensor" / "tensors").
    noun: str
    plural: str

    def check(self, value: Any, what: str) -> Any:
        """``value`` if it is a tensor of this framework that dist_sync accepts; TypeError naming
        ``what`` and what was expected otherwise."""

    def contiguous_input(self, tensor: Any, what: str) -> Any:
        """An input for an out-of-place operation: ``tensor`` itself when its memory is one dense
        block the engine can read, otherwise a contiguous copy."""

    def inplace_target(self, tensor: Any, what: str) -> Any:
        """The memory an in-place operation reads and writes: ``tensor`` (or a view of the same
        memory); ValueError when the result cannot be written there (non-contiguous,
        read-only)."""

    def new_output(self, source: Any) -> Any:
        """A fresh contiguous tensor shaped like ``source`` for an out-of-place result."""

    def shape(self, tensor: Any) -> Tuple[int, ...]:
        """The tensor's shape."""

    def itemsize(self, tensor: Any) -> int:
        """Bytes per element of the tensor's dtype."""

    def as_rows(self, tensor: Any) -> Any:
        """``tensor`` with at least one dimension (a scalar becomes one row)."""

    def int_list(self, values: Any) -> Any:
        """``values`` as a list when it is this framework's integer tensor (TypeError for a
        floating one); anything else unchanged, for the shared checks to judge."""

    def int_tensor(self, values: List[int]) -> Any:
        """Integers as this framework's tensor (alltoall's received splits)."""

    def result(self, raw: RawResult, like: Any) -> Any:
        """The buffer the engine allocated for a result, as a tensor of ``like``'s dtype and
        device with the shape the engine reported."""

    def mark_written(self, tensor: Any) -> None:
        """Tells the framework that ``tensor`` was modified in place."""

    def submit(self, kind: int, name: Optional[str], what: str, entries: Sequence[Entry],
               keepalive: Any, finish: Callable[[RawResult], Any], **options: Any) -> Handle:
        """Hands the operation to the engine (dist_sync._session.submit or, for memory that must be
        staged, dist_sync._session.defer) and returns its handle."""
