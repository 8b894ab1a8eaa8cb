"""What the tests share: the mpirun harness and its worker side, numpy references, the thread-rank
runner, the engine's test hooks, fault helpers, hypothesis strategies and a simulated GPU."""
