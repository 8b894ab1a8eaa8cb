"""dist_sync's tests (tests/README.md: the layout, and how to add and run a test)."""
