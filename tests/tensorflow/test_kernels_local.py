"""The compiled TensorFlow ops without MPI: what a user sees when they were not built (TensorFlow
installed after dist_sync), and the op library's refusal of an engine table of another
version."""
from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

tf = pytest.importorskip("tensorflow")
from dist_sync.tensorflow import _kernels  # noqa: E402


def test_missing_op_library_says_how_to_rebuild(monkeypatch):
    monkeypatch.setattr(_kernels, "LIBRARY", Path("/nonexistent/libdist_sync_tf_ops.so"))
    with pytest.raises(ImportError) as raised:
        _kernels._load()
    message = str(raised.value)
    assert "dist_sync was built without TensorFlow" in message, message
    assert "pip install --no-build-isolation --force-reinstall --no-deps ." in message, message


def test_op_library_checks_the_table_version():
    setter = ctypes.CDLL(str(_kernels.LIBRARY)).dist_sync_tf_set_c_api
    setter.argtypes = [ctypes.c_void_p]
    wrong = (ctypes.c_uint32 * 4)(999, 64, 0, 0)  # version 999
    assert setter(ctypes.addressof(wrong)) == -1
    assert setter(None) == -1
