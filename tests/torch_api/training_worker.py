"""dist_sync.torch training pieces under mpirun: DistributedOptimizer against single-process
training on the concatenated batch (float64), state broadcasting, sampler, model averaging
and SyncBatchNorm against torch's own single-process modules."""

import torch
import torch.nn as nn
import torch.nn.functional as F

import dist_sync.torch as hvd
from tests.support.torch_checks import close, digest, raises, torch_registry

check = torch_registry()


def rank_size():
    return hvd.rank(), hvd.size()


def init_(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    return module


def mlp(seed: int) -> nn.Module:
    return init_(nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)), seed)


def data(step: int, rows: int):
    g = torch.Generator().manual_seed(1000 + step)
    return (torch.randn(rows, 5, generator=g, dtype=torch.float64),
            torch.randn(rows, 3, generator=g, dtype=torch.float64))


def train_against_reference(make_optimizer, steps=4, b=4, passes=1, rtol=1e-5, atol=1e-6,
                            options_for=None, **options):
    """N ranks x batch b (x passes) through DistributedOptimizer vs one float64 process on the
    concatenated batch. Returns the per-step parameter digests (must match across ranks)."""
    rank, size = rank_size()
    model = mlp(100 + rank).float()  # different on every rank until the broadcast
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    reference = mlp(100).double()
    if options_for is not None:
        options.update(options_for(model))
    optimizer = hvd.DistributedOptimizer(make_optimizer(model.parameters()),
                                         named_parameters=model.named_parameters(),
                                         backward_passes_per_step=passes, **options)
    reference_optimizer = make_optimizer(reference.parameters())
    digests = []
    for step in range(steps):
        x, y = data(step, size * b * passes)
        optimizer.zero_grad()
        for k in range(passes):
            rows = slice((k * size + rank) * b, (k * size + rank + 1) * b)
            loss = F.mse_loss(model(x[rows].float()), y[rows].float()) / passes
            loss.backward()
        optimizer.step()
        reference_optimizer.zero_grad()
        F.mse_loss(reference(x), y).backward()
        reference_optimizer.step()
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            close(p, q, rtol, atol, f"step {step} {name}")
        digests.append(digest(list(model.parameters())))
    return {"digest": "".join(digests)}


# --- DistributedOptimizer equivalence --------------------------------------------------------

@check
def equivalence_sgd_momentum():
    return train_against_reference(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))


@check
def equivalence_sgd_two_backward_passes():
    return train_against_reference(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), passes=2)


@check
def equivalence_adam():
    return train_against_reference(lambda p: torch.optim.Adam(p, lr=0.01), atol=1e-5)


@check
def equivalence_groups_int():
    return train_against_reference(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), groups=2)


@check
def equivalence_groups_list_and_predivide():
    def groups(model):  # first layer's weight and bias together, last layer's bias alone
        params = list(model.parameters())
        return {"groups": [[params[0], params[1]], [params[3]]]}
    return train_against_reference(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                   options_for=groups, gradient_predivide_factor=2.0)


@check
def reductions_start_during_backward():
    """The last layer's allreduce is submitted while autograd still works on the first layer:
    a hook on the input (the very last gradient autograd computes) sees it in flight."""
    model = mlp(18)
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                         named_parameters=model.named_parameters())
    x, y = data(18, 4)
    x = x.float().requires_grad_()
    seen = {}

    def at_input(grad):
        seen["in_flight"] = sorted(optimizer._ds_unit_names[u] for u in optimizer._ds_in_flight)
    x.register_hook(at_input)
    F.mse_loss(model(x), y.float()).backward()
    last_layer = [n for n in seen["in_flight"] if n.endswith((".2.weight", ".2.bias"))]
    assert len(last_layer) == 2, seen
    optimizer.step()
    return {"digest": digest(list(model.parameters()))}


def local_grads(model, x, y):
    """This rank's own gradients (autograd.grad: no accumulation, so no optimizer hooks)."""
    loss = F.mse_loss(model(x), y)
    return torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)


