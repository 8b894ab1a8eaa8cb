"""Bad input through the numpy and torch APIs under mpirun: each misuse raises a clear exception
of the documented type with a message saying what is wrong, and the engine keeps working
afterwards (every worker case is followed by a correct allreduce). One mpirun launch per API and
size; the messages of every rank are checked case by case."""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Tuple

import pytest

from tests.support import harness

SUPPORTED_NUMPY = "dist_sync supports uint8, int8, int16, int32, int64, float16, bfloat16 (torch), float32, float64"
SUPPORTED_TORCH = "dist_sync supports torch.uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64"
NOT_INITIALIZED = "DistSyncError: dist_sync is not initialized: call dist_sync.init() (or hvd.init()) first"
NOT_A_HANDLE = "TypeError: expected a dist_sync handle (returned by an *_async call), got "

# case -> the substrings its message must contain ({size}: the number of ranks).
NUMPY_CASES: Dict[str, Tuple[str, ...]] = {
    "before_init_allreduce": (NOT_INITIALIZED,),
    "before_init_async": (NOT_INITIALIZED,),
    "before_init_rank": (NOT_INITIALIZED,),
    "before_init_broadcast": (NOT_INITIALIZED,),
    "before_init_barrier": (NOT_INITIALIZED,),
    "none": ("TypeError: allreduce expects a numpy.ndarray, got NoneType",),
    "none_inplace": ("TypeError: allreduce_ expects a numpy.ndarray, got NoneType",),
    "none_broadcast": ("TypeError: broadcast expects a numpy.ndarray, got NoneType",),
    "none_allgather": ("TypeError: allgather expects a numpy.ndarray, got NoneType",),
    "none_alltoall": ("TypeError: alltoall expects a numpy.ndarray, got NoneType",),
    "none_reducescatter": ("TypeError: reducescatter expects a numpy.ndarray, got NoneType",),
    "none_grouped": ("TypeError: grouped_allreduce expects a non-empty list of numpy arrays",),
    "none_in_group": ("TypeError: grouped_allreduce (item 1) expects a numpy.ndarray, got NoneType",),
    "scalar": ("TypeError: allreduce expects a numpy.ndarray, got float", "numpy.asarray"),
    "name_type": ("TypeError: name must be a str or None, got int",),
    "op_string": ("ValueError: op must be one of dist_sync.Average, Sum, Min, Max, Product; got 'sum'",),
    "root_type": ("TypeError: root_rank must be an int, got str",),
    "prescale_type": ("TypeError: prescale_factor must be a number, got str",),
    "splits_float": ("TypeError: splits must be a sequence of ints, got [1.5, 0.5",),
    "splits_length": ("ValueError: splits has {size_plus_1} entries but there are {size} ranks",),
    "splits_negative": ("ValueError: splits must be non-negative, got [2, -1",),
    "alltoall_uneven": ("ValueError: alltoall without splits needs the first dimension "
                        "({size_plus_1}) to be divisible by the number of ranks ({size})",),
    "dtype_complex64": ("TypeError: unsupported dtype complex64; " + SUPPORTED_NUMPY,),
    "dtype_uint16": ("TypeError: unsupported dtype uint16; ",),
    "dtype_uint64": ("TypeError: unsupported dtype uint64; ",),
    "dtype_object": ("TypeError: unsupported dtype object; ",),
    "dtype_<U3": ("TypeError: unsupported dtype <U3; ",),
    "dtype_datetime64[D]": ("TypeError: unsupported dtype datetime64[D]; ",),
    "dtype_longdouble": ("TypeError: unsupported dtype float128; ",),
    "non_contiguous_broadcast_": ("ValueError: broadcast_ works in place and needs a C-contiguous",
                                  "strides (32,) for shape (4,)"),
    "non_contiguous_grouped_": ("ValueError: grouped_allreduce_ (item 1) works in place and needs "
                                "a C-contiguous",),
    "read_only_inplace": ("ValueError: allreduce_ works in place but the array is read-only",),
    "root_negative": ("ValueError: root_rank -1 does not exist: ranks are 0..{last}",),
    "synchronize_none": (NOT_A_HANDLE + "NoneType",),
    "poll_foreign": (NOT_A_HANDLE + "str",),
    "init_other_settings": ("ValueError: dist_sync is already initialized; init() cannot change "
                            "fusion_threshold_bytes=1 (running with 67108864): call shutdown() first",),
    "init_unknown_setting": ("TypeError: unknown dist_sync setting(s) ['fusion_treshold_bytes']",),
    "handle_of_earlier_session": ("ValueError: <dist_sync.Handle allreduce 'old.session' "
                                  "synchronized> belongs to an earlier dist_sync session",),
    "after_shutdown_rank": (NOT_INITIALIZED,),
    "after_shutdown_allreduce": ("DistSyncError: dist_sync is not running: dist_sync was shut down",
                                 "Call init() again on every rank"),
}

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
    "op_unknown": ("ValueError: op must be one of dist_sync.Average, Sum, Min, Max, Product; got 17",),
    "non_contiguous_allreduce_": ("ValueError: allreduce_ works in place and needs a contiguous "
                                  "tensor; got shape (3, 4) with strides (1, 3)",),
    "non_contiguous_broadcast_": ("ValueError: broadcast_ works in place and needs a contiguous",),
    "non_contiguous_grouped_": ("ValueError: grouped_allreduce_ (item 1) works in place",),
    "root_missing": ("ValueError: root_rank {size} does not exist: ranks are 0..{last}",),
    "root_negative": ("ValueError: root_rank -1 does not exist",),
    "splits_sum": ("ValueError: splits [{ones}] sum to {size} but the first dimension is 5",),
    "splits_float_tensor": ("TypeError: splits must hold integers, got a torch.float32 tensor",),
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


@lru_cache(maxsize=None)
def messages(worker: str, np_: int) -> List[Dict[str, str]]:
    """Every rank's case -> message of one launch (shared by the cases of that launch)."""
    return harness.run_ok(worker, np_, timeout=180)


def check(worker: str, np_: int, case: str, expected: Tuple[str, ...]) -> None:
    last = np_ - 1
    others = f"rank 0" if np_ == 2 else "ranks " + ", ".join(str(r) for r in range(last))
    values = dict(size=np_, size_plus_1=np_ + 1, last=last, others=others,
                  ones=", ".join(["1"] * np_))
    for rank, by_case in enumerate(messages(worker, np_)):
        if case == "duplicate_name" and rank == last:
            continue  # the last rank submits late and never reuses the name
        assert case in by_case, f"rank {rank}: case {case} did not run"
        for text in expected:
            assert text.format(**values) in by_case[case], f"rank {rank}: {by_case[case]}"


@pytest.mark.parametrize("np_", [2, 3])
@pytest.mark.parametrize("case", sorted(NUMPY_CASES))
def test_numpy_bad_input(case, np_):
    check("bad_input", np_, case, NUMPY_CASES[case])


@pytest.mark.parametrize("np_", [2, 3])
@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_torch_bad_input(case, np_):
    check("torch_bad_input", np_, case, TORCH_CASES[case])


@pytest.mark.parametrize("worker,cases", [("bad_input", NUMPY_CASES), ("torch_bad_input", TORCH_CASES)])
def test_every_worker_case_is_checked(worker, cases):
    ran = set(messages(worker, 2)[0])
    assert ran == set(cases), f"unchecked: {sorted(ran - set(cases))}; missing: {sorted(set(cases) - ran)}"
