"""Fixtures of the multi-host tests: virtual clusters of network-namespace hosts (netns.py).

The tests build network namespaces, so they need root, and they run only when asked for
(`make test-multihost`, i.e. tests/multihost/run.sh, sets DIST_SYNC_TEST_MULTIHOST=1): a plain
`pytest tests` as root should not start creating network state. Without either, every test here
is skipped with the reason.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from tests.multihost import netns

HERE = Path(__file__).resolve().parent

OPT_IN = "DIST_SYNC_TEST_MULTIHOST"


def _skip_reason() -> Optional[str]:
    if os.environ.get(OPT_IN) != "1":
        return (f"multi-host tests run through `make test-multihost` (tests/multihost/run.sh sets "
                f"{OPT_IN}=1)")
    reason = netns.unavailable_reason()
    return f"no virtual cluster here: {reason}" if reason else None


SKIP_REASON = _skip_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if not SKIP_REASON:
        return
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def _cluster(hosts: int) -> Iterator[netns.VirtualCluster]:
    with netns.VirtualCluster(hosts) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster2() -> Iterator[netns.VirtualCluster]:
    """Two hosts, shared by the tests (each run leaves no process behind; see no_leftover_ranks)."""
    yield from _cluster(2)


@pytest.fixture(scope="session")
def cluster3() -> Iterator[netns.VirtualCluster]:
    yield from _cluster(3)
