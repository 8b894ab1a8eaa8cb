"""Bad input through dist_sync.torch under mpirun: the numpy API's list for torch tensors, each
misuse a clear exception (for disagreements between ranks, from negotiation on every rank), the
engine working afterwards. One mpirun launch per size; the messages of every rank are checked
case by case."""
from __future__ import annotations

from typing import Dict, Tuple

import pytest

from tests.support.bad_input import (NOT_A_HANDLE, NOT_INITIALIZED, check_case,
                                     check_every_case_is_checked)

WORKER = "tests.torch_api.bad_input_worker"
SUPPORTED_TORCH = "dist_sync supports torch.uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64"

# case -> the substrings its message must contain ({size}: the number of ranks).
TORCH_CASES: Dict[str, Tuple[str, ...]] = {
    "before_init_allreduce": (NOT_INITIALIZED,),
    "before_init_async": (NOT_INITIALIZED,),
    "before_init_rank": (NOT_INITIALIZED,),
    "dtype_torch.complex64": ("TypeError: allreduce: unsupported dtype torch.complex64; " + SUPPORTED_TORCH,),
    "dtype_torch.bool": ("TypeError: allreduce: unsupported dtype torch.bool; ",),
    "dtype_torch.uint16": ("TypeError: allreduce: unsupported dtype torch.uint16; ",),
    "dtype_torch.float8_e4m3fn": ("TypeError: allreduce: unsupported dtype torch.float8_e4m3fn; ",),
    "none": ("TypeError: allreduce expects a torch.Tensor, got NoneType",),
    "none_inplace": ("TypeError: allreduce_ expects a torch.Tensor, got NoneType",),
    "none_broadcast": ("TypeError: broadcast expects a torch.Tensor, got NoneType",),
    "none_allgather": ("TypeError: allgather expects a torch.Tensor, got NoneType",),
    "none_grouped": ("TypeError: grouped_allreduce expects a non-empty list of tensors",),
    "numpy_array": ("TypeError: allreduce expects a torch.Tensor, got ndarray",),
    "list": ("TypeError: allreduce expects a torch.Tensor, got list",),
    "sparse": ("TypeError: allreduce_ expects a dense tensor, got layout torch.sparse_coo",),
    "name_type": ("TypeError: name must be a str or None, got int",),
    "root_type": ("TypeError: root_rank must be an int, got str",),
    "op_and_average": ("ValueError: The op parameter supersedes average",),
    "op_unknown": ("ValueError: op must be one of dist_sync.Average, Sum, Adasum, Min, Max, Product; got 17",),
    "non_contiguous_allreduce_": ("ValueError: allreduce_ works in place and needs a contiguous "
                                  "tensor; got shape (3, 4) with strides (1, 3)",),
    "non_contiguous_broadcast_": ("ValueError: broadcast_ works in place and needs a contiguous",),
    "non_contiguous_grouped_": ("ValueError: grouped_allreduce_ (item 1) works in place",),
    "root_missing": ("ValueError: root_rank {size} does not exist: ranks are 0..{last}",),
    "root_negative": ("ValueError: root_rank -1 does not exist",),
    "splits_sum": ("ValueError: splits [{ones}] sum to {size} but the first dimension is 5",),
    "splits_float_tensor": ("SplitsDtypeError: splits must hold integers, got a torch.float32 "
                            "tensor",),  # a TypeError and a ValueError
    "splits_length": ("ValueError: splits has {size_plus_1} entries but there are {size} ranks",),
    "shape_mismatch": ("DistSyncError: Mismatched allreduce 'w.shape': shape differs across ranks: "
                       "(4,) on {others}; (5,) on rank {last}",),
    "dtype_mismatch": ("DistSyncError: Mismatched allreduce 'w.dtype': dtype differs across ranks: "
                       "float32 on {others}; float64 on rank {last}",),
    "duplicate_name": ("ValueError: an operation named 'w.twice' is already in flight on rank ",),
    "synchronize_twice": ("ValueError: <dist_sync.Handle allreduce 'w.handle' synchronized> was "
                          "already synchronized",),
    "synchronize_foreign": (NOT_A_HANDLE + "int",),
    "synchronize_none": (NOT_A_HANDLE + "NoneType",),
    "after_shutdown_allreduce": ("DistSyncError: dist_sync is not running: dist_sync was shut down",),
    "after_shutdown_synchronize": ("DistSyncError: dist_sync is not running: dist_sync was shut down",),
}


@pytest.mark.parametrize("np_", [2, 3])
@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_torch_bad_input(case, np_):
    check_case(WORKER, np_, case, TORCH_CASES[case])


def test_every_worker_case_is_checked():
    check_every_case_is_checked(WORKER, TORCH_CASES)
