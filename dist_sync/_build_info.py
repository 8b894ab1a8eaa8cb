"""Horovod's build queries (``hvd.mpi_built()``, ``hvd.nccl_built()``, ...), answered truthfully
for dist_sync. Framework bindings re-export them and add their own ``cuda_built``."""
from __future__ import annotations


def mpi_enabled() -> bool:
    """True: dist_sync always runs over MPI."""
    return True


def mpi_built() -> bool:
    """True: dist_sync is built against MPI."""
    return True


def gloo_enabled() -> bool:
    """False: dist_sync has no Gloo controller."""
    return False


def gloo_built() -> bool:
    """False: dist_sync has no Gloo controller."""
    return False


def nccl_built() -> int:
    """0: dist_sync is not built with NCCL (Horovod returns the NCCL version, or 0)."""
    return 0


def ddl_built() -> bool:
    """False: no IBM DDL support."""
    return False


def ccl_built() -> bool:
    """False: no oneCCL support."""
    return False


def rocm_built() -> bool:
    """False: no ROCm support."""
    return False
