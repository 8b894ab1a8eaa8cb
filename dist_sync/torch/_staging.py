"""Host staging of CUDA tensors: the engine works on host memory; this module moves device
tensors there and back on side streams, ordered by events, without making the host wait for
the device.

Note [Host staging]
The C++ engine is free of torch and CUDA and reads and writes host memory (any MPI works,
including one that is not CUDA-aware). An operation on CUDA tensors therefore runs in five
steps, none of which blocks the user's thread on the device:

1. At the user's call (an autograd hook of DistributedOptimizer, ``allreduce_async``, ...), on
   the user's thread: record an event ``ready`` on the tensor's current stream (the stream that
   produced it), make this process's device-to-host side stream wait for ``ready``, enqueue a
   non-blocking copy of each tensor into a pinned host block from the pool, and record
   ``copied`` after the copies. The operation's name is fixed here: an unnamed operation is
   numbered in the order of the user's calls, as on the CPU path. The call returns a handle at
   once.
2. The staging thread (one per process, started by the first CUDA operation) takes operations in
   call order, waits for each one's ``copied`` event (the wait releases the GIL, and the event
   is created with blocking sync so the wait sleeps instead of spinning a core), and only then
   submits it to the engine with the pinned blocks as input and output. Submitting earlier would
   be wrong: the engine may read an input as soon as negotiation completes, which can be before
   an asynchronous copy has finished. While the thread waits for a later gradient's copy, the
   engine already reduces the earlier ones.
3. The engine reduces in place in the pinned blocks. The request's device kind is CUDA, so a
   rank that passes a CPU tensor where another passes a CUDA tensor fails in negotiation on
   every rank with both named ("device differs across ranks: cpu on rank 0; cuda on rank 1").
4. ``synchronize()`` waits for the engine (GIL released), then enqueues the host-to-device
   copies on the host-to-device side stream, which first waits for ``ready`` (an out-of-place
   result was allocated on the user's stream, whose earlier work may still use that memory),
   records ``done`` and makes the *current* stream wait for ``done``. It returns without waiting
   for the copy: whatever the user enqueues afterwards on the current stream runs after it.
   Another stream must wait for it as for any CUDA result (``wait_stream``), and host code reads
   the result through ``.cpu()``/``.item()``, which are ordered on the current stream.
5. Pinned blocks go back to the pool together with ``done`` and are handed out again only once
   ``done.query()`` reports that the copy out of them has finished (no host wait). Blocks are
   pooled by power-of-two size class, so a training loop allocates pinned memory in its first
   step and reuses it afterwards.

Results the engine allocates itself (allgather, alltoall, reducescatter: their size is known only
after negotiation) are copied by the host from the engine's buffer into a pooled pinned block and
then to a new device tensor as in step 4. Two side streams per device, one per copy direction,
let the copy of a later input to the host overlap the copy of an earlier result to the device.
Nothing here synchronizes the device; the only host waits on the device are the staging
thread's waits in step 2. Why the CUDA calls live here, in Python, and not in the engine:
docs/architecture.md, "CUDA tensors".

Everything the stager needs from CUDA goes through a :class:`DeviceBackend`, so tests can drive
the same code with a simulated device whose streams run their work only when something waits
for it (tests/support/fake_device.py): a missing wait then shows up as a wrong result.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import (Any, Callable, Deque, Dict, List, Optional, Protocol,
                    Sequence, Tuple)

import torch

from .. import _session
from .._adapter import Entry
from .._session import DEVICE_CUDA, DistSyncError, Handle, RawResult

# Smallest pooled block: one page. Smaller tensors (biases) share nothing; a page each is cheap.
MIN_BLOCK_BYTES = 4096


# --- what the stager needs from a device -----------------------------------------------------

class Stream(Protocol):
    """A device stream (``torch.cuda.Stream`` or a test's simulation)."""

    def wait_event(self, event: "Event") -> None:
        """Work enqueued on this stream from now on starts after ``event`` has completed."""


class Event(Protocol):
    """A device event (``torch.cuda.Event`` or a test's simulation)."""

    def record(self, stream: Any = None) -> None:
        """Marks the point reached by the work enqueued on ``stream`` so far."""

    def query(self) -> bool:
        """True if the work before the recorded point has finished (never blocks)."""

    def synchronize(self) -> None:
        """Blocks the calling host thread until that work has finished."""


class DeviceBackend(Protocol):
    """The device operations host staging uses (Note [Host staging])."""

    def claims(self, tensor: torch.Tensor) -> bool:
        """True if ``tensor`` lives on this backend's device and must be staged."""

    def current_stream(self, device: torch.device) -> Stream:
        """The stream the user's work on ``device`` is enqueued on right now."""

    def side_streams(self, device: torch.device) -> Tuple[Stream, Stream]:
        """This process's (device-to-host, host-to-device) copy streams for ``device``."""

    def event(self, blocking: bool = False) -> Event:
        """A new event; ``blocking``: its ``synchronize()`` sleeps instead of spinning."""

    def copy(self, dst: torch.Tensor, src: torch.Tensor, stream: Stream) -> None:
        """Enqueues ``dst.copy_(src)`` on ``stream`` without waiting for it."""

    def allocate_pinned(self, nbytes: int) -> torch.Tensor:
        """A uint8 host tensor of ``nbytes`` in page-locked memory (fast, asynchronous DMA)."""


class CudaBackend:
    """:class:`DeviceBackend` over ``torch.cuda``: torch's streams, events and pinned memory."""

    def __init__(self) -> None:
        self._streams: Dict[int, Tuple[torch.cuda.Stream, torch.cuda.Stream]] = {}
        self._lock = threading.Lock()

    def claims(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type == "cuda"

    def current_stream(self, device: torch.device) -> torch.cuda.Stream:
        return torch.cuda.current_stream(device)

    def side_streams(self, device: torch.device) -> Tuple[torch.cuda.Stream, torch.cuda.Stream]:
        index = device.index if device.index is not None else torch.cuda.current_device()
        streams = self._streams.get(index)
        if streams is None:
            with self._lock:
                streams = self._streams.get(index)
                if streams is None:
                    streams = (torch.cuda.Stream(device=index), torch.cuda.Stream(device=index))
                    self._streams[index] = streams
        return streams

    def event(self, blocking: bool = False) -> torch.cuda.Event:
        return torch.cuda.Event(blocking=blocking)

    def copy(self, dst: torch.Tensor, src: torch.Tensor, stream: torch.cuda.Stream) -> None:
        with torch.cuda.stream(stream):
            dst.copy_(src, non_blocking=True)
        if dst.is_cuda:
            # dst was allocated on the user's stream; if the user frees it (after waiting on
            # another stream than that one), the caching allocator must not hand its memory out
            # again before this copy has finished. (A source is kept alive by the operation
            # until its copy has finished: the staging thread waits for it.)
            dst.record_stream(stream)

    def allocate_pinned(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)


# --- the pinned staging pool -----------------------------------------------------------------

def size_class(nbytes: int) -> int:
    """Capacity of the pooled block that holds ``nbytes``: the next power of two, at least
    :data:`MIN_BLOCK_BYTES`. Power-of-two classes waste at most half a block and keep the number
    of classes small (a training loop's gradients fall into a handful)."""
    if nbytes < 0:
        raise ValueError(f"size_class: negative byte count {nbytes}")
    if nbytes <= MIN_BLOCK_BYTES:
        return MIN_BLOCK_BYTES
    return 1 << (nbytes - 1).bit_length()


class PinnedBlock:
    """One pooled pinned host buffer of ``capacity`` bytes."""

    __slots__ = ("storage", "capacity")

    def __init__(self, storage: torch.Tensor, capacity: int) -> None:
        self.storage = storage
        self.capacity = capacity

    def view(self, dtype: torch.dtype, shape: Sequence[int]) -> torch.Tensor:
        """The block's first bytes as a contiguous tensor of ``dtype`` and ``shape``."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self.capacity:
            raise ValueError(f"a {self.capacity}-byte pinned block cannot hold {nbytes} bytes")
        return self.storage[:nbytes].view(dtype).view(list(shape))


class PinnedPool:
    """Pinned host blocks by size class, reused once the device is done with them.

    :meth:`release` returns a block together with the event after which nothing on the device
    touches it any more (``None``: nothing pending); :meth:`acquire` hands out a free block of
    the right class whose event has completed (``Event.query()``, no host wait), and allocates a
    new block only if there is none. Thread-safe (autograd hooks run on autograd's threads).
    """

    def __init__(self, allocate: Callable[[int], torch.Tensor]) -> None:
        self._allocate = allocate
        self._free: Dict[int, Deque[Tuple[PinnedBlock, Optional[Event]]]] = {}
        self._lock = threading.Lock()
        self.allocated_blocks = 0
        self.allocated_bytes = 0
        self.reused = 0

    def acquire(self, nbytes: int) -> PinnedBlock:
        """A block of at least ``nbytes`` that nothing else uses."""
        capacity = size_class(nbytes)
        with self._lock:
            free = self._free.get(capacity)
            if free:
                for index, (block, after) in enumerate(free):
                    if after is None or after.query():
                        del free[index]
                        self.reused += 1
                        return block
        storage = self._allocate(capacity)  # outside the lock: pinning memory is slow
        if storage.dtype != torch.uint8 or storage.numel() != capacity:
            raise DistSyncError(f"internal error: the pinned allocator returned {storage.numel()} "
                                f"elements of {storage.dtype} for {capacity} bytes")
        with self._lock:
            self.allocated_blocks += 1
            self.allocated_bytes += capacity
        return PinnedBlock(storage, capacity)

    def release(self, block: PinnedBlock, after: Optional[Event] = None) -> None:
        """Returns ``block``; it is handed out again once ``after`` (if any) has completed."""
        with self._lock:
            self._free.setdefault(block.capacity, deque()).append((block, after))

    def free_blocks(self) -> int:
        """Blocks in the pool (completed or not)."""
        with self._lock:
            return sum(len(free) for free in self._free.values())

    def stats(self) -> Dict[str, int]:
        """Counters for tests and benchmarks: blocks and bytes ever allocated, reuses, free
        blocks."""
        with self._lock:
            free = sum(len(f) for f in self._free.values())
            return {"allocated_blocks": self.allocated_blocks,
                    "allocated_bytes": self.allocated_bytes, "reused": self.reused,
                    "free_blocks": free}


# --- the stager ------------------------------------------------------------------------------

@dataclass
class _Staged:
    """One tensor of a staged operation: its pinned host copy and where the result goes."""
    target: Optional[torch.Tensor]
    block: Optional[PinnedBlock]
    host: Optional[torch.Tensor]


@dataclass
class _Job:
    """An operation waiting in the staging thread's queue for its copy to host memory."""
    copied: Event
    deferred: _session.Deferred
    specs: List[Tuple[str, int, int, int, List[int]]]
    inputs: Any  # the device tensors being copied: alive until the copy has finished


class Stager:
    """Host staging over one :class:`DeviceBackend` (Note [Host staging]): the pinned pool, the
    side streams (through the backend) and the staging thread."""

    def __init__(self, backend: DeviceBackend) -> None:
        self.backend = backend
        self.pool = PinnedPool(backend.allocate_pinned)
        self._jobs: "queue.SimpleQueue[_Job]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._thread_pid: Optional[int] = None
        self._thread_lock = threading.Lock()

    # step 1: at the user's call
    def submit(self, kind: int, name: Optional[str], entries: Sequence[Entry],
               codes: Sequence[int], keepalive: Any, finish: Callable[[RawResult], Any],
               **options: Any) -> Handle:
        """Starts the copies of ``entries`` to pinned host memory and returns the operation's
        handle at once; the staging thread submits it to the engine when the copies are done."""
        _session.check_usable()  # user errors first, before any copy is enqueued
        _session.check_name(name)
        backend = self.backend
        device = entries[0].source.device
        to_host, _ = backend.side_streams(device)
        ready = backend.event()
        ready.record(backend.current_stream(device))
        to_host.wait_event(ready)
        staged: List[_Staged] = []
        specs = []
        for entry, code in zip(entries, codes):
            source = entry.source
            shape = list(source.shape)
            nbytes = source.numel() * source.element_size()
            if nbytes == 0:  # nothing to copy; the engine takes a null pointer for empty tensors
                staged.append(_Staged(entry.target, None, None))
                specs.append((entry.name, 0, 0, code, shape))
                continue
            block = self.pool.acquire(nbytes)
            host = block.view(source.dtype, shape)
            if entry.copy_in:
                backend.copy(host, source, to_host)
            # The result is copied back with a torch op: into a detached alias, which autograd
            # and inference mode allow for any target (a leaf that requires grad included).
            target = entry.target.detach() if entry.target is not None else None
            staged.append(_Staged(target, block, host))
            pointer = host.data_ptr()
            specs.append((entry.name, pointer, pointer if entry.target is not None else 0, code,
                          shape))
        copied = backend.event(blocking=True)
        copied.record(to_host)

        def complete(raw: RawResult) -> Any:
            self._copy_back(device, ready, staged)
            return finish(raw)
        handle, deferred = _session.defer(kind, name, keepalive, complete, device=DEVICE_CUDA,
                                         **options)
        self._ensure_thread()
        self._jobs.put(_Job(copied, deferred, specs, [e.source for e in entries]))
        return handle

    # step 2: the staging thread
    def _ensure_thread(self) -> None:
        pid = os.getpid()
        if self._thread is not None and self._thread_pid == pid:
            return
        with self._thread_lock:
            if self._thread is None or self._thread_pid != pid:
                thread = threading.Thread(target=self._run, name="dist_sync-staging",
                                          daemon=True)
                thread.start()
                self._thread, self._thread_pid = thread, pid

    def _run(self) -> None:
        while True:
            job = self._jobs.get()  # sleeps without the GIL while there is nothing to stage
            try:
                job.copied.synchronize()
            except BaseException as error:  # noqa: BLE001 - the user's synchronize() raises it
                job.deferred.fail(DistSyncError(
                    f"copying the tensors of '{job.specs[0][0] if job.specs else '?'}' to host "
                    f"memory failed: {type(error).__name__}: {error}"))
                continue
            job.inputs = None  # copied: the device tensors may go
            job.deferred.submit(job.specs)

    # step 4: in synchronize(), after the engine
    def _copy_back(self, device: torch.device, ready: Event, staged: Sequence[_Staged]) -> None:
        backend = self.backend
        back = [s for s in staged if s.target is not None and s.block is not None]
        done: Optional[Event] = None
        if back:
            _, to_device = backend.side_streams(device)
            to_device.wait_event(ready)
            for s in back:
                backend.copy(s.target, s.host, to_device)
            done = backend.event()
            done.record(to_device)
            backend.current_stream(device).wait_event(done)
        for s in staged:
            if s.block is not None:
                # Blocks without a copy back (allgather's input) are free now: their copy in
                # finished before submission, and the engine is done with them.
                self.pool.release(s.block, done if s.target is not None else None)

    def to_device(self, result: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A new tensor on ``device`` holding ``result`` (host memory the engine allocated),
        ordered on the current stream like step 4 of Note [Host staging]."""
        backend = self.backend
        user = backend.current_stream(device)
        out = torch.empty(result.shape, dtype=result.dtype, device=device)
        nbytes = result.numel() * result.element_size()
        if nbytes == 0:
            return out
        ready = backend.event()
        ready.record(user)  # after the allocation: earlier work on that memory comes first
        _, to_device = backend.side_streams(device)
        to_device.wait_event(ready)
        block = self.pool.acquire(nbytes)
        host = block.view(result.dtype, list(result.shape))
        host.copy_(result)  # host memcpy: a pageable source would make the copy below blocking
        backend.copy(out, host, to_device)
        done = backend.event()
        done.record(to_device)
        user.wait_event(done)
        self.pool.release(block, done)
        return out


# --- which stager a tensor uses --------------------------------------------------------------

_cuda_stager: Optional[Stager] = None
_installed: Optional[Stager] = None  # a test's stager over a simulated device
_registry_lock = threading.Lock()


def cuda_stager() -> Stager:
    """The process's stager for CUDA tensors (created on first use)."""
    global _cuda_stager
    if _cuda_stager is None:
        with _registry_lock:
            if _cuda_stager is None:
                _cuda_stager = Stager(CudaBackend())
    return _cuda_stager


def stager_for(tensor: torch.Tensor) -> Optional[Stager]:
    """The stager of a tensor whose device the caller has checked; None: hand it to the engine
    directly (CPU tensors; this is the whole cost host staging adds to the CPU path)."""
    if _installed is not None and _installed.backend.claims(tensor):
        return _installed
    if tensor.is_cuda:
        return cuda_stager()
    return None


def install(stager: Optional[Stager]) -> Optional[Stager]:
    """Routes the tensors ``stager.backend`` claims through ``stager`` (None: stop); returns
    the previous one. For tests that simulate a device with CPU tensors."""
    global _installed
    previous, _installed = _installed, stager
    return previous


def pool_stats() -> Dict[str, int]:
    """The CUDA staging pool's counters (zeros before the first CUDA operation)."""
    if _cuda_stager is None:
        return {"allocated_blocks": 0, "allocated_bytes": 0, "reused": 0, "free_blocks": 0}
    return _cuda_stager.pool.stats()
