"""Host staging on a real GPU without MPI: torch's streams, events and pinned memory under the
stager, with tests/support/fake_device.py's FakeCore in place of the engine (it reads the pinned
input when the operation is submitted and writes the result when it is waited for). Skipped
where torch sees no GPU."""
from __future__ import annotations

import pytest
import torch

import dist_sync
from dist_sync import _session
from dist_sync.torch import _staging, mpi_ops as ops
from tests.support.fake_device import FakeCore

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


@pytest.fixture
def core(monkeypatch):
    fake = FakeCore()
    monkeypatch.setattr(_session, "_core", fake)
    monkeypatch.setattr(_session, "check_usable", lambda: None)
    return fake


def test_side_streams_are_separate_and_cached():
    backend = _staging.CudaBackend()
    device = torch.device("cuda", torch.cuda.current_device())
    to_host, to_device = backend.side_streams(device)
    assert to_host != to_device
    assert torch.cuda.current_stream(device) not in (to_host, to_device)
    assert backend.side_streams(device) == (to_host, to_device)
    assert backend.allocate_pinned(4096).is_pinned()


def test_pool_waits_for_real_events():
    backend = _staging.CudaBackend()
    pool = _staging.PinnedPool(backend.allocate_pinned)
    block = pool.acquire(1 << 20)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(int(2e8))
    done = backend.event()
    done.record(stream)
    pool.release(block, done)
    assert pool.acquire(1 << 20) is not block  # the stream is still busy
    done.synchronize()
    assert pool.acquire(1 << 20) is block


def test_staged_allreduce_on_cuda_orders_copies_by_events(core):
    x = torch.zeros(1 << 20, device="cuda")
    torch.cuda._sleep(int(2e8))  # the producer below runs only after this
    x.fill_(3)
    marker = torch.cuda.Event()
    marker.record()
    handle = ops.allreduce_async_(x, op=dist_sync.Sum, name="gpu.x")
    returned_early = not marker.query()
    assert dist_sync.synchronize(handle) is x
    submission, = core.submissions
    assert submission["thread"] == "dist_sync-staging"
    assert submission["device"] == _session.DEVICE_CUDA
    assert torch.equal(submission["inputs"][0], torch.full((1 << 20,), 3.0))
    assert torch.equal(x.cpu(), torch.full((1 << 20,), 6.0))  # .cpu() is ordered on the stream
    assert returned_early, "allreduce_async_ waited for the device"


def test_engine_allocated_results_on_cuda(core):
    rows = torch.arange(12, dtype=torch.float32, device="cuda").reshape(4, 3)
    gathered = dist_sync.synchronize(ops.allgather_async(rows, name="gpu.rows"))
    assert gathered.is_cuda and torch.equal(gathered.cpu(), torch.cat([rows, rows]).cpu())