def gathered_mean(tensor: torch.Tensor) -> torch.Tensor:
    """float64 mean over ranks of `tensor`, computed here from allgather_object (independent
    of the allreduce under test)."""
    values = hvd.allgather_object(tensor.detach().double())
    return sum(values) / len(values)


@check
def op_sum_and_compression():
    rank, size = rank_size()
    results = []
    for options, rtol, atol in (({"op": hvd.Sum}, 1e-6, 1e-6),
                                ({"compression": hvd.Compression.fp16}, 2e-3, 2e-3),
                                ({"compression": hvd.Compression.bf16}, 1.6e-2, 1e-2)):
        model = mlp(7)
        x, y = data(50 + rank, 6)
        x, y = x.float(), y.float()
        expected = [gathered_mean(g) for g in local_grads(model, x, y)]
        if options.get("op") == hvd.Sum:
            expected = [e * size for e in expected]
        optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                             named_parameters=model.named_parameters(),
                                             **options)
        F.mse_loss(model(x), y).backward()
        optimizer.synchronize()
        for (name, p), e in zip(model.named_parameters(), expected):
            assert p.grad.dtype == torch.float32, p.grad.dtype
            close(p.grad, e, rtol, atol, f"{options} {name}")
        results.extend(p.grad for p in model.parameters())
    return {"digest": digest(results)}


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 2)
        self.rare = nn.Linear(2, 2)

    def forward(self, x, use_rare: bool):
        out = self.trunk(x)
        return self.rare(out) if use_rare else out


@check
def unused_parameters_do_not_hang():
    rank, size = rank_size()
    model = init_(Branchy(), 3)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(rank)).double().float()
    use_rare = rank == 0
    grads = torch.autograd.grad(model(x, use_rare).sum(), list(model.parameters()),
                                allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, model.parameters())]
    expected = [gathered_mean(g) for g in grads]
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                         named_parameters=model.named_parameters())
    for step in range(2):
        optimizer.zero_grad()
        model(x, use_rare).sum().backward()
        if step == 0:
            optimizer.synchronize()
            for (name, p), e in zip(model.named_parameters(), expected):
                close(p.grad, e, 1e-6, 1e-7, name)
            with optimizer.skip_synchronize():
                optimizer.step()
        else:
            optimizer.step()
    return {"digest": digest(list(model.parameters()))}


@check
def synchronize_clip_skip_synchronize():
    rank, size = rank_size()
    model = mlp(9)
    x, y = data(60 + rank, 5)
    x, y = x.float(), y.float()
    expected = [gathered_mean(g) for g in local_grads(model, x, y)]
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.5),
                                         named_parameters=model.named_parameters())
    F.mse_loss(model(x), y).backward()
    optimizer.synchronize()
    for p, e in zip(model.parameters(), expected):
        close(p.grad, e, 1e-6, 1e-7, "averaged gradient")
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
    before = [p.detach().clone() for p in model.parameters()]
    clipped = [p.grad.clone() for p in model.parameters()]
    with optimizer.skip_synchronize():
        optimizer.step()
    for p, old, g in zip(model.parameters(), before, clipped):
        assert torch.equal(p.detach(), old.add(g, alpha=-0.5)), "step did not use clipped grads"
    return {"digest": digest(list(model.parameters()))}


@check
def step_after_synchronize_does_not_reduce_again():
    rank, size = rank_size()
    model = mlp(10)
    x, y = data(70, 4)
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=1.0),
                                         named_parameters=model.named_parameters())
    F.mse_loss(model(x.float()), y.float()).backward()
    optimizer.synchronize()
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad.fill_(float(rank))  # differs per rank: a second reduction would average it
    optimizer.step()
    for p, old in zip(model.parameters(), before):
        assert torch.equal(p.detach(), old - rank), "step() reduced the gradients again"
    # The next iteration reduces as usual.
    hvd.broadcast_parameters(model.state_dict(), 0)
    optimizer.zero_grad()
    F.mse_loss(model(x.float()), y.float()).backward()
    optimizer.step()
    return {"digest": digest(list(model.parameters()))}


