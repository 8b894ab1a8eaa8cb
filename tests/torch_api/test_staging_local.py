"""Host staging of CUDA tensors (Note [Host staging]) without a GPU and without MPI.

The stager runs over tests/support/fake_device.py's simulated device (whose streams run their
work only when something waits for it) and a fake engine core that reads an operation's input
memory at submission, as the real engine may at negotiation, and writes the result when it is
waited for: a submission before the copy to host memory has run, or a result read before the
copy back, gives wrong numbers. The fakes are injected through the stager and pytest's monkeypatch of dist_sync's
own module attributes; nothing of torch is patched.
"""
from __future__ import annotations

import threading
import types
from typing import List

import pytest
import torch

import dist_sync
from dist_sync import _session
from dist_sync.torch import _adapter, _staging, mpi_ops as ops
from tests.support.fake_device import FakeBackend, FakeCore, FakeDevice, FakeEvent, FakeStream


# --- the pool --------------------------------------------------------------------------------

@pytest.mark.parametrize("nbytes,capacity", [(0, 4096), (1, 4096), (4096, 4096), (4097, 8192),
                                             (65536, 65536), (65537, 131072),
                                             (64 << 20, 64 << 20), ((64 << 20) + 1, 128 << 20)])
def test_size_classes(nbytes, capacity):
    assert _staging.size_class(nbytes) == capacity


def test_size_class_rejects_negative():
    with pytest.raises(ValueError, match="size_class: negative byte count -1"):
        _staging.size_class(-1)


def test_block_views():
    block = _staging.PinnedBlock(torch.zeros(8192, dtype=torch.uint8), 8192)
    view = block.view(torch.float32, [3, 5])
    assert view.shape == (3, 5) and view.dtype == torch.float32 and view.is_contiguous()
    assert view.data_ptr() == block.storage.data_ptr()
    view.fill_(1.5)
    assert torch.equal(block.storage[:60].view(torch.float32), torch.full((15,), 1.5))
    assert block.view(torch.bfloat16, []).shape == ()
    with pytest.raises(ValueError, match="a 8192-byte pinned block cannot hold 8200 bytes"):
        block.view(torch.float64, [1025])


def pending_event(device: FakeDevice, stream: FakeStream) -> FakeEvent:
    """An event after one not yet executed item of work on ``stream``."""
    stream.enqueue("kernel", lambda: None)
    event = FakeEvent(device, "release")
    event.record(stream)
    return event


def test_pool_reuses_a_block_only_after_its_event():
    device = FakeDevice()
    allocations: List[int] = []
    pool = _staging.PinnedPool(lambda n: allocations.append(n) or torch.empty(n, dtype=torch.uint8))
    first = pool.acquire(5000)
    assert first.capacity == 8192 and allocations == [8192]
    after = pending_event(device, device.to_device)
    pool.release(first, after)
    second = pool.acquire(6000)  # same class, but the copy out of `first` has not run
    assert second is not first and allocations == [8192, 8192]
    device.to_device.synchronize()
    assert pool.acquire(8000) is first  # now it may be reused
    assert pool.stats() == {"allocated_blocks": 2, "allocated_bytes": 16384, "reused": 1,
                            "free_blocks": 0}


def test_pool_keeps_size_classes_apart_and_releases_without_event():
    pool = _staging.PinnedPool(lambda n: torch.empty(n, dtype=torch.uint8))
    small, large = pool.acquire(100), pool.acquire(100_000)
    pool.release(small)
    pool.release(large)
    assert pool.free_blocks() == 2
    assert pool.acquire(200_000) is not large  # a larger class
    assert pool.acquire(70_000) is large
    assert pool.acquire(10) is small
    assert pool.stats()["reused"] == 2


