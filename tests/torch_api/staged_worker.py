"""Host staging (Note [Host staging]) through the real engine under mpirun, on a simulated
device (tests/support/fake_device.py): CPU tensors claimed by a fake backend take exactly the
path CUDA tensors take (pinned pool, side streams, events, staging thread, device kind CUDA), and
the simulated streams run their copies only when something waits for them.

- The value and training checks of ops_worker.py and training_worker.py run again with every
  tensor staged ("host" user stream: results are read on the host, which waits at synchronize()).
- Checks of their own: a lazy user stream (results appear only once the stream has run), a
  producer still running when the op is called, names fixed at the call, the device kind
  negotiated across ranks, and errors.
"""
import threading
import time

import numpy as np
import torch

import dist_sync
import dist_sync.torch as hvd
from dist_sync import _session
from dist_sync.torch import _staging
from tests.support.fake_device import FakeBackend, FakeDevice
from tests.support.torch_checks import digest, raises, torch_registry
from tests.torch_api import ops_worker, training_worker

check = torch_registry()


class staged:
    """Context: tensors are staged through a new stager over a simulated device."""

    def __init__(self, user_stream: str, claims=None) -> None:
        self.device = FakeDevice(user_stream)
        self.backend = FakeBackend(self.device, claims)
        self.stager = _staging.Stager(self.backend)

    def __enter__(self) -> "staged":
        self.previous = _staging.install(self.stager)
        return self

    def __exit__(self, *exc) -> None:
        _staging.install(self.previous)


def rank_size():
    return hvd.rank(), hvd.size()


# --- the CPU suites again, every tensor staged -----------------------------------------------

REUSED = {
    ops_worker: ["allreduce_every_dtype_op_and_form", "allreduce_prescale_postscale",
                "grouped_allreduce_forms", "allgather_every_dtype",
                "broadcast_every_dtype_and_root", "alltoall_splits_and_even", "reducescatter_ops",
                "autograd_allreduce", "autograd_grouped_allreduce", "autograd_allgather",
                "autograd_broadcast", "autograd_alltoall", "autograd_reducescatter",
                "allreduce_with_compression", "poll_and_synchronize", "join_with_uneven_steps",
                "inplace_results_bump_the_version_counter"],
    training_worker: ["equivalence_sgd_momentum", "equivalence_sgd_two_backward_passes",
                     "equivalence_adam", "equivalence_groups_int",
                     "equivalence_groups_list_and_predivide", "reductions_start_during_backward",
                     "op_sum_and_compression", "unused_parameters_do_not_hang",
                     "synchronize_clip_skip_synchronize", "broadcast_parameters_forms",
                     "average_parameters_module_and_lists",
                     "sync_batch_norm_matches_batchnorm"],
}


def _reuse(fn):
    def run():
        with staged("host") as s:
            value = fn()
        assert s.backend.copies > 0, "nothing was staged"
        return value
    run.__name__ = f"staged_{fn.__name__}"
    return run


for _module, _names in REUSED.items():
    for _name in _names:
        check(_reuse(_module.check.checks[_name]))


# --- lazy streams ----------------------------------------------------------------------------

@check
def results_appear_on_the_users_stream():
    """synchronize() returns before the copy back has run; the user's stream runs it."""
    rank, size = rank_size()
    with staged("lazy") as s:
        x = torch.full((1000,), float(rank + 1))
        handle = hvd.allreduce_async_(x, op=hvd.Sum, name="lazy.x")
        y = torch.arange(7, dtype=torch.float32) * (rank + 1)
        out = hvd.synchronize(hvd.allreduce_async(y, op=hvd.Sum, name="lazy.y"))
        assert hvd.synchronize(handle) is x
        assert torch.equal(x, torch.full((1000,), float(rank + 1))), "copied back too early"
        s.device.user.synchronize()
        total = size * (size + 1) / 2
        assert torch.equal(x, torch.full((1000,), total))
        assert torch.equal(out, torch.arange(7, dtype=torch.float32) * total)
        assert set(s.device.host_waits) == {"dist_sync-staging"}, s.device.host_waits
    return {"digest": digest([x, out])}


@check
def producer_still_running_at_the_call():
    """The tensor is written by work still queued on the user's stream when the op is called."""
    rank, size = rank_size()
    with staged("lazy") as s:
        x = torch.zeros(5000)
        s.device.user.enqueue("producer", lambda: x.fill_(rank + 1))
        handle = hvd.allreduce_async_(x, op=hvd.Sum, name="producer.x")
        hvd.synchronize(handle)
        s.device.user.synchronize()
        assert torch.equal(x, torch.full((5000,), size * (size + 1) / 2))
    return {"digest": digest([x])}


@check
def every_op_on_a_lazy_stream():
    rank, size = rank_size()
    with staged("lazy") as s:
        base = torch.arange(12, dtype=torch.float32).reshape(4, 3)
        mine = base + rank
        handles = {
            "sum": hvd.allreduce_async(mine, op=hvd.Sum),
            "grouped": hvd.grouped_allreduce_async_([mine.clone(), mine[0].clone()], op=hvd.Max),
            "broadcast": hvd.broadcast_async_(mine.clone(), root_rank=size - 1),
            "allgather": hvd.allgather_async(mine[:rank + 1]),
            "alltoall": hvd.alltoall_async(torch.arange(2 * size, dtype=torch.int32) + 10 * rank),
            "reducescatter": hvd.reducescatter_async(mine, op=hvd.Sum),
        }
        got = {key: hvd.synchronize(h) for key, h in handles.items()}
        s.device.user.synchronize()
    ranks = [base + r for r in range(size)]
    assert torch.equal(got["sum"], sum(ranks))
    assert torch.equal(got["grouped"][0], ranks[-1]) and torch.equal(got["grouped"][1],
                                                                      ranks[-1][0])
    assert torch.equal(got["broadcast"], ranks[-1])
    assert torch.equal(got["allgather"], torch.cat([ranks[r][:r + 1] for r in range(size)]))
    received, splits = got["alltoall"]
    assert received.tolist() == [10 * p + 2 * rank + i for p in range(size) for i in range(2)]
    assert splits.tolist() == [2] * size
    rows = dist_sync._builders.reducescatter_rows(4, size)
    start = sum(rows[:rank])
    assert torch.equal(got["reducescatter"], sum(ranks)[start:start + rows[rank]])
    return None