@check
def sparse_gradients():
    rank, size = rank_size()
    results = []
    for sparse_as_dense in (False, True):
        embedding = nn.Embedding(10, 3, sparse=True)
        init_(embedding, 11)
        ids = torch.tensor([[rank, 2, 2 * rank + 1]])
        (local,) = torch.autograd.grad(embedding(ids).pow(2).sum(), [embedding.weight])
        expected = gathered_mean(local.to_dense())
        optimizer = hvd.DistributedOptimizer(torch.optim.SGD(embedding.parameters(), lr=0.1),
                                             named_parameters=embedding.named_parameters(),
                                             sparse_as_dense=sparse_as_dense)
        embedding(ids).pow(2).sum().backward()
        optimizer.synchronize()
        grad = embedding.weight.grad
        assert grad.is_sparse, (sparse_as_dense, grad.layout)  # reduced densely, handed back sparse
        close(grad.to_dense(), expected, 1e-6, 1e-7, f"sparse_as_dense={sparse_as_dense}")
        with optimizer.skip_synchronize():
            optimizer.step()
        results.append(embedding.weight)
    return {"digest": digest(results)}


@check
def scheduler_state_dict_and_isinstance():
    model = mlp(12)
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=1.0,
                                                         momentum=0.5),
                                         named_parameters=model.named_parameters())
    assert isinstance(optimizer, torch.optim.SGD) and type(optimizer).__name__ == "SGD"
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    x, y = data(80, 4)
    for _ in range(2):
        optimizer.zero_grad()
        F.mse_loss(model(x.float()), y.float()).backward()
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.25, optimizer.param_groups[0]["lr"]
    state = optimizer.state_dict()
    assert len(state["state"]) == 4 and "momentum_buffer" in state["state"][0]
    return {"digest": digest(list(model.parameters()))}


@check
def two_optimizers_with_the_same_names():
    rank, size = rank_size()
    generator, discriminator = mlp(13), mlp(14)
    x, y = data(90 + rank, 4)
    x, y = x.float(), y.float()

    def losses():
        return F.mse_loss(generator(x), y) + F.mse_loss(discriminator(x), y)
    expected = [gathered_mean(g) for g in torch.autograd.grad(
        losses(), list(generator.parameters()) + list(discriminator.parameters()))]
    opt_g = hvd.DistributedOptimizer(torch.optim.SGD(generator.parameters(), lr=0.1),
                                     named_parameters=generator.named_parameters())
    opt_d = hvd.DistributedOptimizer(torch.optim.SGD(discriminator.parameters(), lr=0.1),
                                     named_parameters=discriminator.named_parameters())
    losses().backward()  # both optimizers' reductions in flight at once, same parameter names
    opt_g.synchronize()
    opt_d.synchronize()
    params = list(generator.parameters()) + list(discriminator.parameters())
    for p, e in zip(params, expected):
        close(p.grad, e, 1e-6, 1e-7, "gradient")
    return {"digest": digest([p.grad for p in params])}


@check
def unnamed_parameters_across_param_groups():
    model = mlp(15)
    layers = [m for m in model if isinstance(m, nn.Linear)]
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(
        [{"params": layers[0].parameters()}, {"params": layers[1].parameters(), "lr": 0.01}],
        lr=0.1))
    names = optimizer._ds_unit_names
    assert len(set(names)) == len(names) == 4, names
    x, y = data(95, 4)
    F.mse_loss(model(x.float()), y.float()).backward()
    optimizer.step()
    return {"digest": digest(list(model.parameters()))}


