"""Misuse that must never crash, hang or return a wrong value (handles dropped without
synchronize, one handle synchronized from several threads, ...). Every check runs on every rank;
results are compared with numpy references."""
import gc
import copy
import os
import threading

import numpy as np
import torch

import dist_sync as ds
import dist_sync.torch as hvd
from tests.support.torch_checks import torch_registry

check = torch_registry()
BIG = 32 << 20  # elements: large enough that the ring is still reading when the handle goes


def _churn() -> float:
    """Allocates and fills memory so that freed buffers are reused (a dangling pointer into
    them would read garbage or crash)."""
    junk = [np.full(BIG // 4, 7.0) for _ in range(4)]
    return float(sum(j[0] for j in junk))


@check
def dropped_handles_keep_their_memory():
    rank, size = ds.rank(), ds.size()
    # Fire and forget, numpy in place and out of place, torch in place and out of place: the
    # only reference to each buffer is the dropped handle.
    ds.allreduce_async_(np.full(BIG, float(rank)), op=ds.Sum, name="dropped.numpy.inplace")
    ds.allreduce_async(np.full(BIG, float(rank)), op=ds.Sum, name="dropped.numpy.copy")
    hvd.allreduce_async_(torch.full((BIG,), float(rank)), op=hvd.Sum, name="dropped.torch.inplace")
    hvd.allreduce_async(torch.full((BIG,), float(rank)), op=hvd.Sum, name="dropped.torch.copy")
    hvd.allgather_async(torch.full((BIG // 8,), float(rank)), name="dropped.torch.allgather")
    gc.collect()
    _churn()
    # Later operations still work and give the right values.
    after = ds.allreduce(np.arange(5, dtype=np.float64) * (rank + 1), op=ds.Sum, name="after")
    expected = np.arange(5, dtype=np.float64) * sum(r + 1 for r in range(size))
    np.testing.assert_array_equal(after, expected)
    ds.barrier()
    return {"after": after.tolist()}


@check
def dropped_handle_with_a_duplicate_name():
    # Horovod's duplicate-name tests: the first handle is dropped, the second call raises. Only
    # rank 0 submits first, so the op cannot complete (and free its name) before the second call.
    rank = ds.rank()
    tensor = torch.ones(17, 17, 17)
    errors = []
    if rank == 0:
        hvd.allreduce_async(tensor, name="duplicate_name")
        try:
            hvd.allreduce_async(tensor, name="duplicate_name")
        except ValueError as error:
            errors.append(str(error))
        else:
            raise AssertionError("a second op named 'duplicate_name' was accepted")
        assert "already in flight" in errors[0], errors
    hvd.barrier()
    if rank != 0:  # the others pair with rank 0's dropped op
        paired = hvd.allreduce(tensor, name="duplicate_name")
        assert torch.equal(paired, tensor), paired
    gc.collect()
    result = hvd.allreduce(torch.full((3,), float(rank)), op=hvd.Sum, name="after.duplicate")
    return {"after": result.tolist()}


@check
def one_handle_synchronized_by_two_threads():
    rank, size = ds.rank(), ds.size()
    outcomes = {}
    for kind in ("allgather", "reducescatter", "numpy_allreduce"):
        if kind == "allgather":
            handle = hvd.allgather_async(torch.full((2, 3), float(rank)), name=f"twice.{kind}")
        elif kind == "reducescatter":
            handle = hvd.reducescatter_async(torch.full((size * 2, 3), float(rank)),
                                             op=hvd.Sum, name=f"twice.{kind}")
        else:
            handle = ds.allreduce_async(np.full(8, float(rank)), op=ds.Sum, name=f"twice.{kind}")
        results, errors = [], []
        start = threading.Barrier(2)

        def wait_for_it() -> None:
            start.wait()
            try:
                results.append(ds.synchronize(handle))
            except ValueError as error:
                errors.append(str(error))
        threads = [threading.Thread(target=wait_for_it) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 1 and len(errors) == 1, (kind, results, errors)
        assert "synchronized once" in errors[0], errors
        value = np.asarray(results[0])
        if kind == "allgather":
            expected = np.repeat(np.arange(size, dtype=np.float32), 2)[:, None] * np.ones(3)
        elif kind == "reducescatter":
            expected = np.full((2, 3), float(sum(range(size))))
        else:
            expected = np.full(8, float(sum(range(size))))
        np.testing.assert_array_equal(value, expected)
        outcomes[kind] = errors[0]
    return outcomes


@check
def object_collectives_after_a_pickling_error():
    # An object that cannot be pickled fails the call on every rank (the root re-raises its own
    # error); the next call pairs the right objects, never the failed call's with the next one's.
    rank, size = ds.rank(), ds.size()
    outcomes = {}
    for api in (ds, hvd):
        try:
            api.broadcast_object(threading.Lock() if rank == 0 else None, root_rank=0)
        except TypeError as error:
            assert rank == 0, error
            outcomes[f"{api.__name__}.broadcast.root"] = str(error)
        except ds.DistSyncError as error:
            assert rank != 0, error
            assert "root rank 0 could not pickle its object (TypeError: cannot pickle" in str(error)
            outcomes[f"{api.__name__}.broadcast.other"] = str(error)
        else:
            raise AssertionError("broadcast_object of an unpicklable object succeeded")
        assert api.broadcast_object({"step": 7} if rank == 0 else None, root_rank=0) == {"step": 7}
        last = size - 1
        try:
            api.allgather_object(threading.Lock() if rank == last else rank)
        except TypeError as error:
            assert rank == last, error
        except ds.DistSyncError as error:
            assert rank != last, error
            assert f"rank {last} could not pickle its object" in str(error), error
        else:
            raise AssertionError("allgather_object of an unpicklable object succeeded")
        assert api.allgather_object(("r", rank)) == [("r", r) for r in range(size)]
    return outcomes


@check
def negative_and_conjugate_views():
    # torch.tensor([1+2j]).conj().imag is [-2.] through the negative bit: its memory holds 2.
    rank, size = ds.rank(), ds.size()
    view = torch.tensor([1 + 2j, 3 + 4j]).conj().imag
    assert view.is_neg()
    summed = hvd.allreduce(view, op=hvd.Sum, name="negative.view")
    np.testing.assert_array_equal(summed.numpy(), [-2.0 * size, -4.0 * size])
    largest = hvd.allreduce(view * (rank + 1) if rank else view, op=hvd.Max, name="negative.max")
    np.testing.assert_array_equal(largest.numpy(), [-2.0, -4.0])
    try:
        hvd.allreduce_(torch.tensor([1 + 2j]).conj().imag, op=hvd.Sum, name="negative.inplace")
    except ValueError as error:
        message = str(error)
    else:
        raise AssertionError("an in-place allreduce into a negative-bit view was accepted")
    assert "allreduce_ works in place but the tensor is a view with torch's negative bit" in message
    return {"inplace": message}


@check
def names_with_nul_or_surrogates_are_refused():
    messages = {}
    for label, name in (("nul", "grad\x00.w"), ("surrogate", "grad.\udc80")):
        for api, tensor in ((ds, np.ones(2)), (hvd, torch.ones(2))):
            try:
                api.allreduce(tensor, name=name)
            except ValueError as error:
                messages[f"{label}.{api.__name__}"] = str(error)
            else:
                raise AssertionError(f"name {name!r} was accepted")
    assert "name must not contain NUL characters" in messages["nul.dist_sync"]
    assert "name must be valid Unicode text" in messages["surrogate.dist_sync.torch"]
    ds.barrier()  # the engine is still fine
    return messages


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))


@check
def optimizer_survives_zero_grad_between_backward_and_step():
    model = _model()
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                         named_parameters=model.named_parameters())
    model(torch.ones(5, 4)).sum().backward()
    model.zero_grad()  # the module's, not the optimizer's: gradients reset while in flight
    try:
        optimizer.step()
    except ds.DistSyncError as error:
        message = str(error)
    else:
        raise AssertionError("step() after model.zero_grad() succeeded silently")
    assert "was replaced or reset (for example by model.zero_grad() or p.grad = None)" in message
    # The optimizer is usable afterwards.
    optimizer.zero_grad()
    model(torch.full((5, 4), float(ds.rank()))).sum().backward()
    optimizer.step()
    return {"message": message}


@check
def optimizer_usable_after_a_failed_step():
    rank, size = ds.rank(), ds.size()
    model = _model()
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                         named_parameters=model.named_parameters())
    # On the last rank one parameter is unused this step and has another shape when step()
    # reduces its zeros: that reduction fails on every rank, the others complete.
    hidden = model[0](torch.ones(5, 4))
    if rank == size - 1:
        (hidden @ model[1].weight.t()).sum().backward()
        saved = model[1].bias.data
        model[1].bias.data = torch.zeros(5)
    else:
        model[1](hidden).sum().backward()
    try:
        optimizer.step()
    except ds.DistSyncError as error:
        first = str(error)
    else:
        raise AssertionError("a step with mismatched gradient shapes succeeded")
    assert ".1.bias': shape differs across ranks: (2,) on" in first, first
    if rank == size - 1:
        model[1].bias.data = saved
    optimizer.zero_grad()
    model(torch.ones(5, 4)).sum().backward()
    optimizer.step()  # no "already in flight": the failed step awaited every reduction
    weight = hvd.allgather(model[0].weight.detach().reshape(1, -1))
    assert all(torch.equal(weight[0], weight[r]) for r in range(size))
    return {"first": first}


@check
def broadcast_optimizer_state_across_optimizer_types():
    rank = ds.rank()
    model = _model()
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if rank == 0 else
                 torch.optim.Adam(model.parameters(), lr=0.01))
    model(torch.ones(5, 4)).sum().backward()
    optimizer.step()
    before = {k: dict(v) if isinstance(v, dict) else v
              for k, v in optimizer.state_dict()["param_groups"][0].items()}
    try:
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    except ds.DistSyncError as error:
        message = str(error)
    else:
        raise AssertionError("optimizer state of SGD was loaded into Adam")
    assert "the optimizers differ across ranks: SGD with" in message, message
    assert "Adam with" in message and "no optimizer was changed" in message
    after = optimizer.state_dict()["param_groups"][0]
    assert {k: after[k] for k in before} == before
    return {"message": message}


class _RefusesFirstLoad(torch.optim.SGD):
    """An SGD whose first load_state_dict fails on rank 1 (a state that loads nowhere else)."""

    def load_state_dict(self, state_dict):
        if ds.rank() == 1 and not getattr(self, "refused", False):
            self.refused = True
            raise RuntimeError("cannot load this state here")
        super().load_state_dict(state_dict)


@check
def broadcast_optimizer_state_is_all_or_nothing():
    """A state that fails to load on one rank is loaded on no rank (rank 2 loaded it: rolled back)."""
    rank = ds.rank()
    model = _model()
    optimizer = _RefusesFirstLoad(model.parameters(), lr=0.1 * (rank + 1), momentum=0.9)
    model(torch.ones(5, 4)).sum().backward()
    optimizer.step()
    before = copy.deepcopy(optimizer.state_dict())
    try:
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    except ds.DistSyncError as error:
        message = str(error)
    else:
        raise AssertionError("a state that failed to load on rank 1 was reported as loaded")
    assert "loading root rank 0's state failed on rank 1 (RuntimeError: cannot load this state " \
           "here); every optimizer keeps its previous state" in message, message
    after = optimizer.state_dict()
    assert after["param_groups"] == before["param_groups"], (rank, after["param_groups"])
    for key, state in before["state"].items():
        assert torch.equal(after["state"][key]["momentum_buffer"], state["momentum_buffer"])
    return {"message": message}


@check
def forked_child_cannot_init():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports and leaves without touching MPI
        try:
            status = f"initialized={ds.is_initialized()};"
            try:
                ds.init()
                status += "init accepted"
            except ds.DistSyncError as error:
                status += str(error)
            # The binding checks by itself too (an at-fork flag), below the Python front end.
            try:
                ds._core.rank()
                status += ";binding accepted"
            except ds.DistSyncError as error:
                status += ";binding: " + str(error)
        except BaseException as error:  # noqa: BLE001
            status = repr(error)
        os.write(write, status.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        status = pipe.read()
    assert status.startswith("initialized=False;"), status
    assert "cannot be used in a process forked after init()" in status, status
    assert ";binding: dist_sync cannot be used in a process forked after init()" in status, status
    return {"child": status}


@check
def memory_already_in_flight_is_refused():
    # Note [Memory in flight]: an in-place result lands at a moment the caller does not see, so a
    # second operation on the same bytes would depend on timing. The last rank submits the two
    # pending operations only after a barrier, so on the other ranks they stay in flight while
    # the conflicting calls are tried.
    rank, size = ds.rank(), ds.size()
    tries = rank < size - 1
    x = np.full(1000, float(rank))
    y = np.ones(64)
    messages = {}

    def start():
        return (ds.allreduce_async_(x, op=ds.Sum, name="inflight.first"),
                ds.allreduce_async(y, op=ds.Sum, name="inflight.reads"))

    def refused(label, call):
        try:
            call()
        except ValueError as error:
            messages[label] = str(error)
        else:
            raise AssertionError(f"{label}: memory in flight was accepted")

    if tries:
        first, reading = start()
        refused("twice_in_place", lambda: ds.allreduce_async_(x, op=ds.Sum, name="inflight.b"))
        refused("read_while_written", lambda: ds.allreduce_async(x, op=ds.Sum, name="inflight.c"))
        refused("overlapping_view", lambda: ds.broadcast_async_(x[500:], 0, name="inflight.d"))
        refused("write_while_read", lambda: ds.allreduce_async_(y, name="inflight.writes"))
    also_reading = ds.allreduce_async(y, op=ds.Sum, name="inflight.reads.too")  # reads: fine
    ds.barrier()
    if not tries:
        first, reading = start()
    np.testing.assert_array_equal(ds.synchronize(first), np.full(1000, float(sum(range(size)))))
    np.testing.assert_array_equal(ds.synchronize(reading), np.full(64, float(size)))
    np.testing.assert_array_equal(ds.synchronize(also_reading), np.full(64, float(size)))
    refused("same_tensor_twice_in_a_group", lambda: ds.grouped_allreduce_([y, y], name="inflight.group"))
    # Once completed, the memory is free again.
    np.testing.assert_array_equal(ds.allreduce_(x, op=ds.Max, name="inflight.again"),
                                  np.full(1000, float(sum(range(size)))))
    assert "writes the same memory through two of its tensors" in \
        messages["same_tensor_twice_in_a_group"], messages
    if tries:
        assert messages["twice_in_place"].startswith("'inflight.b' would write memory that "
                                                     "'inflight.first' is writing on rank"), messages
        assert "(that operation is still in flight): synchronize it first" in \
            messages["twice_in_place"]
        assert messages["read_while_written"].startswith("'inflight.c' would read memory that "
                                                         "'inflight.first' is writing"), messages
        assert "'inflight.first' is writing" in messages["overlapping_view"], messages
        assert messages["write_while_read"].startswith("'inflight.writes' would write memory "
                                                       "that 'inflight.reads' still reads"), messages
    return messages

if __name__ == "__main__":
    check.main()
