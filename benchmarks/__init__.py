"""Benchmarks that need a source checkout (run from its root as ``python -m benchmarks.<name>``);
the ones that ship with the package are ``python -m dist_sync.bench allreduce | fusion | tune``.

* ``scaling``: multi-host ring allreduce against a parameter server on network-namespace hosts
  (root; the hosts come from tests/multihost/netns.py).
* ``report``: Markdown tables from the JSON files of dist_sync.bench (how docs/benchmarks.md is
  made).
* ``soak``: many operations through one engine session, every result checked, memory watched
  (``make soak``).
* ``cuda``: host-staged CUDA allreduce and a training step on a GPU (tests/gpu/run_on_gpu.sh).
* ``submission_cost``: what one small operation costs the Python thread and the engine thread,
  counted by callgrind (Note [Submission cost] in docs/architecture.md).
"""