@check
def late_trainable_parameters():
    """A layer unfrozen after wrapping, and a param group added later, are reduced too."""
    rank, size = rank_size()
    model = mlp(19)
    extra = init_(nn.Linear(3, 2), 20)
    model[0].requires_grad_(False)
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                         named_parameters=model.named_parameters())
    x, y = data(19 + rank, 4)
    x, y = x.float(), y.float()

    def loss():
        return F.mse_loss(model(x), y) + extra(model(x)).pow(2).mean()
    F.mse_loss(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()
    model[0].requires_grad_(True)
    optimizer.add_param_group({"params": extra.parameters()})
    params = list(model.parameters()) + list(extra.parameters())
    expected = [gathered_mean(g) for g in torch.autograd.grad(loss(), params)]
    loss().backward()
    optimizer.synchronize()
    for p, e in zip(params, expected):
        close(p.grad, e, 1e-6, 1e-7, "late parameter gradient")
    assert "DistributedOptimizer" in optimizer._ds_unit_names[-1] and \
        optimizer._ds_unit_names[-1].endswith("param_groups.1.1"), optimizer._ds_unit_names
    with optimizer.skip_synchronize():
        optimizer.step()
    return {"digest": digest(params)}


@check
def optimizer_argument_errors():
    model = mlp(16)

    def sgd():
        return torch.optim.SGD(model.parameters(), lr=0.1)
    named = list(model.named_parameters())
    raises(ValueError, "Found duplicates: 0.weight",
           lambda: hvd.DistributedOptimizer(sgd(), named_parameters=[named[0], named[0]] + named))
    raises(ValueError, "1 parameter(s) of the optimizer are not named: #3 (shape [3])",
           lambda: hvd.DistributedOptimizer(sgd(), named_parameters=named[:3]))
    raises(ValueError, "(name, parameter) tuples",
           lambda: hvd.DistributedOptimizer(sgd(), named_parameters=list(model.parameters())))
    for bad in (0, -1, 1.5, True):
        raises(ValueError, "backward_passes_per_step must be a positive integer",
               lambda: hvd.DistributedOptimizer(sgd(), backward_passes_per_step=bad))
    raises(ValueError, "gradient_predivide_factor is only supported with op=Average",
           lambda: hvd.DistributedOptimizer(sgd(), op=hvd.Sum, gradient_predivide_factor=2.0))
    raises(ValueError, "gradient_predivide_factor must be a positive number",
           lambda: hvd.DistributedOptimizer(sgd(), gradient_predivide_factor=0))
    raises(ValueError, "groups should be a positive integer",
           lambda: hvd.DistributedOptimizer(sgd(), groups=0))
    raises(ValueError, "groups should be a positive integer or a list of lists",
           lambda: hvd.DistributedOptimizer(sgd(), groups="all"))
    raises(ValueError, "groups should be a list of lists of parameters",
           lambda: hvd.DistributedOptimizer(sgd(), groups=[named[0][1]]))
    raises(ValueError, "groups must consist of torch.Tensor",
           lambda: hvd.DistributedOptimizer(sgd(), groups=[["0.weight"]]))
    raises(ValueError, "appears more than once in groups",
           lambda: hvd.DistributedOptimizer(sgd(), groups=[[named[0][1]], [named[0][1]]]))
    raises(ValueError, "not a parameter of the optimizer",
           lambda: hvd.DistributedOptimizer(sgd(), groups=[[torch.zeros(2)]]))
    raises(TypeError, "wraps a torch.optim.Optimizer", lambda: hvd.DistributedOptimizer(model))
    raises(TypeError, "compression must provide compress() and decompress()",
           lambda: hvd.DistributedOptimizer(sgd(), compression="fp16"))
    wrapped = hvd.DistributedOptimizer(sgd(), named_parameters=model.named_parameters())
    raises(ValueError, "already a DistributedOptimizer",
           lambda: hvd.DistributedOptimizer(wrapped))
    raises(ValueError, "backward_passes_per_step must be a positive integer",
           lambda: wrapped.set_backward_passes_per_step(0))


@check
def optimizer_misuse_errors():
    rank, size = rank_size()
    model = mlp(17)
    x, y = data(99, 4)
    x, y = x.float(), y.float()
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                         named_parameters=model.named_parameters())
    F.mse_loss(model(x), y).backward()
    raises(hvd.DistSyncError, "zero_grad() was called after loss.backward() but before",
           lambda: optimizer.zero_grad())
    optimizer.step()
    optimizer.zero_grad()  # fine again
    F.mse_loss(model(x), y).backward()
    message = raises(hvd.DistSyncError, "more than backward_passes_per_step=1 time(s)",
                     lambda: F.mse_loss(model(x), y).backward())
    assert "'2.bias'" in message or "'2.weight'" in message, message  # first hook to fire
    optimizer.synchronize()  # finishes what was in flight; the optimizer stays usable
    optimizer.zero_grad()
    # With passes declared, the same two backward passes accumulate.
    optimizer.set_backward_passes_per_step(2)
    for _ in range(2):
        F.mse_loss(model(x), y).backward()
    optimizer.step()
    return {"digest": digest(list(model.parameters()))}


