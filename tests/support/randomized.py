"""Hypothesis settings and strategies shared by the randomized tests.

By default the examples are derandomized (a fixed seed per test): CI runs the same examples every
time, and a failure reports the falsifying example (every drawn value, including the input
seed) and a ``@reproduce_failure`` blob that replays it exactly. ``DIST_SYNC_HYPOTHESIS_EXPLORE=1``
draws new examples on every run (pass ``--hypothesis-seed=N`` to pytest to replay a run) and
keeps hypothesis's example database in .hypothesis/.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

EXPLORE = os.environ.get("DIST_SYNC_HYPOTHESIS_EXPLORE") == "1"

# Counts around the interesting boundaries: tiny, primes (never a multiple of the rank count or
# of a segment), and large (many segments, up to ~1e6 elements).
PRIMES = [2, 3, 5, 7, 11, 13, 31, 61, 127, 257, 509, 1021, 4093, 8191, 65521, 131071, 524287,
          999983]


def configured(max_examples: int, shrink: bool = True) -> settings:
    """Settings for a randomized test with `max_examples` examples (more when exploring).
    `shrink=False` for tests whose examples are expensive (an mpirun launch each): a failure
    then reports the example as drawn instead of spending many minutes minimising it; exploring
    runs still shrink."""
    phases = [phase for phase in Phase if shrink or EXPLORE or phase != Phase.shrink]
    return settings(max_examples=max_examples * (5 if EXPLORE else 1), deadline=None,
                    derandomize=not EXPLORE, print_blob=True, phases=phases,
                    database=settings.default.database if EXPLORE else None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def counts(limit: int = 1_000_000) -> st.SearchStrategy[int]:
    """Element counts: small ones often, primes, and anything up to `limit`."""
    return st.one_of(st.integers(0, 40), st.sampled_from([p for p in PRIMES if p <= limit]),
                     st.integers(41, limit))


def rank_counts(most: int = 5) -> st.SearchStrategy[int]:
    """1..most ranks; hypothesis favours the first choices, so the single-rank case comes last."""
    return st.sampled_from(list(range(2, most + 1)) + [1])


def segment_bytes() -> st.SearchStrategy[int]:
    """Ring segment sizes, tiny ones (below one element, not a multiple of it) included."""
    return st.one_of(st.integers(1, 64), st.integers(65, 1 << 20))


def bounded_segment(segment: int, total_bytes: int, ranks: int, max_segments: int = 256) -> int:
    """`segment`, raised so that a chunk has at most `max_segments` segments: tiny segments are
    exercised on small buffers, and a 4 MiB buffer does not take a million messages."""
    chunk = total_bytes // max(1, ranks) + 1
    return max(segment, -(-chunk // max_segments))
