"""Behaviour that Horovod scripts and Horovod's own test_torch.py rely on, under mpirun, against
numpy float64 references: the exception types Horovod's callers catch, what
broadcast_optimizer_state leaves behind, the gradient convention of every differentiable
collective (docs/torch.md, "Gradients of collectives"), and the calls of Horovod's Adasum user
guide as written there (``hvd.AdaSum``)."""
import contextlib
import io
import warnings

import numpy as np
import torch

import dist_sync.torch as hvd
from tests.collectives.test_adasum_local import adasum_tree
from tests.support.torch_checks import raises, torch_registry

check = torch_registry()


def rank_rows(rank, rows, cols, salt):
    """Rank `rank`'s float64 input, regenerable on every rank."""
    rng = np.random.default_rng([salt, rank, rows, cols])
    return rng.uniform(-1.0, 1.0, (rows, cols))


def assert_close(got, expected, what, tol=1e-12):
    got = got.detach().double().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=tol, atol=tol):
        raise AssertionError(f"{what}: got {got.ravel()[:6]}, expected {expected.ravel()[:6]}")


# --- errors, with the exception types Horovod's callers catch -----------------------------------

@check
def error_types_horovod_callers_catch():
    size = hvd.size()
    # alltoall: splits summing past the first dimension, non-integer splits, a first dimension
    # that the ranks do not divide evenly: ValueError (Horovod's tests accept ValueError).
    raises(ValueError, "sum to", lambda: hvd.alltoall(torch.empty(size - 1),
                                                       torch.ones(size, dtype=torch.int32)))
    for kind in (TypeError, ValueError):  # Horovod's callers catch ValueError
        raises(kind, "splits must hold integers",
               lambda: hvd.alltoall(torch.empty(size), torch.empty(size, dtype=torch.float32)))
    raises(ValueError, "", lambda: hvd.alltoall(torch.empty(size + 1)))
    # reducescatter of a scalar: ValueError at the call.
    raises(ValueError, "at least one dimension",
           lambda: hvd.reducescatter(torch.tensor(float(hvd.rank())), op=hvd.Average))
    raises(ValueError, "at least one dimension",
           lambda: hvd.grouped_reducescatter([torch.tensor(1.0)], op=hvd.Average))
    # Duplicate parameter names in DistributedOptimizer: ValueError naming them.
    nets = [torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]
    params = [p for net in nets for p in net.parameters()]
    named = [item for net in nets for item in net.named_parameters()]
    raises(ValueError, "weight", lambda: hvd.DistributedOptimizer(
        torch.optim.SGD(params, lr=0.1), named_parameters=named))


# --- broadcast_optimizer_state ---------------------------------------------------------------

@check
def broadcast_optimizer_state_leaves_zero_gradients():
    """An optimizer without state comes out with zero gradients on the parameters that require
    one (Horovod's start-up step leaves them), and no parameter moved."""
    rank = hvd.rank()
    model = torch.nn.Linear(3, 2).double()
    frozen = torch.nn.Parameter(torch.arange(2.0), requires_grad=False)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(rank_rows(rank, 2, 3, 7)))
        model.bias.copy_(torch.from_numpy(rank_rows(rank, 1, 2, 8)[0]))
    optimizer = torch.optim.SGD([*model.parameters(), frozen], lr=0.1, momentum=0.9,
                                weight_decay=0.5, nesterov=True)
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=[
        ("weight", model.weight), ("bias", model.bias), ("frozen", frozen)])
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    assert frozen.grad is None
    for p in model.parameters():
        assert p.grad is not None and p.grad.shape == p.shape and not p.grad.any()
    # Weight decay and momentum did not move anything: the root's initial values everywhere.
    assert_close(model.weight, rank_rows(0, 2, 3, 7), "weight")
    assert_close(model.bias, rank_rows(0, 1, 2, 8)[0], "bias")
    assert not optimizer.state, "no optimizer state was created"
    # The zero gradient is an ordinary starting point for the first backward pass.
    x = torch.from_numpy(rank_rows(rank, 4, 3, 9))
    model(x).sum().backward()
    optimizer.step()
    grad_w = np.mean([np.ones((2, 4)) @ rank_rows(r, 4, 3, 9) for r in range(hvd.size())], 0)
    expected = rank_rows(0, 2, 3, 7)
    expected = expected - 0.1 * (1 + 0.9) * (grad_w + 0.5 * expected)  # nesterov, first step
    assert_close(model.weight, expected, "weight after one step")


