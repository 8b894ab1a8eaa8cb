"""Every collective, built once for any framework (Note [Array adapters] in _adapter.py).

Each builder validates the arguments every front end shares, asks the framework's adapter for
the memory (contiguous inputs, outputs), says how the result is made from the engine's answer,
and hands the operation to the adapter's submit. The public functions of dist_sync (numpy) and
dist_sync.torch are thin wrappers that pick the adapter and keep their documented signatures.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

from . import _core
from ._adapter import ArrayAdapter, Entry
from ._process_sets import resolve
from ._reduce_op import engine_op
from ._session import (ALLGATHER, ALLREDUCE, ALLTOALL, BARRIER, BROADCAST, JOIN, REDUCESCATTER,
                       Handle, RawResult, check_name, submit, synchronize)
from ._validation import check_root, check_splits, scale_args


def _article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _written(adapter: ArrayAdapter, tensor: Any) -> Callable[[RawResult], Any]:
    def finish(raw: RawResult) -> Any:
        adapter.mark_written(tensor)
        return tensor
    return finish


def allreduce(adapter: ArrayAdapter, tensor: Any, op: Any, name: Optional[str],
              prescale_factor: Any, postscale_factor: Any, *, in_place: bool,
              what: str, process_set: Any = None) -> Handle:
    """Reduces ``tensor`` over the ranks of ``process_set`` (None: all), into a new tensor or
    (``in_place``) into itself."""
    ps = resolve(process_set, what)
    tensor = adapter.check(tensor, what)
    reduce_op = engine_op(op)
    pre, post = scale_args(prescale_factor, postscale_factor)
    if in_place:
        source = target = adapter.inplace_target(tensor, what)
        finish = _written(adapter, tensor)
    else:
        source = adapter.contiguous_input(tensor, what)
        target = adapter.new_output(source)
        finish = lambda raw: target  # noqa: E731
    return adapter.submit(ALLREDUCE, name, what, [Entry(name or "", source, target)],
                          (source, target), finish, reduce_op=reduce_op,
                          prescale=pre, postscale=post, process_set=ps.id)


def grouped_allreduce(adapter: ArrayAdapter, tensors: Sequence[Any], op: Any,
                      name: Optional[str], prescale_factor: Any, postscale_factor: Any, *,
                      in_place: bool, what: str, process_set: Any = None) -> Handle:
    """Reduces a list of tensors as one unit (negotiated and fused together); the result is the
    list of reduced tensors."""
    ps = resolve(process_set, what)
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError(f"{what} expects a non-empty list of {adapter.plural}")
    reduce_op = engine_op(op)
    pre, post = scale_args(prescale_factor, postscale_factor)
    check_name(name)
    sources: List[Any] = []
    targets: List[Any] = []
    entries = []
    originals = []
    for index, tensor in enumerate(tensors):
        item = f"{what} (item {index})"
        tensor = adapter.check(tensor, item)
        originals.append(tensor)
        if in_place:
            source = target = adapter.inplace_target(tensor, item)
        else:
            source = adapter.contiguous_input(tensor, item)
            target = adapter.new_output(source)
        sources.append(source)
        targets.append(target)
        entries.append(Entry(f"{name or 'group'}.{index}", source, target))
    if in_place:
        def finish(raw: RawResult) -> List[Any]:
            for tensor in originals:
                adapter.mark_written(tensor)
            return originals
    else:
        def finish(raw: RawResult) -> List[Any]:
            return list(targets)
    return adapter.submit(ALLREDUCE, name, what, entries, (sources, targets), finish,
                          reduce_op=reduce_op, prescale=pre, postscale=post, process_set=ps.id)


def broadcast(adapter: ArrayAdapter, tensor: Any, root_rank: Any, name: Optional[str], *,
              in_place: bool, what: str, process_set: Any = None) -> Handle:
    """``root_rank``'s ``tensor`` on every rank (of ``process_set``; ``root_rank`` is a rank of
    the global set), into a new tensor or (``in_place``) into ``tensor``."""
    ps = resolve(process_set, what)
    tensor = adapter.check(tensor, what)
    if in_place:
        source = target = adapter.inplace_target(tensor, what)
        root = check_root(root_rank)
        finish = _written(adapter, tensor)
    else:
        source = adapter.contiguous_input(tensor, what)
        root = check_root(root_rank)
        target = adapter.new_output(source)
        finish = lambda raw: target  # noqa: E731
    entry = Entry(name or "", source, target, copy_in=_core.rank() == root)
    return adapter.submit(BROADCAST, name, what, [entry], (source, target), finish,
                          root=ps.position(root, what), process_set=ps.id)


def allgather(adapter: ArrayAdapter, tensor: Any, name: Optional[str], *, what: str,
              with_rows: bool = False, process_set: Any = None) -> Handle:
    """Every rank's ``tensor`` concatenated along the first dimension (which may differ between
    ranks; a scalar counts as one row). With ``with_rows`` the result is (gathered, rows from each
    rank): the row counts negotiation found anyway (allgather's backward needs them)."""
    ps = resolve(process_set, what)
    source = adapter.as_rows(adapter.contiguous_input(adapter.check(tensor, what), what))

    def finish(raw: RawResult) -> Any:
        gathered = adapter.result(raw, source)
        return (gathered, [int(rows) for rows in raw[2]]) if with_rows else gathered
    return adapter.submit(ALLGATHER, name, what, [Entry(name or "", source)], source, finish,
                          process_set=ps.id)


def _scatter_op(op: Any, what: str) -> "_core.ReduceOp":
    reduce_op = engine_op(op)
    if reduce_op == _core.ReduceOp.ADASUM:
        # NotImplementedError is a RuntimeError, which is what Horovod raises here.
        raise NotImplementedError(f"{what}: Adasum combines whole tensors (allreduce only); use "
                                  f"Average, Sum, Min, Max or Product")
    return reduce_op


def _tensor_list(adapter: ArrayAdapter, tensors: Any, what: str) -> List[Any]:
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError(f"{what} expects a non-empty list of {adapter.plural}")
    return [adapter.check(t, f"{what} (item {i})") for i, t in enumerate(tensors)]


def _pieces(adapter: ArrayAdapter, raw: RawResult, sources: Sequence[Any],
            rows: Sequence[int]) -> List[Any]:
    """The results of a grouped operation: the engine's one output buffer holds each tensor's
    result after the previous one's; tensor i's has rows[i] rows."""
    buffer = memoryview(raw[0]) if raw[0] is not None else memoryview(b"")
    out, offset = [], 0
    for source, count in zip(sources, rows):
        shape = [int(count), *adapter.shape(source)[1:]]
        row_elements = 1
        for extent in shape[1:]:
            row_elements *= int(extent)
        nbytes = int(count) * row_elements * adapter.itemsize(source)
        out.append(adapter.result((buffer[offset:offset + nbytes], shape, [], -1), source))
        offset += nbytes
    return out


def grouped_allgather(adapter: ArrayAdapter, tensors: Sequence[Any], name: Optional[str], *,
                      what: str, process_set: Any = None, with_rows: bool = False) -> Handle:
    """:func:`allgather` of each tensor, negotiated as one unit (one request): the result is the
    list of gathered tensors. With ``with_rows``: (list, rows from each rank per tensor)."""
    ps = resolve(process_set, what)
    sources = [adapter.as_rows(adapter.contiguous_input(t, f"{what} (item {i})"))
               for i, t in enumerate(_tensor_list(adapter, tensors, what))]
    check_name(name)
    entries = [Entry(f"{name or 'group'}.{i}", source) for i, source in enumerate(sources)]

    def finish(raw: RawResult) -> Any:
        splits = [int(r) for r in raw[2]]
        per_tensor = [splits[i * ps.size:(i + 1) * ps.size] for i in range(len(sources))]
        gathered = _pieces(adapter, raw, sources, [sum(rows) for rows in per_tensor])
        return (gathered, per_tensor) if with_rows else gathered
    return adapter.submit(ALLGATHER, name, what, entries, sources, finish, process_set=ps.id)


def grouped_reducescatter(adapter: ArrayAdapter, tensors: Sequence[Any], op: Any,
                          name: Optional[str], prescale_factor: Any, postscale_factor: Any, *,
                          what: str, process_set: Any = None) -> Handle:
    """:func:`reducescatter` of each tensor, negotiated as one unit (one request): the result is
    the list of this rank's pieces."""
    ps = resolve(process_set, what)
    sources = []
    for i, tensor in enumerate(_tensor_list(adapter, tensors, what)):
        item = f"{what} (item {i})"
        source = adapter.contiguous_input(tensor, item)
        if len(adapter.shape(source)) == 0:
            raise ValueError(f"{item} needs {_article(adapter.noun)} with at least one dimension")
        sources.append(source)
    reduce_op = _scatter_op(op, what)
    pre, post = scale_args(prescale_factor, postscale_factor)
    check_name(name)
    entries = [Entry(f"{name or 'group'}.{i}", source) for i, source in enumerate(sources)]
    rows = [reducescatter_rows(adapter.shape(s)[0], ps.size)[ps.rank] for s in sources]
    return adapter.submit(REDUCESCATTER, name, what, entries, sources,
                          lambda raw: _pieces(adapter, raw, sources, rows), reduce_op=reduce_op,
                          prescale=pre, postscale=post, process_set=ps.id)


def alltoall(adapter: ArrayAdapter, tensor: Any, splits: Any, name: Optional[str], *,
             what: str, process_set: Any = None) -> Handle:
    """Rows ``[sum(splits[:p]), sum(splits[:p+1]))`` of ``tensor`` go to rank p (without splits
    the first dimension is divided evenly). The result is (received tensor, rows received from
    each rank)."""
    ps = resolve(process_set, what)
    source = adapter.contiguous_input(adapter.check(tensor, what), what)
    shape = adapter.shape(source)
    if len(shape) == 0:
        raise ValueError(f"{what} needs {_article(adapter.noun)} with at least one dimension")
    values = check_splits(adapter.int_list(splits), shape[0], ps.size)

    def finish(raw: RawResult) -> Any:
        return adapter.result(raw, source), adapter.int_tensor(list(raw[2]))
    return adapter.submit(ALLTOALL, name, what, [Entry(name or "", source)], source, finish,
                          splits=values, process_set=ps.id)


def reducescatter(adapter: ArrayAdapter, tensor: Any, op: Any, name: Optional[str],
                  prescale_factor: Any, postscale_factor: Any, *, what: str,
                  process_set: Any = None) -> Handle:
    """This rank's rows of the reduction of ``tensor`` over all ranks (of ``process_set``): the
    r-th rank gets rows ``[start_r, end_r)``, the first ``rows % size`` ranks one row more than
    the others."""
    ps = resolve(process_set, what)
    source = adapter.contiguous_input(adapter.check(tensor, what), what)
    if len(adapter.shape(source)) == 0:
        raise ValueError(f"{what} needs {_article(adapter.noun)} with at least one dimension")
    reduce_op = _scatter_op(op, what)
    pre, post = scale_args(prescale_factor, postscale_factor)
    return adapter.submit(REDUCESCATTER, name, what, [Entry(name or "", source)], source,
                          lambda raw: adapter.result(raw, source), reduce_op=reduce_op,
                          prescale=pre, postscale=post, process_set=ps.id)


def barrier(process_set: Any = None) -> None:
    """Returns once every rank (of ``process_set``) has called barrier()."""
    ps = resolve(process_set, "barrier")
    synchronize(submit(BARRIER, None, [], None, lambda raw: None, process_set=ps.id))


def join() -> int:
    """Declares that this rank has no more data; returns the rank that joined last (see the
    public join() of each front end)."""
    return synchronize(submit(JOIN, "join", [], None, lambda raw: int(raw[3])))


def reducescatter_rows(rows: int, size: int) -> List[int]:
    """Rows each rank receives from reducescatter of a tensor with ``rows`` rows."""
    return [rows // size + (1 if r < rows % size else 0) for r in range(size)]
