"""The Chrome-trace / Perfetto timeline (DIST_SYNC_TIMELINE, start_timeline/stop_timeline):
rank 0's file is valid JSON with, per tensor, its queue, negotiation and execution phases, and
it stays loadable when the job is killed."""
import json
from collections import defaultdict

from tests.support import harness

WORKER = "tests.engine.timeline_worker"

NP = 2
# Spans each execution of a tensor leaves, in order (csrc/engine/execution.cc record_timeline):
# QUEUE (submitted until the engine thread took it), NEGOTIATE (until every rank had it and its
# response ran), then the collective's phases, or one span named after the op. Keyed by the
# second part of the worker's names.
QUEUED = ["QUEUE", "NEGOTIATE"]
PHASES_OF_KIND = {
    "allreduce": QUEUED + ["FUSION_COPY_IN", "RECURSIVE_DOUBLING", "FUSION_COPY_OUT"],  # small
    "async": QUEUED + ["FUSION_COPY_IN", "RECURSIVE_DOUBLING", "FUSION_COPY_OUT"],
    "ring": QUEUED + ["RING_REDUCE_SCATTER", "RING_ALLGATHER"],
    "broadcast": QUEUED + ["broadcast"],
    "allgather": QUEUED + ["allgather"],
}
# Timestamps are written with 3 decimals (ns), so adjacent spans may differ by that rounding.
ROUNDING_US = 0.002


def load_events(path):
    with open(path) as handle:
        events = json.load(handle)  # the whole point: a trace viewer must be able to parse it
    assert isinstance(events, list) and events
    return events


def spans_by_tensor(events):
    """{tensor name: {phase: [(ts, dur, args)]}} from the complete ("X") events, with the row
    names from the thread_name metadata; also checks the fields Perfetto needs."""
    rows = {}
    for event in events:
        assert event["ph"] in ("M", "X"), event
        assert isinstance(event["pid"], int)
        if event["ph"] == "M" and event["name"] == "thread_name":
            rows[event["tid"]] = event["args"]["name"]
    spans = defaultdict(lambda: defaultdict(list))
    for event in events:
        if event["ph"] != "X":
            continue
        assert isinstance(event["ts"], (int, float)) and isinstance(event["dur"], (int, float))
        assert event["dur"] >= 0, event
        assert event["tid"] in rows, f"span on a row without a name: {event}"
        spans[rows[event["tid"]]][event["name"]].append((event["ts"], event["dur"],
                                                         event.get("args", {})))
    return spans


def assert_phases(spans, names):
    """Every execution of every named tensor left its phases, back to back and in order."""
    for name in names:
        assert name in spans, f"{name} has no events; tensors seen: {sorted(spans)[:20]}"
        expected = PHASES_OF_KIND[name.split(".")[1]]
        phases = spans[name]
        assert set(phases) == set(expected), (name, sorted(phases))
        executions = len(phases["QUEUE"])
        assert all(len(phases[p]) == executions for p in expected), (name, dict(phases))
        for execution in range(executions):
            chain = [sorted(phases[p])[execution] for p in expected]
            for (ts, dur, _), (next_ts, _, _) in zip(chain, chain[1:]):
                assert abs(ts + dur - next_ts) <= ROUNDING_US, (name, execution, chain)
            for _, _, args in chain[2:]:
                assert args["bytes"] > 0 and args["fused_requests"] >= 1, args


def test_timeline_from_environment(tmp_path):
    path = tmp_path / "timeline.json"
    results = harness.run_ok(WORKER, NP, "from_environment", timeout=120,
                             env={"DIST_SYNC_TIMELINE": str(path)})
    spans = spans_by_tensor(load_events(path))
    names = results[0]["names"]
    assert len(names) == 3 + 1 + 4 + 1 + 2
    assert_phases(spans, names)
    assert set(spans) == set(names)
    # Two rounds of each cached name: both executions recorded.
    assert len(spans["env.allreduce.0"]["QUEUE"]) == 2
    assert spans["env.ring.0"]["RING_ALLGATHER"][0][2]["bytes"] == 4 << 20
    # The four async allreduces of a round were submitted together; each is recorded on its
    # own row even when they share a fused pass.
    fused = max(args["fused_requests"] for name in names if ".async." in name
                for _, _, args in spans[name]["RECURSIVE_DOUBLING"])
    assert 1 <= fused <= 4


def test_timeline_started_and_stopped_from_python(tmp_path):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    results = harness.run_ok(WORKER, NP, "started_and_stopped",
                             {"path": str(first), "path2": str(second)}, timeout=120)
    names = results[0]["names"]
    first_spans = spans_by_tensor(load_events(first))
    assert_phases(first_spans, names["first"])
    assert set(first_spans) == set(names["first"])  # nothing after stop_timeline()
    second_spans = spans_by_tensor(load_events(second))
    assert_phases(second_spans, names["second"])
    assert set(second_spans) == set(names["second"])


def test_timeline_survives_a_killed_job(tmp_path):
    path = tmp_path / "timeline.json"
    result = harness.run(WORKER, NP, "rank_0_killed", timeout=90,
                         env={"DIST_SYNC_TIMELINE": str(path)})
    assert not result.timed_out, result.describe()
    assert result.returncode != 0, "rank 0 was killed; the job cannot have succeeded"
    assert 0 not in result.ranks, "rank 0 died before recording a result"
    spans = spans_by_tensor(load_events(path))
    # Everything before the flush point made it to disk with both phases.
    flushed = [f"kill.allreduce.{i}" for i in range(3)] + [f"kill.async.{i}" for i in range(4)] \
        + ["kill.ring.0", "kill.broadcast", "kill.allgather.0", "kill.allgather.1"]
    assert_phases(spans, flushed)
    assert "QUEUE" in spans["kill.flush"]  # the span whose arrival flushed the rest
