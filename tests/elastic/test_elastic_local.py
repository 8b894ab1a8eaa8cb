"""The pieces of elastic training that need no MPI job: ElasticSampler's dealing across a change
of size, ObjectState's commit / restore, and reading a host discovery script's slots."""
from __future__ import annotations

from typing import List

import pytest

from dist_sync._elastic_growth import discovered_slots
from dist_sync.torch.elastic import ElasticSampler, ObjectState


class FixedSampler(ElasticSampler):
    """An ElasticSampler whose rank and size are given, not read from a running dist_sync."""

    def __init__(self, dataset, size: int, rank: int, **kwargs) -> None:
        self.fixed = (size, rank)
        super().__init__(dataset, **kwargs)

    def reset(self) -> None:
        self.num_replicas, self.rank = self.fixed


def run_steps(samplers: List[FixedSampler], batch: int, steps: int) -> List[List[int]]:
    """`steps` steps of every rank (or all that are left); each step's samples, all ranks."""
    iterators = [iter(list(s)) for s in samplers]
    done = []
    for _ in range(steps):
        step = []
        for it in iterators:
            step += [i for _, i in zip(range(batch), it)]
        if not step:
            break
        done.append(step)
        for s in samplers:
            s.record_batch(len(done) - 1, batch)
    return done


@pytest.mark.parametrize("size,new_size,steps,batch,n", [
    (3, 2, 5, 4, 101), (4, 3, 1, 8, 64), (4, 1, 7, 3, 90), (2, 3, 0, 5, 17), (3, 2, 8, 4, 97),
])
def test_a_resumed_epoch_sees_every_sample_once(size, new_size, steps, batch, n):
    dataset = range(n)
    before = [FixedSampler(dataset, size, r, seed=3) for r in range(size)]
    for s in before:
        s.set_epoch(2)
    first = run_steps(before, batch, steps)
    # The commit every rank holds, loaded into the survivors' samplers (what sync() does).
    committed = before[0].state_dict()
    after = [FixedSampler(dataset, new_size, r, seed=3) for r in range(new_size)]
    for s in after:
        s.load_state_dict(committed)
    rest = run_steps(after, batch, 10 ** 6)
    steps_all = first + rest
    before_last = [i for step in steps_all[:-1] for i in step]
    assert len(before_last) == len(set(before_last))
    every = [i for step in steps_all for i in step]
    assert set(every) == set(range(n))
    assert len(every) - n < new_size  # the last step's padding
    # Every rank of the shrunk job runs the same number of steps.
    assert len({len(s) for s in after}) == 1


def test_sampler_epochs_are_permutations_of_their_own():
    s = FixedSampler(range(50), 1, 0, seed=1)
    s.set_epoch(0)
    a = list(s)
    s.set_epoch(1)
    b = list(s)
    assert sorted(a) == sorted(b) == list(range(50)) and a != b
    assert list(FixedSampler(range(5), 1, 0, shuffle=False)) == [0, 1, 2, 3, 4]


def test_object_state_restores_the_last_commit():
    state = ObjectState(epoch=0, history=[1])
    state.epoch = 3
    state.history.append(2)
    state.commit()
    state.epoch = 5
    state.history.append(9)
    state.restore()
    assert state.epoch == 3 and state.history == [1, 2]
    state.history.append(4)
    state.restore()
    assert state.history == [1, 2]  # the commit is a copy, not the live list


def script(tmp_path, body: str) -> str:
    path = tmp_path / "discover.sh"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_host_discovery_slots_in_horovods_format(tmp_path):
    assert discovered_slots(script(tmp_path, "echo node-a:4; echo; echo node-b:2; echo node-c")) == 7
    assert discovered_slots(script(tmp_path, "true")) == 0


@pytest.mark.parametrize("body, message", [
    ("echo node-a:many", "a line is not `host:slots`"),
    ("echo node-a:0", "a line is not `host:slots`"),
    ("echo :3", "a line is not `host:slots`"),
    ("echo broken >&2; exit 3", "it exited with 3: broken"),
])
def test_host_discovery_script_errors_say_what_is_wrong(tmp_path, body, message):
    with pytest.raises(ValueError, match=message):
        discovered_slots(script(tmp_path, body))


def test_host_discovery_script_that_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="could not run it"):
        discovered_slots(str(tmp_path / "missing.sh"))
