"""Randomized engine runs under mpirun: hypothesis draws the number of ranks (1..5), the engine's
data-path settings (fusion threshold, ring segment size, small-allreduce threshold, segments in
flight, response-cache capacity — tiny values included, so fusion, the multi-segment path and
cache evictions are exercised hard) and a batch of operations (kinds, dtypes, counts up to
~300 000, ops, scale factors, names, and what happens to each handle: synchronized, dropped
unsynchronized, or synchronized by two threads at once). Each rank checks its results against
numpy; the test checks that the results meant to be identical are bit-identical on every rank.
A second test interrupts one rank (Ctrl-C) at a random moment of such a batch: the job must end
at once with every rank either finished or told which rank was interrupted, never hang or crash.

Few examples per CI run (each is an mpirun launch); DIST_SYNC_HYPOTHESIS_EXPLORE=1 draws more
and new ones (tests/support/randomized.py). A failure prints the falsifying example and a replay blob."""
from __future__ import annotations

from typing import Any, Dict, List

from hypothesis import given
from hypothesis import strategies as st

from tests.support import faults, harness
from tests.support.randomized import bounded_segment, configured, counts, rank_counts, segment_bytes
from tests.support.reference import DTYPES, OPS, storage_dtype

WORKER = "tests.randomized.random_worker"
# The numpy API has no bfloat16 (torch only); the thread tests cover it.
NUMPY_DTYPES = [d for d in DTYPES if d != "bfloat16"]
FLOATS = ("float16", "float32", "float64")
KINDS = ["allreduce", "allreduce_", "grouped", "broadcast", "allgather", "alltoall", "reducescatter"]


@st.composite
def operations(draw) -> List[Dict[str, Any]]:
    ops = []
    for index in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(KINDS))
        dtype = draw(st.sampled_from(NUMPY_DTYPES))
        op = draw(st.sampled_from(OPS)) if kind in ("allreduce", "allreduce_", "grouped",
                                                   "reducescatter") else "sum"
        # allgather/alltoall: `count` bounds the rows each rank sends to each other rank.
        count = draw(counts(300_000) if kind not in ("allgather", "alltoall") else st.integers(0, 3000))
        scales = dtype in FLOATS and op in ("sum", "average")
        ops.append({
            "kind": kind, "dtype": dtype, "op": op, "count": count,
            "name": draw(st.one_of(st.none(), st.just(f"t{index}"))),
            "pre": draw(st.sampled_from([1.0, 0.5])) if scales else 1.0,
            "post": draw(st.sampled_from([1.0, 3.0])) if scales else 1.0,
            "root": draw(st.integers(0, 4)),
            "fate": draw(st.sampled_from(["sync", "sync", "drop", "threads"])),
        })
    return ops


@st.composite
def jobs(draw) -> Dict[str, Any]:
    ops = draw(operations())
    total = sum(op["count"] * storage_dtype(op["dtype"]).itemsize for op in ops)
    np_ = draw(rank_counts())
    env = {
        "DIST_SYNC_FUSION_THRESHOLD": str(draw(st.sampled_from([64 << 20, 0, 1, 64, 1000, 4096, 65536]))),
        "DIST_SYNC_RING_SEGMENT_BYTES": str(bounded_segment(draw(segment_bytes()), total, np_, 512)),
        "DIST_SYNC_SMALL_ALLREDUCE_BYTES": str(draw(st.sampled_from([64 << 10, 0, 1, 4096, 1 << 30]))),
        "DIST_SYNC_RING_IN_FLIGHT": str(draw(st.integers(1, 8))),
        "DIST_SYNC_CACHE_CAPACITY": str(draw(st.sampled_from([1024, 0, 1, 3]))),
    }
    return {"np": np_, "env": env, "seed": draw(st.integers(0, 2**31 - 1)), "ops": ops}


@configured(max_examples=20, shrink=False)
@given(jobs())
def test_random_engine_batches(job):
    values = harness.run_ok(WORKER, job["np"], "random_batch",
                            {"seed": job["seed"], "ops": job["ops"], "rounds": 2},
                            timeout=180, env=job["env"])
    kept = sum(op["fate"] != "drop" for op in job["ops"])
    assert all(v["checked"] == 2 * kept for v in values), values
    digests = {v["digest"] for v in values}
    assert len(digests) == 1, f"results differ bitwise between ranks: {values}"


# A crash shows as death by a signal other than the SIGTERM/SIGKILL mpirun uses to end a job.
CRASH_SIGNALS = ("Segmentation fault", "Aborted", "Bus error", "signal 11", "signal 6", "signal 7")


@configured(max_examples=6, shrink=False)
@given(jobs(), st.integers(0, 1 << 20))
def test_ctrl_c_at_a_random_moment_ends_the_job_cleanly(job, pick):
    # From one wide integer: hypothesis draws small ranges' first values far more often.
    victim = pick % job["np"]
    delay = [0.0, 0.05, 0.15, 0.3, 0.6, 1.2][pick // 8 % 6]
    run = harness.run(WORKER, job["np"], "interrupted_batch",
                      {"seed": job["seed"], "ops": job["ops"], "rounds": 3, "victim": victim,
                       "delay": delay},
                      timeout=180, env=job["env"])
    assert not run.timed_out, run.describe()
    assert not any(crash in run.output for crash in CRASH_SIGNALS), run.describe()
    victim_value = run.ranks[victim].value if victim in run.ranks else None
    if victim_value == {"completed": True}:
        assert all(r.value == {"completed": True} for r in run.ranks.values()), run.describe()
        return
    assert victim_value == {"interrupted": True}, run.describe()
    assert run.returncode != 0, run.describe()
    cause = f"rank {victim} was interrupted (KeyboardInterrupt)"
    lines = faults.sigterm_lines(run.output)
    for rank in range(job["np"]):
        if rank == victim:
            continue
        if rank in run.ranks:
            value = run.ranks[rank].value or {}
            assert value == {"completed": True} or cause in value.get("error", ""), run.describe()
        else:
            assert rank in lines and cause in lines[rank], run.describe()
