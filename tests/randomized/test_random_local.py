"""Randomized collectives over the in-process thread communicator (no MPI, so hundreds of
configurations run in seconds): random counts (0..~1e6, primes), dtypes, ops, scale factors,
N = 1..5, segment sizes down to a byte, in-flight windows and small-message thresholds.
Results against numpy (tests/support/reference.py), bit-identical on every rank.

Failures print the falsifying example and a replay blob (tests/support/randomized.py)."""
from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tests.support.randomized import bounded_segment, configured, counts, rank_counts, segment_bytes
from tests.support.reference import DTYPES, OPS, compare, make_input, storage_dtype
from tests.support.thread_ranks import run

FLOATS = ("float16", "bfloat16", "float32", "float64")



@st.composite
def allreduce_cases(draw):
    n = draw(rank_counts())
    dtype = draw(st.sampled_from(DTYPES))
    op = draw(st.sampled_from(OPS))
    count = draw(counts())
    element = storage_dtype(dtype).itemsize
    case = {
        "n": n, "dtype": dtype, "op": op, "count": count,
        # allreduce: the engine's entry point over uneven spans (ring or recursive doubling by
        # size); ring: the ring alone; inplace: input and output are the same memory.
        "kind": draw(st.sampled_from(["allreduce", "ring", "inplace"])),
        "segment": bounded_segment(draw(segment_bytes()), count * element, n),
        "in_flight": draw(st.integers(1, 8)),
        "small": draw(st.sampled_from([0, 1, 64, 4096, 1 << 16, 1 << 30])),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "prescale": 1.0, "postscale": 1.0,
    }
    # Scale factors are applied to floating types (integer scaling truncates, see reference).
    if dtype in FLOATS and op in ("sum", "average"):
        case["prescale"] = draw(st.sampled_from([1.0, 0.5, 2.0]))
        case["postscale"] = draw(st.sampled_from([1.0, 0.25, 3.0]))
    return case


@configured(max_examples=250)
@given(allreduce_cases())
def test_random_allreduce(case):
    inputs = [make_input(case["seed"], r, case["count"], case["dtype"], case["op"])
              for r in range(case["n"])]
    outputs = run(case["kind"], inputs, case["dtype"], case["op"], case["segment"], case["small"],
                  case["in_flight"], prescale=case["prescale"], postscale=case["postscale"])
    for rank, out in enumerate(outputs):
        problem = compare(out, inputs, case["dtype"], case["op"], case["prescale"], case["postscale"])
        assert not problem, f"rank {rank}: {problem}"
        assert out.tobytes() == outputs[0].tobytes(), f"rank {rank} differs bitwise from rank 0"


@configured(max_examples=100)
@given(n=rank_counts(), count=counts(200_000), dtype=st.sampled_from(DTYPES),
       segment=segment_bytes(), in_flight=st.integers(1, 8), seed=st.integers(0, 2**32 - 1),
       root_pick=st.integers(0, 4))
def test_random_broadcast(n, count, dtype, segment, in_flight, seed, root_pick):
    root = root_pick % n
    inputs = [make_input(seed, r, count, dtype, "sum") for r in range(n)]
    segment = bounded_segment(segment, inputs[0].nbytes, 1)
    for out in run("broadcast", inputs, dtype, segment=segment, in_flight=in_flight, root=root):
        assert out.tobytes() == inputs[root].tobytes()


@configured(max_examples=100)
@given(data=st.data(), n=rank_counts(), dtype=st.sampled_from(DTYPES), segment=segment_bytes(),
       in_flight=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_random_allgather(data, n, dtype, segment, in_flight, seed):
    rows = [data.draw(counts(50_000), label=f"count of rank {r}") for r in range(n)]
    inputs = [make_input(seed, r, rows[r], dtype, "sum") for r in range(n)]
    segment = bounded_segment(segment, sum(x.nbytes for x in inputs), 1)
    expected = np.concatenate(inputs).tobytes()
    for out in run("allgather", inputs, dtype, segment=segment, in_flight=in_flight):
        assert out.tobytes() == expected


@configured(max_examples=100)
@given(n=rank_counts(), count=counts(200_000), dtype=st.sampled_from(DTYPES),
       op=st.sampled_from(OPS), segment=segment_bytes(), in_flight=st.integers(1, 8),
       seed=st.integers(0, 2**32 - 1))
def test_random_reducescatter(n, count, dtype, op, segment, in_flight, seed):
    inputs = [make_input(seed, r, count, dtype, op) for r in range(n)]
    segment = bounded_segment(segment, inputs[0].nbytes, n)
    outputs = run("reducescatter", inputs, dtype, op, segment=segment, in_flight=in_flight)
    bounds = np.cumsum([0] + [count // n + (1 if r < count % n else 0) for r in range(n)])
    full = [x for x in inputs]
    for rank, out in enumerate(outputs):
        mine = [x[bounds[rank]:bounds[rank + 1]] for x in full]
        problem = compare(out, mine, dtype, op)
        assert not problem, f"rank {rank}: {problem}"


@configured(max_examples=100)
@given(data=st.data(), n=rank_counts(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_random_alltoall(data, n, dtype, seed):
    matrix = np.array([[data.draw(st.one_of(st.integers(0, 5), st.integers(0, 20_000)),
                                  label=f"rows {s}->{d}") for d in range(n)] for s in range(n)])
    inputs = [make_input(seed, s, int(matrix[s].sum()), dtype, "sum") for s in range(n)]
    outputs = run("alltoall", inputs, dtype, split_rows=matrix.flatten().tolist())
    for d, out in enumerate(outputs):
        pieces = []
        for s in range(n):
            start = int(matrix[s, :d].sum())
            pieces.append(inputs[s][start:start + int(matrix[s, d])])
        assert out.tobytes() == np.concatenate(pieces).tobytes(), f"rank {d}"