@check
def step_after_synchronize_warns_once_and_does_not_reduce_again():
    rank, size = hvd.rank(), hvd.size()
    weight = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD([weight], lr=1.0),
                                         named_parameters=[("weight", weight)])
    (weight * torch.from_numpy(rank_rows(rank, 1, 3, 30)[0])).sum().backward()
    optimizer.synchronize()
    weight.grad.add_(float(rank))  # differs per rank: a second reduction would average it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer.step()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and messages[0].startswith(
        "optimizer.step() called without optimizer.skip_synchronize()"), messages
    mean = np.mean([rank_rows(r, 1, 3, 30)[0] for r in range(size)], 0)
    assert_close(weight, -(mean + rank), "step after synchronize")
    (weight * 1.0).sum().backward()
    optimizer.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with optimizer.skip_synchronize():
            optimizer.step()
    assert not caught, [str(w.message) for w in caught]


@check
def sparse_as_dense_hands_back_sparse_gradients():
    """SparseAdam under DistributedOptimizer(sparse_as_dense=True): reduced densely, stepped on
    a sparse gradient; both settings give the mean over ranks of the embedding rows' counts."""
    rank, size = hvd.rank(), hvd.size()
    rows = [[1, 2, 4, 4], [3, 4, 0]][rank % 2]
    counts = np.zeros((6, 2))
    for r in range(size):
        for row in [[1, 2, 4, 4], [3, 4, 0]][r % 2]:
            counts[row] += 1.0 / size
    for sparse_as_dense in (False, True):
        embedding = torch.nn.Embedding(6, 2, sparse=True).double()
        optimizer = hvd.DistributedOptimizer(
            torch.optim.SparseAdam(list(embedding.parameters()), lr=0.1),
            named_parameters=embedding.named_parameters(), sparse_as_dense=sparse_as_dense)
        embedding(torch.tensor(rows)).sum().backward()
        optimizer.synchronize()
        grad = embedding.weight.grad
        assert grad.is_sparse, sparse_as_dense
        assert_close(grad.to_dense(), counts, f"sparse_as_dense={sparse_as_dense}")
        with optimizer.skip_synchronize():
            optimizer.step()
    names = optimizer._parameter_names  # Horovod's attribute
    assert sorted(names.values()) == ["weight"], names


# --- gradient convention ---------------------------------------------------------------------

@check
def gradient_convention_sum_of_losses():
    """Each backward is the gradient of the sum of every rank's loss L_s = sum(c_s * y_s), with
    c_s rank s's (regenerable) output gradient: allgather, broadcast, reducescatter."""
    rank, size = hvd.rank(), hvd.size()
    rows = [1 + r % 3 for r in range(size)]
    x = torch.from_numpy(rank_rows(rank, rows[rank], 4, 1)).requires_grad_()
    coefficients = [rank_rows(s, sum(rows), 4, 2) for s in range(size)]
    hvd.allgather(x).backward(torch.from_numpy(coefficients[rank]))
    start = sum(rows[:rank])
    expected = sum(c[start:start + rows[rank]] for c in coefficients)
    assert_close(x.grad, expected, "allgather")

    root = size - 1
    x = torch.from_numpy(rank_rows(rank, 3, 4, 3)).requires_grad_()
    coefficients = [rank_rows(s, 3, 4, 4) for s in range(size)]
    hvd.broadcast(x, root).backward(torch.from_numpy(coefficients[rank]))
    expected = sum(coefficients) if rank == root else np.zeros((3, 4))
    assert_close(x.grad, expected, "broadcast")

    for op, factor in ((hvd.Sum, 1.0), (hvd.Average, 1.0 / size)):
        x = torch.from_numpy(rank_rows(rank, 2 * size, 3, 5)).requires_grad_()
        coefficients = [rank_rows(s, 2, 3, 6) for s in range(size)]
        hvd.reducescatter(x, op=op).backward(torch.from_numpy(coefficients[rank]))
        assert_close(x.grad, np.concatenate(coefficients) * factor, f"reducescatter {op}")