# --- state -----------------------------------------------------------------------------------

class WithBuffers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)
        self.head2 = nn.Linear(3, 2)
        self.head2.weight = self.head.weight  # tied: appears twice in state_dict


def buffered(seed: int) -> nn.Module:
    model = init_(WithBuffers(), seed)
    g = torch.Generator().manual_seed(seed + 1)
    model.bn.running_mean.copy_(torch.randn(3, generator=g))
    model.bn.num_batches_tracked.fill_(seed)
    return model


@check
def broadcast_parameters_forms():
    rank, size = rank_size()
    root = size - 1
    for form in ("state_dict", "named_parameters", "parameters", "prefix"):
        model = buffered(200 + rank)
        expected = buffered(200 + root)
        if form == "state_dict":
            hvd.broadcast_parameters(model.state_dict(), root_rank=root)
            pairs = zip(model.state_dict().values(), expected.state_dict().values())
        elif form == "named_parameters":
            hvd.broadcast_parameters(model.named_parameters(), root_rank=root)  # an iterator
            pairs = zip(model.parameters(), expected.parameters())
        elif form == "parameters":
            hvd.broadcast_parameters(list(model.parameters()), root)
            pairs = zip(model.parameters(), expected.parameters())
        else:
            hvd.broadcast_parameters(model.state_dict(), root, prefix="model.")
            pairs = zip(model.state_dict().values(), expected.state_dict().values())
        for got, want in pairs:
            assert torch.equal(got, want), form
    # Non-contiguous tensors are broadcast too.
    values = [torch.arange(12.).reshape(3, 4) + 100 * r for r in range(size)]
    mine = values[rank].t()
    hvd.broadcast_parameters([mine], root)
    assert torch.equal(mine, values[root].t())


@check
def broadcast_parameters_errors():
    raises(ValueError, "expects a state_dict, a list of tensors", lambda:
           hvd.broadcast_parameters(3, 0))
    raises(ValueError, "expects a state_dict, a list of tensors", lambda:
           hvd.broadcast_parameters(torch.ones(3), 0))
    raises(ValueError, "expects tensors or (name, tensor) pairs, found str",
           lambda: hvd.broadcast_parameters(["weight"], 0))
    raises(ValueError, "does not exist", lambda: hvd.broadcast_parameters([torch.ones(1)], 9))
    raises(TypeError, "expects a torch.optim.Optimizer",
           lambda: hvd.broadcast_optimizer_state(mlp(0), 0))


def optimizer_setup(name: str, rank: int):
    """A model and an instance of torch.optim.<name> with rank-dependent hyperparameters, and a
    closure computing a loss on rank-dependent data."""
    lr = 0.01 * (rank + 1)
    cls = getattr(torch.optim, name)
    if name == "SparseAdam":
        model = init_(nn.Embedding(6, 3, sparse=True), 300 + rank)
        params = model.parameters()
        ids = torch.tensor([rank % 6, 3, 4])

        def loss():
            return model(ids).pow(2).sum()
    else:
        model = mlp(300 + rank).float()
        # Muon only takes matrices.
        params = [p for p in model.parameters() if p.dim() == 2] if name == "Muon" else \
            model.parameters()
        x, y = data(300 + rank, 6)

        def loss():
            return F.mse_loss(model(x.float()), y.float())
    kwargs = {"lr": lr}
    if name == "SGD":
        kwargs["momentum"] = 0.9
    return model, cls(params, **kwargs), loss


