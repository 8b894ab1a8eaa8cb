"""dist_sync.torch collectives under mpirun: every dtype and op against numpy references, and
every autograd-aware op against single-process torch autograd on all ranks' inputs."""
import warnings

import torch

import dist_sync.torch as hvd
from tests.support.reference import DTYPES, OPS, compare, make_input
from tests.support.torch_checks import (OP, allreduce_sweep, close, digest, raises, strided,
                                        to_storage, to_torch, torch_registry)

check = torch_registry()
FLOATS = ["float16", "bfloat16", "float32", "float64"]


def rank_size():
    return hvd.rank(), hvd.size()


# --- values against numpy --------------------------------------------------------------------

@check
def allreduce_every_dtype_op_and_form():
    size = hvd.size()
    return allreduce_sweep(DTYPES, OPS, (0, 1, size + 1, 37, 1001), seed=11)


@check
def allreduce_prescale_postscale():
    rank, size = rank_size()
    failures, outputs = [], []
    for dtype in FLOATS:
        for op in OPS:
            inputs = [make_input(12, r, 23, dtype, op) for r in range(size)]
            mine = to_torch(inputs[rank], dtype)
            for form in ("allreduce", "async"):
                if form == "allreduce":
                    out = hvd.allreduce(mine, op=OP[op], prescale_factor=0.5, postscale_factor=3.0)
                else:
                    out = hvd.synchronize(hvd.allreduce_async(
                        mine, op=OP[op], prescale_factor=0.5, postscale_factor=3.0))
                problem = compare(to_storage(out, dtype), inputs, dtype, op, 0.5, 3.0)
                if problem:
                    failures.append(f"{dtype}/{op}/{form}: {problem}")
                outputs.append(out)
    assert not failures, failures[:5]
    return {"digest": digest(outputs)}


@check
def grouped_allreduce_forms():
    rank, size = rank_size()
    spec = [("float32", 7), ("int32", 5), ("bfloat16", 6), ("float64", 1), ("float16", 0)]
    outputs = []
    for op in ("sum", "max", "average"):
        inputs = [[make_input(13, r, n, dtype, op) for r in range(size)] for dtype, n in spec]
        mine = [to_torch(per_rank[rank], dtype) for per_rank, (dtype, _) in zip(inputs, spec)]
        mine[2] = mine[2].reshape(2, 3)
        forms = {
            "grouped_allreduce": lambda: hvd.grouped_allreduce(mine, op=OP[op]),
            "strided": lambda: hvd.grouped_allreduce([strided(t) for t in mine], op=OP[op]),
            "grouped_allreduce_": lambda: hvd.grouped_allreduce_([t.clone() for t in mine],
                                                                 op=OP[op]),
            "async": lambda: hvd.synchronize(hvd.grouped_allreduce_async(mine, op=OP[op])),
            "async_": lambda: hvd.synchronize(hvd.grouped_allreduce_async_(
                [t.clone() for t in mine], op=OP[op])),
        }
        for form, run in forms.items():
            results = run()
            assert len(results) == len(spec), form
            for out, per_rank, (dtype, _), original in zip(results, inputs, spec, mine):
                assert out.shape == original.shape and out.dtype == original.dtype, form
                problem = compare(to_storage(out, dtype).reshape(-1), per_rank, dtype, op)
                assert not problem, f"{form}/{op}/{dtype}: {problem}"
                outputs.append(out)
    return {"digest": digest(outputs)}


def rows_input(seed: int, rank: int, rows: int, dtype: str, width: int = 3) -> torch.Tensor:
    return to_torch(make_input(seed, rank, rows * width, dtype, "sum"), dtype).reshape(rows, width)


@check
def allgather_every_dtype():
    rank, size = rank_size()
    outputs = []
    for dtype in DTYPES:
        parts = [rows_input(14, r, r, dtype) for r in range(size)]  # rank 0 sends no rows
        expected = torch.cat(parts)
        for form in ("allgather", "strided", "async"):
            if form == "allgather":
                out = hvd.allgather(parts[rank])
            elif form == "strided":
                out = hvd.allgather(strided(parts[rank]))
            else:
                out = hvd.synchronize(hvd.allgather_async(parts[rank]))
            assert out.dtype == expected.dtype and torch.equal(out, expected), f"{dtype}/{form}"
            outputs.append(out)
    scalar = hvd.allgather(torch.tensor(float(rank)))
    assert scalar.tolist() == [float(r) for r in range(size)], scalar
    return {"digest": digest(outputs)}


