"""The reduction loops vectorise at the build's default flags (-O3, no -march=native).

Compiles csrc/reduce/reduce.cc the way CMake's Release build does and reads GCC's vectoriser
report per function: every kernel without scaling, and every floating-point kernel with it, must
say "LOOP VECTORIZED". Exceptions, which x86-64's baseline SIMD (SSE2) cannot express: integer
kernels with a scale factor (a division per element) and 64-bit integer min/max/product (no
64-bit compare or multiply before SSE4.2/AVX-512). Both are off the training hot path.
"""
import os
import re
import shutil
import subprocess

import pytest

from tests.support import ROOT


def compiler():
    for candidate in (os.environ.get("CXX"), "g++", "c++"):
        if candidate and shutil.which(candidate):
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True).stdout
            if "Free Software Foundation" in version or "g++" in version or "GCC" in version:
                return candidate
    return None


@pytest.mark.skipif(compiler() is None, reason="needs GCC for its vectoriser report")
def test_reduction_loops_are_vectorised(tmp_path):
    dump = tmp_path / "vect.txt"
    subprocess.run([compiler(), "-std=c++17", "-O3", "-DNDEBUG", "-fPIC", f"-I{ROOT / 'csrc'}",
                    "-c", str(ROOT / "csrc/reduce/reduce.cc"), "-o", str(tmp_path / "reduce.o"),
                    f"-fdump-tree-vect-details={dump}"], check=True)
    functions = re.split(r"\n;; Function ", dump.read_text())
    verdicts = {}
    for body in functions[1:]:
        name = body.split(" (_Z", 1)[0].replace("dist_sync::{anonymous}::", "")
        if name.startswith("reduce_loop<") or name.startswith("scale_loop<"):
            verdicts[name] = "LOOP VECTORIZED" in body
    assert len(verdicts) > 100, "the report did not list the kernels"
    must = []
    for name in verdicts:
        floating = any(t in name for t in ("HalfCodec", "BFloat16Codec", "<float>", "<double>"))
        unscaled = name.endswith(", false, false>")
        wide_integer_compare = "long" in name and any(op in name for op in ("MinOp", "MaxOp", "ProductOp"))
        if floating or (unscaled and not wide_integer_compare):
            must.append(name)
    assert len(must) >= 60
    missing = [name for name in must if not verdicts[name]]
    assert not missing, f"not vectorised: {missing}"
