"""Benchmarks of dist_sync, run as ``mpirun -np N python -m dist_sync.bench <benchmark>``.

* ``allreduce``: the nccl-tests table (size, count, type, redop, time, algbw, busbw, #wrong) for
  dist_sync, with MPI_Allreduce, torch.distributed gloo and MPI_Sendrecv interleaved in the same
  run, ``--json`` and ``--plot``.
* ``fusion``: ResNet-50's 161 gradient tensors reduced asynchronously through the engine, as one
  buffer, one by one, and in DDP-style buckets.
* ``tune``: sweeps of the tunables (ring segment size and depth, the recursive-doubling
  threshold, cycle time, fusion threshold) with the defaults they suggest.

The benchmarks that need a source checkout or root (multi-host scaling, the Markdown report,
the soak and the CUDA timings) live in the checkout's benchmarks/ folder instead.

docs/benchmarks.md explains how each is measured and how to reproduce the published numbers.
"""