@check
def broadcast_every_dtype_and_root():
    rank, size = rank_size()
    outputs = []
    for dtype in DTYPES:
        values = [rows_input(15, r, 4, dtype) for r in range(size)]
        for root in range(size):
            expected = values[root]
            mine = values[rank]
            results = {
                "broadcast": hvd.broadcast(mine, root),
                "strided": hvd.broadcast(strided(mine), root),
                "broadcast_": hvd.broadcast_(mine.clone(), root),
                "async": hvd.synchronize(hvd.broadcast_async(mine, root)),
                "async_": hvd.synchronize(hvd.broadcast_async_(mine.clone(), root_rank=root)),
            }
            for form, out in results.items():
                assert torch.equal(out, expected), f"{dtype}/root {root}/{form}"
                outputs.append(out)
            assert torch.equal(mine, values[rank]), "out-of-place broadcast modified its input"
    return {"digest": digest(outputs)}


@check
def alltoall_splits_and_even():
    rank, size = rank_size()

    def sent(r: int, dtype: str):
        splits = [(r + p) % 3 for p in range(size)]
        return rows_input(16, r, sum(splits), dtype, width=2), splits

    for dtype in ("float32", "int64", "bfloat16"):
        mine, splits = sent(rank, dtype)
        expected_parts, expected_splits = [], []
        for p in range(size):
            data, their_splits = sent(p, dtype)
            start = sum(their_splits[:rank])
            expected_parts.append(data[start:start + their_splits[rank]])
            expected_splits.append(their_splits[rank])
        expected = torch.cat(expected_parts)
        out, received = hvd.alltoall(mine, splits=splits)
        assert torch.equal(out, expected), dtype
        assert received.dtype == torch.int32 and received.tolist() == expected_splits
        out2, received2 = hvd.synchronize(hvd.alltoall_async(strided(mine),
                                                             splits=torch.tensor(splits)))
        assert torch.equal(out2, expected) and received2.tolist() == expected_splits
    # Even split: no splits argument returns the tensor alone, as Horovod does.
    data = [torch.arange(2 * size, dtype=torch.float64) + 100 * r for r in range(size)]
    out = hvd.alltoall(data[rank])
    assert isinstance(out, torch.Tensor)
    assert out.tolist() == [data[p][2 * rank + i].item() for p in range(size) for i in range(2)]
    return None


def reducescatter_rows(rows: int, size: int):
    counts = [rows // size + (1 if r < rows % size else 0) for r in range(size)]
    starts = [sum(counts[:r]) for r in range(size)]
    return counts, starts


@check
def reducescatter_ops():
    rank, size = rank_size()
    rows = 2 * size + 1
    counts, starts = reducescatter_rows(rows, size)
    for dtype in ("float32", "float64", "int32", "bfloat16"):
        for op in OPS:
            inputs = [make_input(17, r, rows * 2, dtype, op) for r in range(size)]
            mine = to_torch(inputs[rank], dtype).reshape(rows, 2)
            for form in ("reducescatter", "async"):
                if form == "reducescatter":
                    out = hvd.reducescatter(mine, op=OP[op])
                else:
                    out = hvd.synchronize(hvd.reducescatter_async(mine, op=OP[op]))
                assert out.shape == (counts[rank], 2), (form, out.shape)
                piece = [x[starts[rank] * 2:(starts[rank] + counts[rank]) * 2] for x in inputs]
                problem = compare(to_storage(out, dtype).reshape(-1), piece, dtype, op)
                assert not problem, f"{dtype}/{op}/{form}: {problem}"
    return None  # each rank holds different rows: nothing to compare across ranks


# --- autograd against single-process torch ---------------------------------------------------

def all_inputs(seed: int, shapes, ties: bool = False):
    """Every rank's float64 input (regenerated identically on every rank) as leaves."""
    result = []
    for r, shape in enumerate(shapes):
        g = torch.Generator().manual_seed(seed * 100 + r)
        if ties:  # few distinct values, so ranks tie for the min/max, and some zeros
            x = torch.randint(-2, 3, shape, generator=g).double()
        else:
            x = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
        result.append(x.requires_grad_())
    return result


def weights(seed: int, shape, size: int):
    return [torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1000 + r),
                        dtype=torch.float64) for r in range(size)]


def reference_grads(xs, outputs_per_rank, ws):
    """d(sum_r <out_r, w_r>)/d x_r for every r, by single-process autograd."""
    total = sum((out * w).sum() for out, w in zip(outputs_per_rank, ws))
    return torch.autograd.grad(total, xs, allow_unused=True)


