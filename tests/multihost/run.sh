#!/usr/bin/env bash
# `make test-multihost`: dist_sync across network-namespace hosts (tests/multihost/).
#
# Needs root (network namespaces, veth, tc). Exits non-zero when a test fails, when the tests
# cannot run here, or when any network state of this run is left afterwards. Whatever happens
# (failure, Ctrl-C, SIGTERM, a pytest killed outright) the EXIT trap removes every namespace this
# run created: they all carry this script's pid (DIST_SYNC_NETNS_OWNER), see netns.py.
# Arguments are passed to pytest (e.g. -k topology, -x).
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
NETNS=tests.multihost.netns
export DIST_SYNC_NETNS_OWNER=$$
export DIST_SYNC_TEST_MULTIHOST=1

if [ ! -x "$PYTHON" ]; then
    echo "test-multihost: $PYTHON not found; run \`make install\` first (or set PYTHON=...)" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "test-multihost: needs root (network namespaces, veth links, tc): sudo make test-multihost" >&2
    exit 2
fi
reason=$("$PYTHON" -c 'from tests.multihost import netns; print(netns.unavailable_reason() or "")')
if [ -n "$reason" ]; then
    echo "test-multihost: cannot build network-namespace hosts here: $reason" >&2
    exit 2
fi

teardown() {
    local status=$?
    trap - EXIT INT TERM HUP
    "$PYTHON" -m "$NETNS" cleanup --owner $$ >/dev/null || status=1
    if ! left=$("$PYTHON" -m "$NETNS" check --owner $$); then
        echo "test-multihost: FAILED to clean up, left on the machine: $left" >&2
        status=1
    else
        echo "test-multihost: cleanup verified, no namespaces, links or directories left ($left)"
    fi
    exit $status
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

start=$SECONDS
# -p no:cacheprovider: nothing written into the tree; the hard timeout is a last resort (pytest's
# own runs time out long before), SIGTERM first so that netns.py's handler tears down.
timeout --signal=TERM --kill-after=30 900 \
    "$PYTHON" -m pytest -p no:cacheprovider -v -rs tests/multihost "$@"
status=$?
echo "test-multihost: pytest exit status $status after $((SECONDS - start)) s"
exit $status
