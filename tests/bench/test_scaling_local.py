"""benchmarks.scaling without network namespaces: the theory it plots against, and its argument
checks (the runs themselves are in tests/multihost/test_scaling_mpi.py)."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

from benchmarks import scaling
from tests.support import ROOT

S = 8 << 20


@pytest.mark.parametrize("hosts", [2, 3, 4, 8])
def test_ring_theory_is_two_n_minus_one_over_n(hosts: int) -> None:
    busiest, least = scaling.theory_bytes("ring", hosts, 1, S)
    assert busiest == least == 2 * (hosts - 1) / hosts * S


@pytest.mark.parametrize("hosts", [2, 3, 4, 8])
def test_parameter_server_theory_funnels_through_the_root(hosts: int) -> None:
    busiest, least = scaling.theory_bytes("ps", hosts, 1, S)
    assert busiest == (hosts - 1) * S and least == S
    # In, then out, over the root's link at 200 Mbit/s, whole frames counted.
    seconds = scaling.theory_seconds("ps", hosts, 1, S, 200e6)
    assert seconds == pytest.approx(2 * (hosts - 1) * S * 1514 / 1448 * 8 / 200e6)


def test_ring_time_stays_under_two_buffers_while_the_parameter_server_grows() -> None:
    ring = [scaling.theory_seconds("ring", n, 1, S, 200e6) for n in (2, 4, 16, 64)]
    ps = [scaling.theory_seconds("ps", n, 1, S, 200e6) for n in (2, 4, 16, 64)]
    bound = 2 * S * 1514 / 1448 * 8 / 200e6
    assert all(t < bound for t in ring) and ring == sorted(ring)
    assert ps[-1] / ps[0] == pytest.approx(63)


def test_hierarchical_theory() -> None:
    # 2 hosts x 2 ranks: flat ring over 4 ranks 1.5 S per host link, hierarchical 1 S.
    assert scaling.theory_bytes("ring", 2, 2, S)[0] == 1.5 * S
    assert scaling.theory_bytes("hierarchical", 2, 2, S)[0] == 1.0 * S
    assert scaling.theory_bytes("hierarchical", 4, 2, S)[0] == 1.5 * S
    # With one rank per host there is nothing to do within a host: the flat ring.
    assert scaling.theory_bytes("hierarchical", 3, 1, S) == scaling.theory_bytes("ring", 3, 1, S)
    assert math.isnan(scaling.theory_seconds("ring", 3, 1, S, 0.0))


@pytest.mark.parametrize("text,expected", [("200mbit", 200e6), ("1gbit", 1e9), ("500kbit", 5e5),
                                           ("none", 0.0)])
def test_parse_rate(text: str, expected: float) -> None:
    assert scaling.parse_rate(text) == expected


@pytest.mark.parametrize("argv,message", [
    (["--hosts", "1"], "host counts must be 2..9"),
    (["--hosts", "two"], "not a list of host counts"),
    (["--algorithms", "ring,allgather"], "unknown algorithm"),
    (["--size", "6"], "multiple of 4"),
    (["--rate", "fast"], "not a tc rate"),
    (["--algorithms", "hierarchical"], "--ranks-per-host 2"),
    (["--iterations", "0"], "--iterations must be >= 1"),
])
def test_bad_arguments_are_refused_before_anything_is_built(argv, message) -> None:
    result = subprocess.run([sys.executable, "-m", "benchmarks.scaling", *argv],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr


def test_help_names_the_theory() -> None:
    result = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0
    assert "Ring versus parameter server" in result.stdout and "--rate" in result.stdout
