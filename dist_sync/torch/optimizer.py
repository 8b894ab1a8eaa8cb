"""DistributedOptimizer: wraps any torch.optim optimizer so gradients are averaged over ranks.

Note [Gradient overlap]
Each parameter gets a post-accumulate-grad hook. When a gradient is complete (after
``backward_passes_per_step`` backward passes) its allreduce is submitted at once, in place on
``p.grad``, while autograd keeps computing the remaining gradients; the engine fuses whatever is
ready into few ring passes. ``step()`` (or ``synchronize()``) submits what did not arrive (a
parameter unused this step contributes zeros, so no rank waits for it forever), waits, and only
then lets the wrapped optimizer update. Every reduction is named after its parameter, so after
the first step the engine answers negotiation from its response cache.

Differences from ``horovod.torch.DistributedOptimizer`` (each fixes a trap):

- Without ``named_parameters`` Horovod names parameters ``allreduce.noname.<i>`` with ``i``
  restarting in every param group, so two groups collide; dist_sync numbers them across groups.
- The wrapper shares the given optimizer's state instead of re-running its constructor, so an
  optimizer that already has state (loaded from a checkpoint) keeps it, and optimizers whose
  constructor needs arguments work.
- Hooks are installed for every world size, including 1, so errors and semantics don't change
  with the number of ranks.
- ``step()`` after ``synchronize()`` does not reduce the gradients a second time (Horovod
  reduces again, which changes clipped gradients when the average is not exact); it warns as
  Horovod does, and the ``skip_synchronize()`` context still silences that.
- Misuse raises :class:`dist_sync.DistSyncError` (a RuntimeError) with a message saying what to
  change, where Horovod raises bare AssertionErrors.
- Every wrapper gets its own name prefix (``DistributedOptimizer.``, ``DistributedOptimizer1.``,
  ...), so two optimizers over models with the same parameter names (a GAN) don't collide in the
  engine. Every rank must therefore create its DistributedOptimizers in the same order.
- Parameters that become trainable after wrapping (``requires_grad_()`` on a frozen layer, or
  ``add_param_group``) are reduced from the next ``synchronize()``/``step()`` on; Horovod only
  hooks the parameters trainable at construction and silently leaves the others local.
- Parameters whose gradient is None at ``synchronize()`` (unused this step) are reduced as
  zeros and get that result as their gradient, as in Horovod; the wrapped optimizer then
  updates them (momentum, weight decay) where a single process would have skipped them.
- Sparse gradients are allgathered (indices and values) for Average and Sum; other ops and
  parameters in ``groups`` reduce them densely. Compression does not apply to sparse gradients.
"""
from __future__ import annotations

import itertools
import logging
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import torch

from .. import _core
from .._process_sets import ProcessSet, global_process_set, included, resolve
from .._reduce_op import Average, ReduceOp, Sum
from .._session import DistSyncError, synchronize as _wait
from . import mpi_ops as ops
from .compression import Compression, Compressor

logger = logging.getLogger(__name__)

_instance_counter = itertools.count()
_wrapper_classes: Dict[type, type] = {}