def distributed_grad(x_mine, fn, w_mine):
    x = x_mine.detach().clone().requires_grad_()
    out = fn(x)
    (out * w_mine).sum().backward()
    return out, x.grad


REDUCE = {"sum": lambda s: s.sum(0), "average": lambda s: s.mean(0),
          "min": lambda s: s.amin(0), "max": lambda s: s.amax(0), "product": lambda s: s.prod(0)}


@check
def autograd_allreduce():
    rank, size = rank_size()
    for op in OPS:
        for pre, post in ((1.0, 1.0), (0.5, 3.0)):
            for ties in (False, True):
                xs = all_inputs(21, [(3, 4)] * size, ties)
                ws = weights(21, (3, 4), size)
                ref_out = post * REDUCE[op](torch.stack([pre * x for x in xs]))
                expected = reference_grads(xs, [ref_out] * size, ws)[rank]
                out, grad = distributed_grad(
                    xs[rank], lambda x: hvd.allreduce(x, op=OP[op], prescale_factor=pre,
                                                      postscale_factor=post), ws[rank])
                what = f"{op} pre={pre} post={post} ties={ties}"
                close(out, ref_out, 1e-12, 1e-12, what + " value")
                close(grad, expected, 1e-12, 1e-12, what + " grad")


@check
def autograd_grouped_allreduce():
    rank, size = rank_size()
    for op in OPS:
        xs_a = all_inputs(22, [(5,)] * size, ties=True)
        xs_b = all_inputs(23, [(2, 3)] * size)
        ws_a, ws_b = weights(22, (5,), size), weights(23, (2, 3), size)
        ref_a = REDUCE[op](torch.stack(xs_a)) * 2.0
        ref_b = REDUCE[op](torch.stack(xs_b)) * 2.0
        total = sum((ref_a * wa).sum() + (ref_b * wb).sum() for wa, wb in zip(ws_a, ws_b))
        grads = torch.autograd.grad(total, xs_a + xs_b)
        a = xs_a[rank].detach().clone().requires_grad_()
        b = xs_b[rank].detach().clone().requires_grad_()
        counter = torch.tensor([rank], dtype=torch.int32)  # integer member: no gradient
        out_a, out_b, out_c = hvd.grouped_allreduce([a, b, counter], op=OP[op],
                                                    postscale_factor=2.0)
        assert not out_c.requires_grad
        ((out_a * ws_a[rank]).sum() + (out_b * ws_b[rank]).sum()).backward()
        close(out_a, ref_a, 1e-12, 1e-12, f"{op} value a")
        close(a.grad, grads[rank], 1e-12, 1e-12, f"{op} grad a")
        close(b.grad, grads[size + rank], 1e-12, 1e-12, f"{op} grad b")


@check
def autograd_allgather():
    rank, size = rank_size()
    xs = all_inputs(24, [(r + 1, 3) for r in range(size)])
    ws = weights(24, (sum(range(1, size + 1)), 3), size)
    ref_out = torch.cat(xs)
    expected = reference_grads(xs, [ref_out] * size, ws)[rank]
    out, grad = distributed_grad(xs[rank], hvd.allgather, ws[rank])
    close(out, ref_out, 0, 0, "allgather value")
    close(grad, expected, 1e-12, 1e-12, "allgather grad")


@check
def autograd_broadcast():
    rank, size = rank_size()
    for root in (0, size - 1):
        xs = all_inputs(25, [(4,)] * size)
        ws = weights(25, (4,), size)
        expected = reference_grads(xs, [xs[root]] * size, ws)[rank]
        if expected is None:
            expected = torch.zeros(4, dtype=torch.float64)
        out, grad = distributed_grad(xs[rank], lambda x: hvd.broadcast(x, root), ws[rank])
        close(out, xs[root], 0, 0, f"root {root} value")
        close(grad, expected, 1e-12, 1e-12, f"root {root} grad")


