"""Bad input through the numpy API under mpirun: each misuse raises a clear exception of the
documented type with a message saying what is wrong, and the engine keeps working afterwards
(every worker case is followed by a correct allreduce). One mpirun launch per size; the messages
of every rank are checked case by case."""
from __future__ import annotations

from typing import Dict, Tuple

import pytest

from tests.support.bad_input import (NOT_A_HANDLE, NOT_INITIALIZED, check_case,
                                     check_every_case_is_checked)

WORKER = "tests.numpy_api.bad_input_worker"
SUPPORTED_NUMPY = "dist_sync supports uint8, int8, int16, int32, int64, float16, bfloat16 (torch), float32, float64"

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
    "op_string": ("ValueError: op must be one of dist_sync.Average, Sum, Adasum, Min, Max, Product; got 'sum'",),
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


@pytest.mark.parametrize("np_", [2, 3])
@pytest.mark.parametrize("case", sorted(NUMPY_CASES))
def test_numpy_bad_input(case, np_):
    check_case(WORKER, np_, case, NUMPY_CASES[case])


def test_every_worker_case_is_checked():
    check_every_case_is_checked(WORKER, NUMPY_CASES)