class _DistributedOptimizer(torch.optim.Optimizer):
    """Mixin placed in front of the wrapped optimizer's class (see :func:`DistributedOptimizer`).
    Never instantiated on its own."""

    # Set by _ds_setup; declared for readers and type checkers.
    _ds_units: List[List[torch.Tensor]]
    _ds_unit_names: List[str]
    _ds_unit_grouped: List[bool]
    _ds_unit_of: Dict[torch.Tensor, int]
    _ds_names: Dict[torch.Tensor, str]

    def _ds_setup(self, named_parameters: Optional[Iterable[Tuple[str, torch.Tensor]]],
                  compression: type[Compressor], backward_passes_per_step: int, op: ReduceOp,
                  gradient_predivide_factor: float, groups: Any, sparse_as_dense: bool,
                  process_set: Any) -> None:
        all_params = [p for group in self.param_groups for p in group["params"]]
        names = _parameter_names(named_parameters, all_params)
        index = next(_instance_counter)
        prefix = "DistributedOptimizer." if index == 0 else f"DistributedOptimizer{index}."
        self._ds_compression = compression
        self._ds_op = op
        self._ds_process_set = process_set
        # A rank outside the process set steps its optimizer locally (Horovod's semantics).
        self._ds_local_only = not _included(process_set)
        if self._ds_local_only:
            groups = None
        self._ds_predivide = float(gradient_predivide_factor)
        self._ds_sparse_as_dense = bool(sparse_as_dense)
        self.backward_passes_per_step = backward_passes_per_step
        self._ds_names = {p: names[p] for p in all_params}
        self._ds_units, self._ds_unit_names, self._ds_unit_grouped = [], [], []
        grouped: Set[torch.Tensor] = set()
        for number, members in enumerate(_parameter_groups(groups, all_params)):
            members = [p for p in members if p.requires_grad]
            if members:
                grouped.update(members)
                self._ds_units.append(members)
                self._ds_unit_names.append(f"{prefix}group.{number}")
                self._ds_unit_grouped.append(True)
        self._ds_prefix = prefix
        self._ds_unit_of = {p: u for u, members in enumerate(self._ds_units) for p in members}
        self._ds_delay = {p: backward_passes_per_step for p in grouped}
        self._ds_ready: Dict[int, Set[torch.Tensor]] = {}
        self._ds_in_flight: Dict[int, Callable[[], None]] = {}
        self._ds_backward_seen = False
        self._ds_synchronized = False
        self._ds_should_synchronize = True
        self._ds_hooks = [p.register_post_accumulate_grad_hook(self._ds_on_gradient)
                          for p in grouped]
        self._ds_given_names = dict(names)
        self._ds_track_new_parameters()

    def _ds_track_new_parameters(self) -> None:
        """Starts reducing parameters that are trainable but not tracked yet: all of them at
        construction, and later those unfrozen (``requires_grad_()``) or added with
        ``add_param_group`` (Horovod silently leaves both unreduced). Every rank must make the
        same change; units are created in param_groups order so names agree."""
        if self._ds_local_only:
            return
        for group_index, group in enumerate(self.param_groups):
            for position, p in enumerate(group["params"]):
                if not p.requires_grad or p in self._ds_unit_of:
                    continue
                name = self._ds_names.get(p) or self._ds_given_names.get(p) or \
                    f"param_groups.{group_index}.{position}"
                self._ds_names[p] = name
                self._ds_unit_of[p] = len(self._ds_units)
                self._ds_units.append([p])
                self._ds_unit_names.append(self._ds_prefix + name)
                self._ds_unit_grouped.append(False)
                self._ds_delay[p] = self.backward_passes_per_step
                self._ds_hooks.append(p.register_post_accumulate_grad_hook(self._ds_on_gradient))

    # --- hooks and reductions ----------------------------------------------------------------

    def _ds_on_gradient(self, p: torch.Tensor) -> None:
        if self._ds_delay[p] <= 0:
            raise DistSyncError(
                f"the gradient of '{self._ds_names[p]}' was computed more than "
                f"backward_passes_per_step={self.backward_passes_per_step} time(s) before "
                f"step() or synchronize(): its allreduce was already running. Pass "
                f"backward_passes_per_step=<backward passes per step> to DistributedOptimizer "
                f"to accumulate gradients locally, or call step() after each backward pass")
        self._ds_backward_seen = True
        self._ds_delay[p] -= 1
        if self._ds_delay[p] == 0:
            unit = self._ds_unit_of[p]
            ready = self._ds_ready.setdefault(unit, set())
            ready.add(p)
            if len(ready) == len(self._ds_units[unit]):
                self._ds_in_flight[unit] = self._ds_start(unit)

    def _ds_scales(self) -> Tuple[float, float]:
        # The predivide factor splits Average's division between input and output, so fp16
        # sums don't overflow (Horovod's semantics); the engine then divides by size().
        if int(self._ds_op) == int(Average):
            return 1.0 / self._ds_predivide, self._ds_predivide
        return 1.0, 1.0

    def _ds_start(self, unit: int) -> Callable[[], None]:
        """Submits one unit's allreduce; returns the function that waits and installs the
        result as the gradient."""
        params = self._ds_units[unit]
        name = self._ds_unit_names[unit]
        for p in params:
            if p.grad is None:
                # Unused on this rank this step; another rank may have used it.
                logger.debug("%s has no gradient; reducing zeros", self._ds_names[p])
                p.grad = torch.zeros_like(p)
        if (not self._ds_unit_grouped[unit] and params[0].grad.is_sparse and not self._ds_sparse_as_dense
                and int(self._ds_op) in (int(Average), int(Sum))):
            return self._ds_start_sparse(params[0], name)
        sends, contexts = [], []
        sparse = [p.grad.is_sparse for p in params]
        for p in params:
            if p.grad.is_sparse:
                p.grad = p.grad.to_dense()
            compressed, context = self._ds_compression.compress(p.grad)
            sends.append(compressed if compressed.is_contiguous() else compressed.contiguous())
            contexts.append(context)
        pre, post = self._ds_scales()
        if not self._ds_unit_grouped[unit]:
            handle = ops.allreduce_async_(sends[0], name=name, op=self._ds_op,
                                          prescale_factor=pre, postscale_factor=post,
                                          process_set=self._ds_process_set)
        else:
            handle = ops.grouped_allreduce_async_(sends, name=name, op=self._ds_op,
                                                  prescale_factor=pre, postscale_factor=post,
                                                  process_set=self._ds_process_set)

        grads = [p.grad for p in params]

        def complete() -> None:
            _wait(handle)
            for p, grad, sent, context in zip(params, grads, sends, contexts):
                if p.grad is not grad:
                    raise DistSyncError(
                        f"the gradient of '{self._ds_names[p]}' was replaced or reset (for "
                        f"example by model.zero_grad() or p.grad = None) between backward() and "
                        f"step() while its allreduce was running; the averaged gradient was "
                        f"dropped. Call zero_grad() before backward() or after step()")
                result = self._ds_compression.decompress(sent, context)
                if result is not grad:
                    grad.copy_(result)
            # Reduced densely, handed back in the layout the optimizer expects (SparseAdam).
            for p, was_sparse in zip(params, sparse):
                if was_sparse:
                    p.grad = p.grad.to_sparse()
        return complete

    def _ds_start_sparse(self, p: torch.Tensor, name: str) -> Callable[[], None]:
        grad = p.grad.coalesce()
        indices = ops.allgather_async(grad.indices().t().contiguous(), name=f"{name}.indices",
                                      process_set=self._ds_process_set)
        values = ops.allgather_async(grad.values(), name=f"{name}.values",
                                     process_set=self._ds_process_set)
        divisor = resolve(self._ds_process_set, "DistributedOptimizer").size \
            if int(self._ds_op) == int(Average) else 1

        def complete() -> None:
            all_indices, all_values = _wait(indices), _wait(values)
            if divisor != 1:
                all_values = all_values / divisor
            # Indices come from every rank's coalesced gradient of the same shape: valid, so
            # skip torch's invariant check.
            p.grad = torch.sparse_coo_tensor(all_indices.t(), all_values, grad.shape,
                                             check_invariants=False).coalesce()
        return complete

    # --- public API --------------------------------------------------------------------------

    def synchronize(self) -> None:
        """Finishes every gradient allreduce (starting those whose hooks did not fire) and
        installs the averaged gradients. Call it before modifying gradients (clipping), then
        call ``step()`` inside ``skip_synchronize()``."""
        self._ds_track_new_parameters()
        errors: List[Exception] = []
        try:
            for unit in range(len(self._ds_units)):
                if unit not in self._ds_in_flight:
                    self._ds_in_flight[unit] = self._ds_start(unit)
        except Exception as error:  # noqa: BLE001 - the started ones are still awaited
            errors.append(error)
        # Every started reduction is awaited even after one fails, so none is left running
        # under its name: the next step can submit it again (Note [Gradient overlap]).
        for unit in sorted(self._ds_in_flight):
            try:
                self._ds_in_flight[unit]()
            except Exception as error:  # noqa: BLE001 - the first one is raised below
                errors.append(error)
        self._ds_in_flight.clear()
        self._ds_ready.clear()
        for p in self._ds_delay:
            self._ds_delay[p] = self.backward_passes_per_step
        self._ds_backward_seen = False
        if errors:
            if len(errors) > 1 and isinstance(errors[0], DistSyncError):
                raise DistSyncError(f"{errors[0]} (and {len(errors) - 1} more failed "
                                    f"reduction(s) in this step)") from errors[0]
            raise errors[0]
        self._ds_synchronized = True

    @property
    def _parameter_names(self) -> Dict[torch.Tensor, str]:
        """Parameter -> the name its allreduce uses (Horovod's attribute, which scripts and
        Horovod's tests read)."""
        return dict(self._ds_names)

    @contextmanager
    def skip_synchronize(self) -> Iterator[None]:
        """Within this context ``step()`` does not synchronize (use after an explicit
        ``synchronize()``)."""
        self._ds_should_synchronize = False
        try:
            yield
        finally:
            self._ds_should_synchronize = True

    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Synchronizes the gradients (unless already done since the last backward pass, or
        inside ``skip_synchronize()``), then runs the wrapped optimizer's step."""
        if self._ds_should_synchronize and (not self._ds_synchronized
                                            or self._ds_backward_seen):
            self.synchronize()
        elif self._ds_should_synchronize:
            # Horovod's warning, word for word at the start, so code that filters it still does.
            warnings.warn("optimizer.step() called without optimizer.skip_synchronize() context "
                          "after optimizer.synchronize(); dist_sync does not reduce the "
                          "gradients again (Horovod does). Call step() inside "
                          "optimizer.skip_synchronize() to say so.", UserWarning, stacklevel=2)
        self._ds_synchronized = False
        return super().step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad``; refuses while gradients are being reduced."""
        if self._ds_backward_seen or self._ds_in_flight:
            raise DistSyncError(
                "optimizer.zero_grad() was called after loss.backward() but before "
                "optimizer.step() or optimizer.synchronize(); the gradients are being (or are "
                "about to be) allreduced in place. Call zero_grad() before the backward pass or "
                "after step()")
        super().zero_grad(set_to_none=set_to_none)

    def _ds_reset(self) -> None:
        """Forgets the reductions of a session that an elastic reset ended (they failed with the
        lost rank) and drops the gradients, so the next backward pass starts afresh."""
        self._ds_in_flight.clear()
        self._ds_ready.clear()
        for p in self._ds_delay:
            self._ds_delay[p] = self.backward_passes_per_step
        self._ds_backward_seen = False
        self._ds_synchronized = False
        super().zero_grad(set_to_none=True)

    def set_backward_passes_per_step(self, passes: int) -> None:
        """Changes how many backward passes are accumulated before gradients are reduced."""
        _check_passes(passes)
        self.backward_passes_per_step = passes
        for p in self._ds_delay:
            self._ds_delay[p] = passes


def _included(process_set: Any) -> bool:
    return included(process_set, "DistributedOptimizer")


def _check_passes(passes: Any) -> None:
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"backward_passes_per_step must be a positive integer, got {passes!r}")


def _parameter_names(named_parameters: Optional[Iterable[Tuple[str, torch.Tensor]]],
                     params: Sequence[torch.Tensor]) -> Dict[torch.Tensor, str]:
    if named_parameters is None:
        # One counter across all param groups (Horovod restarts it per group, so names collide).
        return {p: f"allreduce.noname.{i}" for i, p in enumerate(params)}
    pairs = list(named_parameters)
    if any(not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
                and isinstance(pair[1], torch.Tensor)) for pair in pairs):
        raise ValueError("named_parameters should be a sequence of (name, parameter) tuples, "
                         "usually produced by model.named_parameters()")
    seen: Set[str] = set()
    duplicates = sorted({name for name, _ in pairs if name in seen or seen.add(name)})
    if duplicates:
        raise ValueError(f"Parameter names in named_parameters must be unique. Found "
                         f"duplicates: {', '.join(duplicates)}")
    by_param = {p: name for name, p in pairs}
    missing = [(i, tuple(p.shape)) for i, p in enumerate(params) if p not in by_param]
    if missing:
        described = ", ".join(f"#{i} (shape {list(shape)})" for i, shape in missing[:10])
        raise ValueError(f"named_parameters was specified, but {len(missing)} parameter(s) of "
                         f"the optimizer are not named: {described} (positions in the "
                         f"optimizer's param_groups). Pass model.named_parameters() of the model "
                         f"the optimizer trains")
    return by_param  # includes names of parameters added later with add_param_group


def _parameter_groups(groups: Any, params: Sequence[torch.Tensor]) -> List[List[torch.Tensor]]:
    if groups is None:
        return []
    if isinstance(groups, int) and not isinstance(groups, bool):
        if groups <= 0:
            raise ValueError(f"groups should be a positive integer or a list of lists of "
                             f"parameters, got {groups}")
        count = min(groups, len(params))
        # Contiguous, nearly equal slices of the parameters in optimizer order.
        bounds = [len(params) * i // count for i in range(count + 1)] if count else [0]
        return [list(params[bounds[i]:bounds[i + 1]]) for i in range(count)]
    if not isinstance(groups, list):
        raise ValueError(f"groups should be a positive integer or a list of lists of "
                         f"parameters, got {type(groups).__name__}")
    known = set(params)
    seen: Set[torch.Tensor] = set()
    result = []
    for members in groups:
        if not isinstance(members, (list, tuple)):
            raise ValueError(f"groups should be a list of lists of parameters; found an item "
                             f"of type {type(members).__name__}")
        for p in members:
            if not isinstance(p, torch.Tensor):
                raise ValueError(f"groups must consist of torch.Tensor, found "
                                 f"{type(p).__name__}")
            if p in seen:
                raise ValueError(f"a parameter (shape {list(p.shape)}) appears more than once "
                                 f"in groups")
            if p not in known:
                raise ValueError(f"groups contains a tensor (shape {list(p.shape)}) that is not "
                                 f"a parameter of the optimizer")
            seen.add(p)
        result.append(list(members))
    return result


def _wrapper_class(base: type) -> type:
    cls = _wrapper_classes.get(base)
    if cls is None:
        # Same class name as the wrapped optimizer (repr, logging), with the mixin in front.
        cls = type(base.__name__, (_DistributedOptimizer, base), {"__module__": __name__})
        _wrapper_classes[base] = cls
    return cls


def DistributedOptimizer(optimizer: torch.optim.Optimizer,
                         named_parameters: Optional[Iterable[Tuple[str, torch.Tensor]]] = None,
                         compression: type[Compressor] = Compression.none,
                         backward_passes_per_step: int = 1, op: ReduceOp = Average,
                         gradient_predivide_factor: float = 1.0, num_groups: int = 0,
                         groups: Any = None, sparse_as_dense: bool = False,
                         process_set: ProcessSet = global_process_set) -> torch.optim.Optimizer:
    """Wraps ``optimizer`` so that ``step()`` applies gradients averaged over all ranks.

    Allreduces start from autograd hooks as soon as each gradient is ready, overlapping the
    rest of the backward pass (Note [Gradient overlap]); ``step()`` waits for them. The result is
    an instance of the optimizer's own class (``isinstance(opt, torch.optim.SGD)`` holds, LR
    schedulers work) that shares the given optimizer's state; use the result from now on.

    Gradient clipping::

        loss.backward()
        optimizer.synchronize()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        with optimizer.skip_synchronize():
            optimizer.step()

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        named_parameters: ``model.named_parameters()``; names the allreduces (must be unique and
            cover every parameter of the optimizer). Default: numbered names.
        compression: ``Compression.none``, ``Compression.fp16`` or ``Compression.bf16``.
        backward_passes_per_step: backward passes accumulated locally (summed, as PyTorch
            accumulates) before the gradients are reduced.
        op: Average (default), Sum, Min, Max or Product.
        gradient_predivide_factor: with Average, divide gradients by this before the sum and
            multiply by it after (then divide by size()).
        groups: None; an int k to reduce the parameters in k grouped allreduces; or a list of
            lists of parameters, each reduced as one group (others individually). A group's
            allreduce starts when all its gradients are ready.
        num_groups: Horovod's deprecated spelling of ``groups=<int>`` (0: not given).
        sparse_as_dense: reduce sparse gradients as dense tensors (handed back sparse).
        process_set: average over this process set's ranks only (every rank of the set must
            wrap an optimizer over the same parameters); on ranks outside the set the optimizer
            steps locally, as in Horovod.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"DistributedOptimizer wraps a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    if isinstance(optimizer, _DistributedOptimizer):
        raise ValueError("this optimizer is already a DistributedOptimizer; wrapping it twice "
                         "would reduce every gradient twice")
    op = ops.resolve_op(op, None)
    _check_passes(backward_passes_per_step)
    _included(process_set)  # a registered set (or the global one), or ValueError
    if num_groups != 0:
        warnings.warn("num_groups is deprecated; use groups=<int> instead", DeprecationWarning,
                      stacklevel=2)
        if groups is not None:
            raise ValueError("pass either groups or the deprecated num_groups, not both")
        groups = num_groups
    if isinstance(gradient_predivide_factor, bool) or not isinstance(
            gradient_predivide_factor, (int, float)) or gradient_predivide_factor <= 0:
        raise ValueError(f"gradient_predivide_factor must be a positive number, got "
                         f"{gradient_predivide_factor!r}")
    if gradient_predivide_factor != 1.0 and int(op) != int(Average):
        raise ValueError("gradient_predivide_factor is only supported with op=Average")
    for method in ("compress", "decompress"):
        if not callable(getattr(compression, method, None)):
            raise TypeError(f"compression must provide compress() and decompress() (use "
                            f"dist_sync.torch.Compression.none/fp16/bf16), got {compression!r}")
    wrapped = _wrapper_class(type(optimizer)).__new__(_wrapper_class(type(optimizer)))
    wrapped.__dict__.update(optimizer.__dict__)
    wrapped._ds_setup(named_parameters, compression, backward_passes_per_step, op,
                      gradient_predivide_factor, groups, sparse_as_dense, process_set)
    return wrapped


__all__ = ["DistributedOptimizer"]