def test_pool_checks_the_allocator():
    pool = _staging.PinnedPool(lambda n: torch.empty(n // 4, dtype=torch.float32))
    with pytest.raises(dist_sync.DistSyncError, match="the pinned allocator returned 1024 "
                                                      "elements of torch.float32 for 4096 bytes"):
        pool.acquire(10)


def test_pool_is_thread_safe():
    pool = _staging.PinnedPool(lambda n: torch.empty(n, dtype=torch.uint8))

    def churn() -> None:
        for _ in range(300):
            block = pool.acquire(5000)
            pool.release(block)
    threads = [threading.Thread(target=churn) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = pool.stats()
    assert stats["allocated_blocks"] + stats["reused"] == 1200
    assert stats["free_blocks"] == stats["allocated_blocks"] <= 4


# --- the fake device itself ------------------------------------------------------------------

def test_fake_streams_run_only_when_waited_for():
    device = FakeDevice()
    x = torch.zeros(2)
    device.user.enqueue("fill", lambda: x.fill_(3))
    ready = FakeEvent(device, "ready")
    ready.record(device.user)
    device.to_host.wait_event(ready)
    y = torch.zeros(2)
    device.to_host.enqueue("copy", lambda: y.copy_(x))
    copied = FakeEvent(device, "copied")
    copied.record(device.to_host)
    assert not copied.query() and x.sum() == 0
    copied.synchronize()
    assert y.tolist() == [3.0, 3.0] and copied.query()
    assert device.log == [("user", "fill"), ("to_host", "wait ready"), ("to_host", "copy")]


# --- the stager against a fake engine --------------------------------------------------------

@pytest.fixture
def staged(monkeypatch):
    """A lazy simulated device claiming every CPU tensor, a stager over it, and a fake core."""
    core = FakeCore()
    monkeypatch.setattr(_session, "_core", core)
    monkeypatch.setattr(_session, "check_usable", lambda: None)
    monkeypatch.setattr(_session, "_name_counters", {})
    device = FakeDevice("lazy")
    backend = FakeBackend(device)
    stager = _staging.Stager(backend)
    previous = _staging.install(stager)
    yield types.SimpleNamespace(core=core, device=device, backend=backend, stager=stager)
    _staging.install(previous)


def test_copy_waits_for_the_producer_and_submission_waits_for_the_copy(staged):
    x = torch.zeros(1000)
    staged.device.user.enqueue("producer", lambda: x.fill_(3))  # still "running" on the GPU
    handle = ops.allreduce_async_(x, op=dist_sync.Sum, name="grad.w")
    result = dist_sync.synchronize(handle)
    assert result is x
    submission, = staged.core.submissions
    assert submission["thread"] == "dist_sync-staging"
    assert submission["device"] == _session.DEVICE_CUDA and submission["cacheable"]
    assert torch.equal(submission["inputs"][0], torch.full((1000,), 3.0)), \
        "the engine saw the tensor before the producer ran or before the copy to host"
    # synchronize() returned without running the copy back: the user's stream waits for it.
    assert torch.equal(x, torch.full((1000,), 3.0))
    staged.device.user.synchronize()
    assert torch.equal(x, torch.full((1000,), 6.0))
    order = [label for _, label in staged.device.log]
    assert order.index("producer") < order.index("copy (1000,) torch.float32")
    # The user's thread never waited on the device; only the staging thread did.
    assert set(staged.device.host_waits) == {"dist_sync-staging"}


def test_out_of_place_results_and_groups(staged):
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    b = torch.arange(4, dtype=torch.int32)
    out = dist_sync.synchronize(ops.allreduce_async(a.t(), op=dist_sync.Sum))  # strided input
    grouped = dist_sync.synchronize(ops.grouped_allreduce_async([a, b], op=dist_sync.Sum))
    staged.device.user.synchronize()
    assert torch.equal(out, 2 * a.t()) and out.is_contiguous()
    assert torch.equal(grouped[0], 2 * a) and torch.equal(grouped[1], 2 * b)
    assert torch.equal(a, torch.arange(6, dtype=torch.float32).reshape(2, 3))  # input untouched
    assert [len(s["inputs"]) for s in staged.core.submissions] == [1, 2]


def test_engine_allocated_results_come_back_to_the_device(staged):
    rows = torch.arange(6, dtype=torch.bfloat16).reshape(3, 2)
    gathered = dist_sync.synchronize(ops.allgather_async(rows, name="rows"))
    assert gathered.shape == (6, 2)
    staged.device.user.synchronize()
    assert torch.equal(gathered, torch.cat([rows, rows]))
    # The input's block is free as soon as the engine is done (no copy back), so the result's
    # copy reuses it.
    assert staged.stager.pool.stats() == {"allocated_blocks": 1, "allocated_bytes": 4096,
                                          "reused": 1, "free_blocks": 1}


def test_names_are_fixed_at_the_call_in_call_order(staged):
    x = torch.ones(3)
    staged.device.user.enqueue("slow producer", lambda: x.fill_(2))
    handles = [ops.allreduce_async(x) for _ in range(3)]
    assert [h.name for h in handles] == [f"allreduce.noname.{i}" for i in range(3)]
    for handle in handles:
        dist_sync.synchronize(handle)
    assert [s["name"] for s in staged.core.submissions] == [h.name for h in handles]
    assert not any(s["cacheable"] for s in staged.core.submissions)


def test_pinned_blocks_are_reused_across_steps(staged):
    grads = [torch.randn(n) for n in (10, 1000, 5000, 70_000)]
    for step in range(4):
        handles = [ops.allreduce_async_(g, name=f"g{i}") for i, g in enumerate(grads)]
        for handle in handles:
            dist_sync.synchronize(handle)
        staged.device.user.synchronize()  # the next step's gradients come after this one's
        if step == 0:
            first = list(staged.backend.pinned_allocations)
    assert staged.backend.pinned_allocations == first == [4096, 4096, 32768, 524288]
    assert staged.stager.pool.stats()["reused"] == 12


def test_poll_is_false_until_submitted(staged):
    x = torch.ones(4)
    gate = threading.Event()
    staged.device.user.enqueue("blocked producer", gate.wait)
    handle = ops.allreduce_async_(x, name="gated")
    assert not dist_sync.poll(handle)
    gate.set()
    while not dist_sync.poll(handle):
        pass
    dist_sync.synchronize(handle)


def test_submission_errors_are_raised_by_synchronize(staged):
    staged.core.refuse["busy"] = ValueError("an operation named 'busy' is already in flight on "
                                            "rank 0; names must be unique")
    handle = ops.allreduce_async(torch.ones(2), name="busy")
    while not dist_sync.poll(handle):  # failed submissions poll True: synchronize won't block
        pass
    with pytest.raises(ValueError, match="an operation named 'busy' is already in flight"):
        dist_sync.synchronize(handle)
    # The stager goes on with the next operation.
    assert dist_sync.synchronize(ops.allreduce_async(torch.ones(2), name="next")) is not None


def test_copy_failures_are_raised_by_synchronize(staged, monkeypatch):
    class BrokenEvent(FakeEvent):
        def synchronize(self) -> None:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(staged.backend, "event",
                        lambda blocking=False: BrokenEvent(staged.device, "broken"))
    handle = ops.allreduce_async(torch.ones(2), name="w")
    with pytest.raises(dist_sync.DistSyncError,
                       match="copying the tensors of 'w' to host memory failed: RuntimeError: "
                             "CUDA error: an illegal memory access"):
        dist_sync.synchronize(handle)


def test_one_device_per_operation(staged):
    on_device = torch.ones(3)
    staged.stager.backend._claims = lambda t: t.data_ptr() == on_device.data_ptr()
    with pytest.raises(ValueError, match="grouped_allreduce: all tensors of one operation must "
                                         "be on the same device"):
        ops.grouped_allreduce_async([on_device, torch.ones(2)])
    with pytest.raises(ValueError, match="all tensors of one operation must be on the same"):
        ops.grouped_allreduce_async([torch.ones(2), on_device])


def test_cpu_tensors_bypass_staging(monkeypatch):
    core = FakeCore()
    monkeypatch.setattr(_session, "_core", core)
    monkeypatch.setattr(_session, "check_usable", lambda: None)
    x = torch.ones(3)
    assert _staging.stager_for(x) is None
    dist_sync.synchronize(ops.allreduce_async_(x, op=dist_sync.Sum, name="cpu"))
    submission, = core.submissions
    assert submission["device"] == _session.DEVICE_CPU and submission["thread"] == "MainThread"
    assert torch.equal(x, torch.full((3,), 2.0))


# --- device checks ---------------------------------------------------------------------------

def test_cuda_tensors_without_cuda_are_refused_clearly(monkeypatch):
    monkeypatch.setattr(_adapter.torch.cuda, "is_available", lambda: False)
    fake = types.SimpleNamespace(device=torch.device("cuda", 0), is_cpu=False)
    with pytest.raises(dist_sync.DistSyncError,
                       match=r"allreduce: got a tensor on cuda:0, but CUDA is not available to "
                             r"torch in this process \(torch.cuda.is_available\(\) is False"):
        _adapter.check_device(fake, "allreduce")


def test_other_devices_are_refused():
    with pytest.raises(dist_sync.DistSyncError,
                       match="broadcast: tensors on device meta are not supported; dist_sync "
                             "works on CPU and CUDA tensors"):
        ops.broadcast_async(torch.empty(3, device="meta"), 0)