def run_steps(optimizer, loss, steps: int) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        if isinstance(optimizer, torch.optim.LBFGS):
            def closure():
                optimizer.zero_grad()
                value = loss()
                value.backward()
                return value
            optimizer.step(closure)
        else:
            loss().backward()
            optimizer.step()


def comparable(state_dict):
    """A state_dict with tensors as (dtype, list) so allgather_object results compare with ==."""
    if isinstance(state_dict, torch.Tensor):
        return ("tensor", str(state_dict.dtype), state_dict.detach().double().tolist())
    if isinstance(state_dict, dict):
        return {k: comparable(v) for k, v in state_dict.items()}
    if isinstance(state_dict, (list, tuple)):
        return [comparable(v) for v in state_dict]
    return state_dict


BUILT_IN = sorted(n for n in dir(torch.optim)
                  if isinstance(getattr(torch.optim, n), type)
                  and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
                  and getattr(torch.optim, n) is not torch.optim.Optimizer)


@check
def broadcast_optimizer_state_every_optimizer():
    rank, size = rank_size()
    root = size - 1
    covered = []
    for name in BUILT_IN:
        model, optimizer, loss = optimizer_setup(name, rank)
        run_steps(optimizer, loss, 1 + rank)  # ranks differ: state and hyperparameters
        hvd.broadcast_optimizer_state(optimizer, root_rank=root)
        states = hvd.allgather_object(comparable(optimizer.state_dict()))
        assert states[rank] == states[root], f"{name}: state differs from the root's"
        assert states[root]["state"], f"{name}: the root had no state to send"
        assert optimizer.param_groups[0]["lr"] == 0.01 * (root + 1), name
        run_steps(optimizer, loss, 1)  # still usable
        covered.append(name)
    # A wrapped optimizer, and a root without state: the other ranks' state is cleared.
    model = mlp(400 + rank)
    optimizer = hvd.DistributedOptimizer(torch.optim.Adam(model.parameters(), lr=0.01),
                                         named_parameters=model.named_parameters())
    if rank != 0:
        # A local step that bypasses the reduction (backward() would start allreduces that
        # the root never matches): state only off the root.
        x, y = data(400 + rank, 4)
        grads = torch.autograd.grad(F.mse_loss(model(x.float()), y.float()),
                                    list(model.parameters()))
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        torch.optim.Adam.step(optimizer)
        for p in model.parameters():
            p.grad = None
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    assert optimizer.state_dict()["state"] == {}, "state not cleared"
    return {"covered": covered}


@check
def broadcast_and_allgather_objects():
    rank, size = rank_size()
    root = size - 1
    payload = {"epoch": 7, "tensor": torch.arange(3.0), "name": "x" * 1000}
    for name in (None, "config"):
        got = hvd.broadcast_object(payload if rank == root else None, root_rank=root, name=name)
        assert got["epoch"] == 7 and torch.equal(got["tensor"], torch.arange(3.0))
    scale = 3
    fn = hvd.broadcast_object(lambda v: v * scale if rank == 0 else None)  # cloudpickle
    assert fn(2) == 6
    assert hvd.broadcast_object(None) is None
    objects = hvd.allgather_object({"rank": rank, "data": list(range(rank * 50))})
    assert [o["rank"] for o in objects] == list(range(size))
    assert [len(o["data"]) for o in objects] == [r * 50 for r in range(size)]
    assert hvd.allgather_object(rank, name="ranks") == list(range(size))
    raises(ValueError, "does not exist", lambda: hvd.broadcast_object(1, root_rank=size))


# --- data partitioning -----------------------------------------------------------------------