@check
def autograd_alltoall():
    rank, size = rank_size()
    splits = [[(r + p) % 3 + 1 for p in range(size)] for r in range(size)]
    xs = all_inputs(26, [(sum(s), 2) for s in splits])
    outs = []
    for dest in range(size):
        parts = []
        for src in range(size):
            start = sum(splits[src][:dest])
            parts.append(xs[src][start:start + splits[src][dest]])
        outs.append(torch.cat(parts))
    ws = [torch.randn(o.shape, generator=torch.Generator().manual_seed(260 + r),
                      dtype=torch.float64) for r, o in enumerate(outs)]
    expected = reference_grads(xs, outs, ws)[rank]
    out, grad = distributed_grad(xs[rank], lambda x: hvd.alltoall(x, splits=splits[rank])[0],
                                 ws[rank])
    close(out, outs[rank], 0, 0, "alltoall value")
    close(grad, expected, 1e-12, 1e-12, "alltoall grad")
    # Even split (no splits argument).
    xs = all_inputs(27, [(2 * size,)] * size)
    outs = [torch.stack([xs[src][2 * dest + i] for src in range(size) for i in range(2)])
            for dest in range(size)]
    ws = weights(27, (2 * size,), size)
    expected = reference_grads(xs, outs, ws)[rank]
    out, grad = distributed_grad(xs[rank], hvd.alltoall, ws[rank])
    close(grad, expected, 1e-12, 1e-12, "even alltoall grad")


@check
def autograd_reducescatter():
    rank, size = rank_size()
    rows = 2 * size + 1
    counts, starts = reducescatter_rows(rows, size)
    for op in OPS:
        for pre, post in ((1.0, 1.0), (0.5, 3.0)):
            xs = all_inputs(28, [(rows, 2)] * size, ties=op in ("min", "max", "product"))
            full = post * REDUCE[op](torch.stack([pre * x for x in xs]))
            outs = [full[starts[r]:starts[r] + counts[r]] for r in range(size)]
            ws = [torch.randn((counts[r], 2), generator=torch.Generator().manual_seed(280 + r),
                              dtype=torch.float64) for r in range(size)]
            expected = reference_grads(xs, outs, ws)[rank]
            out, grad = distributed_grad(
                xs[rank], lambda x: hvd.reducescatter(x, op=OP[op], prescale_factor=pre,
                                                      postscale_factor=post), ws[rank])
            close(out, outs[rank], 1e-12, 1e-12, f"{op} pre={pre} value")
            close(grad, expected, 1e-12, 1e-12, f"{op} pre={pre} grad")


@check
def allreduce_with_compression():
    rank, size = rank_size()
    x = (torch.arange(8, dtype=torch.float32) / 8 + rank).requires_grad_()
    for compression, wire in ((hvd.Compression.fp16, torch.float16),
                              (hvd.Compression.bf16, torch.bfloat16)):
        out = hvd.allreduce(x, op=hvd.Sum, compression=compression)
        assert out.dtype == torch.float32
        expected = sum((torch.arange(8, dtype=torch.float32) / 8 + r).to(wire).float()
                       for r in range(size))
        close(out, expected, 1e-2, 1e-2, f"{wire} value")
        x.grad = None
        out.sum().backward()
        close(x.grad, torch.full((8,), float(size)), 0, 0, f"{wire} grad")


# --- handles, join, barrier ------------------------------------------------------------------