@check
def names_are_fixed_at_the_call():
    """Rank 0's staged op waits for a slow producer, so its CPU op reaches the engine first;
    names given at submission would then differ across ranks (and so would the shapes)."""
    rank, size = rank_size()
    with staged("lazy", claims=lambda t: t.shape == (3,)) as s:
        x = torch.ones(3)
        if rank == 0:
            s.device.user.enqueue("slow producer", lambda: time.sleep(0.3))
        first = hvd.allreduce_async(x, op=hvd.Sum)           # staged, unnamed
        second = hvd.allreduce_async(torch.ones(5), op=hvd.Sum)  # CPU, unnamed
        assert first.name.startswith("allreduce.noname.")
        assert int(second.name.split(".")[-1]) == int(first.name.split(".")[-1]) + 1
        assert hvd.synchronize(second).tolist() == [size] * 5
        out = hvd.synchronize(first)
        s.device.user.synchronize()
        assert out.tolist() == [size] * 3
    return None


# --- the device kind and errors --------------------------------------------------------------

@check
def cpu_on_one_rank_cuda_on_another():
    """Rank 0 passes a CPU tensor, the others a (simulated) CUDA tensor: every rank fails with
    both named, and the engine keeps working."""
    rank, size = rank_size()
    others = "rank 1" if size == 2 else "ranks " + ", ".join(str(r) for r in range(1, size))
    expected = (f"Mismatched allreduce 'mixed': device differs across ranks: cpu on rank 0; "
                f"cuda on {others}")
    with staged("host", claims=lambda t: rank != 0):
        message = raises(dist_sync.DistSyncError, expected,
                         lambda: hvd.allreduce(torch.ones(4), name="mixed"))
    assert hvd.allreduce(torch.ones(4), op=hvd.Sum, name="mixed.after").tolist() == [size] * 4
    # The same through the engine's own submit with an explicit device kind.
    array = np.ones(4)
    device = _session.DEVICE_CPU if rank == 0 else _session.DEVICE_CUDA
    handle = _session.submit(_session.ALLREDUCE, "mixed.raw",
                            [("mixed.raw", array.ctypes.data, array.ctypes.data, 8, [4])],
                            array, lambda raw: array, device=device)
    raw_message = raises(dist_sync.DistSyncError,
                         "Mismatched allreduce 'mixed.raw': device differs across ranks: cpu on "
                         "rank 0; cuda on", lambda: _session.synchronize(handle))
    return {"message": message, "raw": raw_message}


@check
def duplicate_name_fails_at_synchronize():
    """The engine refuses a name already in flight when the staging thread submits; the user
    hears it from synchronize() with the engine's message."""
    rank, size = rank_size()
    last = rank == size - 1
    with staged("host"):
        ones = torch.ones(3)
        if last:  # the others' first op certainly still waits for this rank
            time.sleep(0.5)
            first = hvd.allreduce_async(ones, name="staged.twice")
        else:
            first = hvd.allreduce_async(ones, name="staged.twice")
            second = hvd.allreduce_async(ones, name="staged.twice")
            raises(ValueError, "an operation named 'staged.twice' is already in flight on rank "
                   f"{rank}", lambda: hvd.synchronize(second))
        assert torch.equal(hvd.synchronize(first), ones)
    return None


@check
def one_device_per_operation():
    with staged("host", claims=lambda t: t.numel() == 3):
        raises(ValueError, "grouped_allreduce_: all tensors of one operation must be on the same "
               "device", lambda: hvd.grouped_allreduce_([torch.ones(3), torch.ones(2)]))
    return None


@check
def staging_thread_is_one_per_stager_and_idle_afterwards():
    with staged("host") as s:
        for step in range(3):
            hvd.allreduce(torch.ones(10), name=f"thread.{step}")
    threads = [t for t in threading.enumerate() if t.name == "dist_sync-staging"]
    assert s.stager._thread in threads and s.stager._thread.is_alive()
    return None


@check
def pool_allocates_in_the_first_step_only():
    """DistributedOptimizer over staged gradients: pinned blocks are allocated in the first
    step and reused afterwards."""
    rank, size = rank_size()
    with staged("host") as s:
        model = training_worker.mlp(31).float()
        optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                             named_parameters=model.named_parameters())
        counts = []
        for step in range(4):
            x, y = training_worker.data(step, 4)
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x.float() + rank), y.float()).backward()
            optimizer.step()
            counts.append(len(s.backend.pinned_allocations))
    assert counts[0] > 0 and counts == [counts[0]] * 4, counts
    assert s.stager.pool.stats()["reused"] >= 3 * 4  # four parameters, three later steps
    return {"digest": digest(list(model.parameters()))}


if __name__ == "__main__":
    check.main()