@check
def sampler_shards_from_dist_sync():
    rank, size = rank_size()
    from torch.utils.data.distributed import DistributedSampler as TorchSampler
    for length in (1, size, 10, 17):
        dataset = list(range(length))
        for drop_last in (False, True):
            ours = hvd.DistributedSampler(dataset, shuffle=True, seed=3, drop_last=drop_last)
            theirs = TorchSampler(dataset, num_replicas=size, rank=rank, shuffle=True, seed=3,
                                  drop_last=drop_last)
            for epoch in range(3):
                ours.set_epoch(epoch)
                theirs.set_epoch(epoch)
                mine = list(ours)
                assert mine == list(theirs) and len(ours) == len(mine), (length, drop_last)
                shards = hvd.allgather_object(mine)
                assert len({len(s) for s in shards}) == 1, "uneven shards"
                flat = [i for s in shards for i in s]
                if drop_last:
                    assert len(set(flat)) == len(flat), "shards overlap"
                else:
                    assert set(flat) == set(dataset), "samples missing"
        exact = hvd.DistributedSampler(dataset, seed=5, even=False)
        exact.set_epoch(1)
        shards = hvd.allgather_object(list(exact))
        flat = [i for s in shards for i in s]
        assert sorted(flat) == dataset, "even=False must cover every sample exactly once"
        assert len(exact) == len(shards[rank])


# --- model averaging -------------------------------------------------------------------------

@check
def average_parameters_module_and_lists():
    rank, size = rank_size()
    model = buffered(500 + rank)
    references = [buffered(500 + r).double() for r in range(size)]
    hvd.average_parameters(model)
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            expected = sum(ref.state_dict()[name] for ref in references) / size
            close(value, expected, 1e-6, 1e-7, name)
        else:
            assert torch.equal(value, references[0].state_dict()[name]), name
    # Tensors, including a non-contiguous one, and optimizer param groups.
    tensors = [torch.full((2, 3), float(rank)).t(), torch.full((4,), 2.0 * rank)]
    hvd.average_parameters(tensors)
    mean = (size - 1) / 2
    assert torch.allclose(tensors[0], torch.full((3, 2), mean))
    assert torch.allclose(tensors[1], torch.full((4,), 2 * mean))
    layer = init_(nn.Linear(2, 2), 600 + rank)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    hvd.average_parameters(optimizer.param_groups)
    expected = sum(init_(nn.Linear(2, 2), 600 + r).weight.double() for r in range(size)) / size
    close(layer.weight, expected, 1e-6, 1e-7, "param groups")
    return {"digest": digest(list(model.state_dict().values()))}


@check
def periodic_averager_local_sgd():
    rank, size = rank_size()
    period, warmup, steps = 3, 2, 6  # ends on an averaging step
    model = mlp(700 + rank)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    averager = hvd.PeriodicModelAverager(period=period, warmup_steps=warmup)
    references = [mlp(700 + r).double() for r in range(size)]
    ref_optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in references]
    schedule = []
    for step in range(steps):
        x, y = data(800 + step, 4 * size)
        optimizer.zero_grad()
        rows = slice(rank * 4, rank * 4 + 4)
        F.mse_loss(model(x[rows].float()), y[rows].float()).backward()
        optimizer.step()
        schedule.append(averager.average_parameters(model.parameters()))
        for r, (ref, opt) in enumerate(zip(references, ref_optimizers)):
            opt.zero_grad()
            F.mse_loss(ref(x[r * 4:r * 4 + 4]), y[r * 4:r * 4 + 4]).backward()
            opt.step()
        if step >= warmup and (step - warmup) % period == 0:
            with torch.no_grad():
                for params in zip(*[m.parameters() for m in references]):
                    mean = sum(params) / size
                    for p in params:
                        p.copy_(mean)
        for p, q in zip(model.parameters(), references[rank].parameters()):
            close(p, q, 1e-5, 1e-6, f"step {step}")
    assert schedule == [False, False, True, False, False, True], schedule
    raises(ValueError, "period must be a positive integer",
           lambda: hvd.PeriodicModelAverager(period=0))
    raises(ValueError, "warmup_steps must be a non-negative integer",
           lambda: hvd.PeriodicModelAverager(period=2, warmup_steps=-1))
    return {"digest": digest(list(model.parameters()))}


