"""A simulated GPU and engine core for testing host staging (Note [Host staging]) without a GPU
or MPI.

"Device" tensors are CPU tensors that a :class:`FakeBackend` claims. What makes the simulation
useful is that a :class:`FakeStream` does *not* run the work enqueued on it (copies, the test's
own "kernels") until something waits for it: an event's ``synchronize()``, another stream's
``wait_event`` when that stream runs, or the test's ``stream.synchronize()``. A missing
``wait_event`` or a submission before the copy to host memory has run therefore gives a wrong
result instead of passing by luck, as it could on a real GPU.

The user's stream can be *lazy* (it only runs when waited for, like a busy GPU: the test must
``synchronize()`` it before reading results) or *host* (its work runs at once and waiting for an
event on it waits on the host: the model for code that reads results directly on the CPU, such as
an optimizer step on CPU tensors).

Every host wait is counted per thread, so a test can assert that the user's thread never waited
on the device (only the staging thread may).

:class:`FakeCore` stands in for the engine (``dist_sync._core``) in tests without MPI: it reads
an operation's input memory when the operation is submitted, as the engine may as soon as
negotiation completes, and writes the result when it is waited for.
"""
from __future__ import annotations

import ctypes
import threading
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from dist_sync._session import ALLGATHER
from dist_sync.torch._adapter import TORCH_TO_CODE

_DTYPES = {code: dtype for dtype, code in TORCH_TO_CODE.items()}


class FakeDevice:
    """Streams and events of one simulated device, and the log of what ran, in order."""

    def __init__(self, user_stream: str = "lazy") -> None:
        if user_stream not in ("lazy", "host"):
            raise ValueError(user_stream)
        self.lock = threading.RLock()
        self.user = FakeStream(self, "user", host=user_stream == "host")
        self.to_host = FakeStream(self, "to_host")
        self.to_device = FakeStream(self, "to_device")
        self.log: List[Tuple[str, str]] = []          # (stream, label) in execution order
        self.host_waits: Counter = Counter()          # thread name -> blocking waits
        self.events_created = 0

    def count_wait(self) -> None:
        self.host_waits[threading.current_thread().name] += 1


class FakeStream:
    """A queue of work that runs, in order, only when something waits for it."""

    def __init__(self, device: FakeDevice, name: str, host: bool = False) -> None:
        self.device = device
        self.name = name
        self.host = host
        self._work: List[Tuple[str, Callable[[], None]]] = []
        self.executed = 0   # number of items of _work that have run

    @property
    def enqueued(self) -> int:
        return len(self._work)

    def enqueue(self, label: str, fn: Callable[[], None]) -> None:
        """Adds work (a test's "kernel" or a copy); a host stream runs it at once."""
        with self.device.lock:
            self._work.append((label, fn))
            if self.host:
                self.run_until(len(self._work))

    def run_until(self, position: int) -> None:
        with self.device.lock:
            while self.executed < position:
                label, fn = self._work[self.executed]
                self.executed += 1
                fn()
                self.device.log.append((self.name, label))

    def wait_event(self, event: "FakeEvent") -> None:
        """Later work on this stream runs after ``event``'s work. On the host stream this is a
        host wait (the host is the consumer)."""
        if self.host:
            event.synchronize()
            return
        self.enqueue(f"wait {event.label}", event._complete)

    def synchronize(self) -> None:
        """The test's host wait for everything enqueued so far (not counted)."""
        self.run_until(self.enqueued)


class FakeEvent:
    def __init__(self, device: FakeDevice, label: str) -> None:
        self.device = device
        self.label = label
        self.stream: Optional[FakeStream] = None
        self.position = 0

    def record(self, stream: Optional[FakeStream] = None) -> None:
        with self.device.lock:
            self.stream = stream or self.device.user
            self.position = self.stream.enqueued

    def query(self) -> bool:
        with self.device.lock:
            return self.stream is None or self.stream.executed >= self.position

    def _complete(self) -> None:
        if self.stream is not None:
            self.stream.run_until(self.position)

    def synchronize(self) -> None:
        self.device.count_wait()
        self._complete()


class FakeBackend:
    """dist_sync.torch._staging.DeviceBackend over a FakeDevice; claims every tensor for which
    ``claims`` says so (default: all)."""

    def __init__(self, device: FakeDevice,
                 claims: Optional[Callable[[torch.Tensor], bool]] = None) -> None:
        self.device = device
        self._claims = claims or (lambda tensor: True)
        self.pinned_allocations: List[int] = []
        self.copies = 0

    def claims(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type == "cpu" and self._claims(tensor)

    def current_stream(self, device: torch.device) -> FakeStream:
        return self.device.user

    def side_streams(self, device: torch.device) -> Tuple[FakeStream, FakeStream]:
        return self.device.to_host, self.device.to_device

    def event(self, blocking: bool = False) -> FakeEvent:
        with self.device.lock:
            self.device.events_created += 1
            return FakeEvent(self.device, f"event{self.device.events_created}")

    def copy(self, dst: torch.Tensor, src: torch.Tensor, stream: FakeStream) -> None:
        self.copies += 1
        stream.enqueue(f"copy {tuple(src.shape)} {src.dtype}", lambda: dst.copy_(src))

    def allocate_pinned(self, nbytes: int) -> torch.Tensor:
        self.pinned_allocations.append(nbytes)
        return torch.empty(nbytes, dtype=torch.uint8)


class FakeCore:
    """Stands in for dist_sync._core on one rank of a two-rank job whose other rank holds the
    same values: allreduce Sum doubles. It reads the input memory when the operation is
    submitted and writes the output when it is waited for."""

    def __init__(self) -> None:
        self.submissions: List[Dict[str, Any]] = []
        self.results: Dict[int, Any] = {}
        self.refuse: Dict[str, BaseException] = {}

    def submit(self, kind, name, tensors, reduce_op, prescale, postscale, root, splits, device,
               cacheable, process_set=0):
        if name in self.refuse:
            raise self.refuse[name]
        snapshots = []
        for (_, pointer, output, code, shape) in tensors:
            dtype = _DTYPES[code]
            count = 1
            for extent in shape:
                count *= extent
            nbytes = count * torch.empty((), dtype=dtype).element_size()
            data = bytearray(ctypes.string_at(pointer, nbytes)) if nbytes else bytearray()
            snapshot = (torch.frombuffer(data, dtype=dtype).reshape(shape) if nbytes
                        else torch.empty(shape, dtype=dtype))
            snapshots.append((snapshot, output))
        self.submissions.append({"kind": kind, "name": name, "device": device,
                                 "cacheable": cacheable, "process_set": process_set, "thread": threading.current_thread().name,
                                 "inputs": [s.clone() for s, _ in snapshots]})
        handle = len(self.submissions)
        self.results[handle] = (kind, snapshots)
        return handle

    def poll(self, handle: int) -> bool:
        return True

    def wait(self, handle: int):
        kind, snapshots = self.results.pop(handle)
        if kind == ALLGATHER:  # two ranks with the same rows
            doubled = torch.cat([snapshots[0][0], snapshots[0][0]])
            return (bytearray(doubled.reshape(-1).view(torch.uint8).numpy().tobytes()),
                    list(doubled.shape), [], 0)
        for snapshot, output in snapshots:
            if output:
                result = (snapshot * 2).contiguous()
                ctypes.memmove(output, result.data_ptr(), result.numel() * result.element_size())
        return (None, [], [], 0)