# --- Horovod's Adasum user guide, its PyTorch calls as written there --------------------------

@check
def adasum_user_guide_calls():
    rank, size = hvd.rank(), hvd.size()
    tensor = torch.from_numpy(rank_rows(rank, 1, 50, 10)[0])
    combined = hvd.allreduce(tensor, op=hvd.AdaSum)
    assert_close(combined, adasum_tree([rank_rows(r, 1, 50, 10)[0] for r in range(size)]),
                 "allreduce(op=hvd.AdaSum)")

    model = torch.nn.Linear(4, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(0.25)
    compression = hvd.Compression.none
    lr, momentum = 0.1, 0.5
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                         compression=compression, backward_passes_per_step=5,
                                         op=hvd.AdaSum)
    accumulated = []  # each rank's gradient summed over its 5 backward passes, in float64
    for r in range(size):
        total = np.zeros(4)
        for step in range(5):
            x = rank_rows(r, 3, 4, 20 + step)
            total += np.ones(3) @ x  # d/dw of sum(x @ w)
        accumulated.append(total)
    for step in range(5):
        model(torch.from_numpy(rank_rows(rank, 3, 4, 20 + step))).sum().backward()
    optimizer.step()
    expected = np.full(4, 0.25) - lr * adasum_tree(accumulated)  # momentum's first step: g
    assert_close(model.weight[0], expected, "DistributedOptimizer(op=hvd.AdaSum) step")



# --- Horovod's process-set page, its three examples in dist_sync.torch ------------------------

@check.scenario
def process_set_page_examples():
    """The page's three set-ups on 4 ranks as written there (its `print(p)` lines captured;
    torch tensors where the page has TensorFlow's), one after the other in one process. The
    page's allreduce averages (the default op)."""
    from mpi4py import MPI

    results = {}
    rank = MPI.COMM_WORLD.rank
    tensor_for_even_ranks = tensor_for_odd_ranks = torch.tensor([float(rank), 1.0])

    even_set = hvd.ProcessSet([0, 2])
    odd_set = hvd.ProcessSet([1, 3])
    hvd.init(process_sets=[even_set, odd_set])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for p in [hvd.global_process_set, even_set, odd_set]:
            print(p)
    results["static"] = printed.getvalue().splitlines()
    if rank in (0, 2):
        result = hvd.allreduce(tensor_for_even_ranks, process_set=even_set)
    else:
        result = hvd.allreduce(tensor_for_odd_ranks, process_set=odd_set)
    results["static_result"] = result.tolist()
    hvd.shutdown()

    comm = MPI.COMM_WORLD
    subcomm = MPI.COMM_WORLD.Split(color=MPI.COMM_WORLD.rank % 2,
                                   key=MPI.COMM_WORLD.rank)
    split_process_set = hvd.ProcessSet(subcomm)
    hvd.init(comm, process_sets=[split_process_set])
    results["comm_ranks"] = [hvd.global_process_set.ranks, split_process_set.ranks]
    if rank in (0, 2):
        result = hvd.allreduce(tensor_for_even_ranks, process_set=split_process_set)
    else:
        result = hvd.allreduce(tensor_for_odd_ranks, process_set=split_process_set)
    results["comm_result"] = result.tolist()
    hvd.shutdown()

    hvd.init(process_sets="dynamic")
    even_set = hvd.add_process_set([0, 2])
    odd_set = hvd.add_process_set([1, 3])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for p in [hvd.global_process_set, even_set, odd_set]:
            print(p)
    results["dynamic"] = printed.getvalue().splitlines()
    if rank in (0, 2):
        result = hvd.allreduce(tensor_for_even_ranks, process_set=even_set)
    else:
        result = hvd.allreduce(tensor_for_odd_ranks, process_set=odd_set)
    results["dynamic_result"] = result.tolist()
    hvd.shutdown()
    return results


if __name__ == "__main__":
    check.main()
