"""What the tests share: the mpirun harness and its worker side, numpy references, the thread-rank
runner, the engine's test hooks, fault helpers, hypothesis strategies and a simulated GPU."""
from pathlib import Path

# The checkout: README, examples, csrc and the package sources the tests read.
ROOT = Path(__file__).resolve().parents[2]