@check
def poll_and_synchronize():
    rank, size = rank_size()
    tensor = torch.full((1 << 18,), float(rank + 1))
    handle = hvd.allreduce_async(tensor, op=hvd.Sum, name="poll.big")
    while not hvd.poll(handle):
        pass
    out = hvd.synchronize(handle)
    assert hvd.poll(handle)
    assert torch.equal(out, torch.full((1 << 18,), float(size * (size + 1) // 2)))
    raises(ValueError, "already synchronized", lambda: hvd.synchronize(handle))
    raises(TypeError, "expected a dist_sync handle", lambda: hvd.synchronize(out))


@check
def join_with_uneven_steps():
    rank, size = rank_size()
    results = []
    for step in range(rank + 1):
        summed = hvd.allreduce(torch.full((3,), float(rank + 1)), op=hvd.Sum,
                               name=f"join.step{step}")
        averaged = hvd.allreduce(torch.full((3,), float(rank + 1)), name=f"join.avg{step}")
        results.append((summed[0].item(), averaged[0].item()))
    last = hvd.join()
    assert last == size - 1, last
    for step, (summed, averaged) in enumerate(results):
        expected = float(sum(r + 1 for r in range(size) if r >= step))
        assert summed == expected, (step, summed, expected)
        assert abs(averaged - expected / size) < 1e-6, (step, averaged)
    # Usable again after everyone joined.
    assert hvd.allreduce(torch.ones(2), op=hvd.Sum).tolist() == [size, size]


@check
def barrier_and_basics():
    rank, size = rank_size()
    for _ in range(3):
        assert hvd.barrier() is None
    assert hvd.is_initialized() and 0 <= hvd.local_rank() < hvd.local_size() <= size
    assert 0 <= hvd.cross_rank() < hvd.cross_size()
    assert hvd.mpi_enabled() and hvd.mpi_built()
    assert not hvd.gloo_enabled() and not hvd.gloo_built() and hvd.nccl_built() == 0
    assert not (hvd.ddl_built() or hvd.ccl_built() or hvd.rocm_built())
    assert hvd.cuda_built() == torch.backends.cuda.is_built()  # CUDA tensors are staged
    assert isinstance(hvd.mpi_threads_supported(), bool)


@check
def inplace_results_bump_the_version_counter():
    rank, size = rank_size()
    x = torch.ones(3, requires_grad=True)
    y = x * 1.0
    z = y * y  # saves y for backward
    hvd.allreduce_(y.detach(), op=hvd.Sum)  # the engine writes y's memory behind autograd
    raises(RuntimeError, "modified by an inplace operation", lambda: z.sum().backward())
    with torch.inference_mode():
        frozen = torch.ones(2)
    assert hvd.allreduce_(frozen, op=hvd.Sum).tolist() == [size, size]
    assert hvd.broadcast_(frozen, 0).tolist() == [size, size]


# --- error paths -----------------------------------------------------------------------------

@check
def op_argument_errors():
    x = torch.ones(3)
    raises(ValueError, "supersedes average", lambda: hvd.allreduce(x, average=True, op=hvd.Sum))
    raises(NotImplementedError, "Adasum combines whole tensors",
           lambda: hvd.reducescatter(torch.ones(4), op=hvd.Adasum))
    raises(ValueError, "op must be one of", lambda: hvd.allreduce_async(x, op=7))
    raises(TypeError, "prescale_factor must be a number",
           lambda: hvd.allreduce(x, prescale_factor="2"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = hvd.allreduce(torch.ones(3), average=False)
    assert any(issubclass(w.category, DeprecationWarning) and "deprecated" in str(w.message)
               for w in caught), caught
    assert out.tolist() == [hvd.size()] * 3


@check
def tensor_argument_errors():
    x = torch.ones(4, 4)
    raises(TypeError, "unsupported dtype torch.bool", lambda: hvd.allreduce(x > 0))
    raises(TypeError, "unsupported dtype torch.complex64",
           lambda: hvd.allgather_async(torch.ones(2, dtype=torch.complex64)))
    raises(TypeError, "expects a torch.Tensor", lambda: hvd.allreduce_async([1.0, 2.0]))
    raises(TypeError, "expects a dense tensor", lambda: hvd.allreduce_async(x.to_sparse()))
    raises(hvd.DistSyncError, "device meta are not supported",
           lambda: hvd.allreduce_async(torch.ones(2, device="meta")))
    for fn, label in ((hvd.allreduce_, "allreduce_"), (hvd.allreduce_async_, "allreduce_"),
                      (lambda t: hvd.broadcast_(t, 0), "broadcast_"),
                      (lambda t: hvd.broadcast_async_(t, 0), "broadcast_")):
        raises(ValueError, f"{label} works in place and needs a contiguous tensor",
               lambda: fn(x.t()))
    raises(ValueError, "grouped_allreduce_ (item 1) works in place",
           lambda: hvd.grouped_allreduce_([torch.ones(2), x.t()]))
    raises(TypeError, "non-empty list", lambda: hvd.grouped_allreduce([]))
    raises(TypeError, "non-empty list", lambda: hvd.grouped_allreduce_async_([]))
    raises(ValueError, "root_rank 99 does not exist", lambda: hvd.broadcast(x, 99))
    raises(ValueError, "root_rank -1 does not exist", lambda: hvd.broadcast_async_(x, -1))
    raises(TypeError, "root_rank must be an int", lambda: hvd.broadcast(x, "0"))
    raises(ValueError, "entries but there are", lambda: hvd.alltoall(x, splits=[4] * 7))
    raises(ValueError, "sum to", lambda: hvd.alltoall(x, splits=[5] + [0] * (hvd.size() - 1)))
    raises(TypeError, "splits must hold integers",
           lambda: hvd.alltoall(x, splits=torch.ones(hvd.size())))
    raises(ValueError, "at least one dimension", lambda: hvd.alltoall(torch.tensor(1.0)))
    raises(ValueError, "at least one dimension", lambda: hvd.reducescatter(torch.tensor(1.0)))
    raises(TypeError, "device must be an int", lambda: hvd.join(device="cpu"))


@check
def double_backward_is_refused():
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    out = hvd.allreduce(x, op=hvd.Sum)
    (grad,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    raises(RuntimeError, "marked with @once_differentiable", lambda: grad.sum().backward())


if __name__ == "__main__":
    check.main()
