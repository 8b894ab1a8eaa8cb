"""Shared by the torch workers: their Registry (torch seeded before the session), conversions
between torch tensors and tests/support/reference.py's numpy storage (bfloat16 as uint16 bit
patterns), and the allreduce sweep the CPU and CUDA workers share."""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import torch

import dist_sync.torch as hvd
from tests.support.reference import compare, make_input
from tests.support.worker import Registry

# reference.py's op names -> dist_sync.torch's ops.
OP = {"sum": hvd.Sum, "average": hvd.Average, "min": hvd.Min, "max": hvd.Max,
      "product": hvd.Product}
TORCH_DTYPES = {"uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16,
                "int32": torch.int32, "int64": torch.int64, "float16": torch.float16,
                "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def torch_registry() -> Registry:
    """A worker's Registry whose session starts from torch's seed 0, so checks that draw random
    tensors draw the same ones on every rank and in every launch."""
    return Registry(setup=lambda: torch.manual_seed(0))


def to_torch(storage: np.ndarray, dtype: str) -> torch.Tensor:
    """reference.make_input's storage array as a torch tensor of `dtype`."""
    if dtype == "bfloat16":
        return torch.from_numpy(storage.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(storage.copy())


def to_storage(tensor: torch.Tensor, dtype: str) -> np.ndarray:
    """A torch tensor as reference.py's storage array (bfloat16 -> uint16 bits)."""
    tensor = tensor.detach().contiguous()
    if dtype == "bfloat16":
        return tensor.view(torch.int16).numpy().view(np.uint16).copy()
    return tensor.numpy().copy()


def digest(tensors: List[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().reshape(-1).clone()
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def close(got: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float, what: str) -> None:
    got64, exp64 = got.detach().double(), expected.detach().double()
    if got64.shape != exp64.shape:
        raise AssertionError(f"{what}: shape {tuple(got64.shape)} != {tuple(exp64.shape)}")
    if not torch.allclose(got64, exp64, rtol=rtol, atol=atol):
        diff = (got64 - exp64).abs().max().item()
        raise AssertionError(f"{what}: max abs difference {diff:.3g} (rtol {rtol}, atol {atol})"
                             f"\n got {got64.flatten()[:6].tolist()}\n expected "
                             f"{exp64.flatten()[:6].tolist()}")


def raises(exception: type, fragment: str, fn: Callable[[], Any]) -> str:
    """Runs fn, requires it to raise `exception` whose message contains `fragment`."""
    try:
        fn()
    except exception as error:
        message = str(error)
        if fragment not in message:
            raise AssertionError(f"{exception.__name__} raised but message lacks {fragment!r}: "
                                 f"{message!r}") from error
        return message
    raise AssertionError(f"expected {exception.__name__} containing {fragment!r}; nothing raised")


def strided(tensor: torch.Tensor) -> torch.Tensor:
    """The same values as a non-contiguous view (every other element of a wider buffer), on the
    tensor's device."""
    base = torch.zeros((tensor.numel(), 2), dtype=tensor.dtype, device=tensor.device)
    base[:, 1] = tensor.reshape(-1)
    view = base[:, 1].reshape(tensor.shape)
    assert not view.is_contiguous() or tensor.numel() <= 1
    return view


def allreduce_sweep(dtypes: Sequence[str], ops: Sequence[str], counts: Sequence[int], seed: int,
                    place: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
                    storage: Callable[[torch.Tensor, str], np.ndarray] = to_storage,
                    keep: Callable[[int], bool] = lambda count: True) -> Dict[str, str]:
    """Every allreduce form (plain, strided input, in place, async, async in place) for each
    dtype, op and element count, against tests/support/reference.py. ``place`` puts an input
    where the test wants it (a device), ``storage`` turns a result into reference storage
    (checking where it lives), ``keep`` says which counts' results enter the digest
    (bit-identical on every rank)."""
    rank, size = hvd.rank(), hvd.size()
    failures, outputs = [], []
    for dtype in dtypes:
        for op in ops:
            code = OP[op]
            for count in counts:
                inputs = [make_input(seed, r, count, dtype, op) for r in range(size)]
                mine = place(to_torch(inputs[rank], dtype))
                forms = {
                    "allreduce": lambda: hvd.allreduce(mine, op=code),
                    "strided": lambda: hvd.allreduce(strided(mine), op=code),
                    "allreduce_": lambda: hvd.allreduce_(mine.clone(), op=code),
                    "async": lambda: hvd.synchronize(hvd.allreduce_async(mine, op=code)),
                    "async_": lambda: hvd.synchronize(hvd.allreduce_async_(mine.clone(), op=code)),
                }
                for form, run in forms.items():
                    out = run()
                    if out.dtype != TORCH_DTYPES[dtype] or out.shape != mine.shape:
                        failures.append(f"{dtype}/{op}/{count}/{form}: {out.dtype} {out.shape}")
                        continue
                    problem = compare(storage(out, dtype), inputs, dtype, op)
                    if problem:
                        failures.append(f"{dtype}/{op}/{count}/{form}: {problem}")
                    if keep(count):
                        outputs.append(out.cpu())
    assert not failures, failures[:5]
    return {"digest": digest(outputs)}