# --- SyncBatchNorm ---------------------------------------------------------------------------

def batch_for(rank: int, seed: int, shape, offset: float = 0.0):
    g = torch.Generator().manual_seed(seed * 10 + rank)
    return torch.randn((shape[0] + rank,) + tuple(shape[1:]), generator=g,
                       dtype=torch.float64) * 2 + offset


@check
def sync_batch_norm_matches_batchnorm():
    rank, size = rank_size()
    for dims, momentum in ((2, 0.1), (2, None), (1, 0.3), (3, 0.1)):
        shape = {1: (3, 4), 2: (2, 4, 3, 2), 3: (2, 4, 2, 2, 2)}[dims]
        reference = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](
            4, momentum=momentum).double()
        layer = hvd.SyncBatchNorm(4, momentum=momentum).double()
        with torch.no_grad():
            for module in (reference, layer):
                module.weight.copy_(torch.tensor([1.0, -0.5, 2.0, 0.25]))
                module.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.0]))
        for step in range(2):
            inputs = [batch_for(r, 31 + step, shape).requires_grad_() for r in range(size)]
            ws = [torch.randn(x.shape, generator=torch.Generator().manual_seed(77 + r),
                              dtype=torch.float64) for r, x in enumerate(inputs)]
            reference.zero_grad()
            ref_out = reference(torch.cat(inputs))
            total = sum((out * w).sum() for out, w in
                        zip(torch.split(ref_out, [x.shape[0] for x in inputs]), ws))
            total.backward()
            x = inputs[rank].detach().clone().requires_grad_()
            layer.zero_grad()
            out = layer(x)
            (out * ws[rank]).sum().backward()
            start = sum(t.shape[0] for t in inputs[:rank])
            what = f"{dims}d momentum={momentum} step {step}"
            close(out, ref_out[start:start + x.shape[0]], 1e-10, 1e-10, what + " output")
            close(x.grad, inputs[rank].grad, 1e-10, 1e-10, what + " input grad")
            close(hvd.allreduce(layer.weight.grad, op=hvd.Sum), reference.weight.grad,
                  1e-10, 1e-10, what + " weight grad")
            close(hvd.allreduce(layer.bias.grad, op=hvd.Sum), reference.bias.grad,
                  1e-10, 1e-10, what + " bias grad")
            close(layer.running_mean, reference.running_mean, 1e-12, 1e-12, what + " mean")
            close(layer.running_var, reference.running_var, 1e-12, 1e-12, what + " var")
        assert layer.num_batches_tracked.item() == 2
        layer.eval()
        reference.eval()
        probe = batch_for(rank, 40, shape)
        close(layer(probe), reference(probe), 1e-12, 1e-12, f"{dims}d eval")


@check
def sync_batch_norm_float32_large_mean_and_convert():
    rank, size = rank_size()
    inputs = [batch_for(r, 50, (3, 2, 5, 5), offset=1000.0) for r in range(size)]
    reference = nn.BatchNorm2d(2).double()
    expected = reference(torch.cat(inputs))
    model = nn.Sequential(nn.Identity(), nn.BatchNorm2d(2))
    converted = hvd.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1], hvd.SyncBatchNorm)
    out = converted(inputs[rank].float())
    start = sum(t.shape[0] for t in inputs[:rank])
    close(out, expected[start:start + inputs[rank].shape[0]], 1e-3, 1e-3, "float32 output")
    close(converted[1].running_var, reference.running_var, 1e-4, 1e-4, "float32 running var")
    assert converted[1].running_var is model[1].running_var or \
        torch.equal(converted[1].running_var, model[1].running_var)


@check
def sync_batch_norm_errors():
    layer = hvd.SyncBatchNorm(3)
    raises(ValueError, "expected at least 2D input (got 1D input)", lambda: layer(torch.ones(3)))
    raises(ValueError, "Expected more than 1 value per channel when training, got 0",
           lambda: layer(torch.ones(0, 3)))


if __name__ == "__main__":
    check.main()
