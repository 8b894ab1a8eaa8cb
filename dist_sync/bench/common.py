"""Timing, checking and reporting shared by the benchmarks of ``python -m dist_sync.bench``.

Note [How a benchmark iteration is timed]
Every rank enters an iteration through a barrier, times only the operation on its own clock,
and after the run the per-iteration times are reduced with MAX across ranks: an allreduce is
finished when its slowest rank is. The reported time is the median of those maxima over the
timed iterations (robust to the odd scheduler hiccup on a busy machine); every per-iteration
value goes to the JSON file as well. Buffers are allocated once per size and refilled before
each iteration outside the timed region, so the timing contains neither page faults of fresh
memory nor the values of the previous iteration.

Note [Exact check values]
Inputs are small non-negative integers that depend on the rank and the position, so that the
sum over ranks is exact in every dtype (float16 holds integers exactly up to 2048, int8 up to
127) and a chunk reduced at the wrong offset or missing a rank's contribution shows up as a
mismatch. The period is prime so that chunk boundaries of the ring rarely align with it.
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from .. import config as _config

log = logging.getLogger("dist_sync.bench")

# dtype name -> the largest integer n such that every integer in [0, n] is exact in the dtype.
_EXACT_LIMIT = {
    "float16": 2048, "float32": 1 << 24, "float64": 1 << 53,
    "int8": 127, "uint8": 255, "int16": 32767, "int32": (1 << 31) - 1, "int64": (1 << 63) - 1,
}
DTYPES = sorted(_EXACT_LIMIT)
_PERIOD = 1009           # prime (Note [Exact check values])
_CHUNK = 1 << 22         # elements per step when generating or checking, to bound temporaries


def require_mpi4py() -> Any:
    """mpi4py's MPI module (initialising MPI with MPI_THREAD_MULTIPLE, which dist_sync's engine
    thread needs beside the main thread's barriers), or SystemExit with the fix."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise SystemExit(f"dist_sync.bench needs mpi4py for barriers and the MPI reference "
                         f"(pip install mpi4py): {error}") from None
    return MPI


def parse_size(text: str) -> int:
    """A byte count as nccl-tests accepts it: ``4``, ``4K``, ``64M``, ``1G`` (binary units)."""
    return _config.parse_bytes(text)


def size_list(begin: int, end: int, factor: float) -> List[int]:
    """Sizes from ``begin`` to ``end`` bytes multiplied by ``factor`` each step (end included
    when the steps land on it), like nccl-tests' -b/-e/-f."""
    if begin <= 0 or end < begin:
        raise ValueError(f"need 0 < begin <= end, got begin={begin} end={end}")
    if factor <= 1:
        raise ValueError(f"the size factor must be > 1, got {factor}")
    sizes, size = [], float(begin)
    while size <= end * (1 + 1e-9):
        sizes.append(int(round(size)))
        size *= factor
    return sizes


def format_bytes(count: float) -> str:
    """``4096`` -> ``4 KiB``; exact binary units where possible."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            value = count / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.2f} {unit}"
    return f"{int(count)} B"


def busbw_factor(size: int) -> float:
    """nccl-tests' allreduce bus-bandwidth factor 2(N-1)/N: the bytes each rank sends (and
    receives) per byte of the buffer in an optimal allreduce, so busbw is comparable with the
    link bandwidth whatever N is (0 for one rank, which moves nothing)."""
    return 2.0 * (size - 1) / size


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64))) if len(values) else math.nan


def slowest_per_iteration(comm: Any, times: Sequence[float]) -> np.ndarray:
    """Per-iteration maximum over ranks (Note [How a benchmark iteration is timed])."""
    MPI = require_mpi4py()
    local = np.asarray(times, dtype=np.float64)
    result = np.empty_like(local)
    comm.Allreduce(local, result, op=MPI.MAX)
    return result


def sum_over_ranks(comm: Any, value: int) -> int:
    return int(comm.allreduce(int(value)))


# --- check values (Note [Exact check values]) --------------------------------------------------

def value_modulus(dtype: str, size: int) -> int:
    """Input values are in [0, modulus): small enough that the sum over ``size`` ranks is exact."""
    if dtype not in _EXACT_LIMIT:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return max(2, min(_PERIOD, _EXACT_LIMIT[dtype] // max(size, 1)))


def _pattern_chunk(start: int, stop: int, rank: int, modulus: int) -> np.ndarray:
    index = np.arange(start, stop, dtype=np.int64)
    return (index * (rank + 1) + rank) % modulus


def rank_input(count: int, rank: int, size: int, dtype: str) -> np.ndarray:
    """This rank's input values for a buffer of ``count`` elements."""
    modulus = value_modulus(dtype, size)
    out = np.empty(count, dtype=dtype)
    for start in range(0, count, _CHUNK):
        stop = min(count, start + _CHUNK)
        out[start:stop] = _pattern_chunk(start, stop, rank, modulus)
    return out


def expected_sum(count: int, size: int, dtype: str) -> np.ndarray:
    """The exact allreduce-sum of every rank's :func:`rank_input`."""
    modulus = value_modulus(dtype, size)
    out = np.empty(count, dtype=dtype)
    for start in range(0, count, _CHUNK):
        stop = min(count, start + _CHUNK)
        total = np.zeros(stop - start, dtype=np.int64)
        for rank in range(size):
            total += _pattern_chunk(start, stop, rank, modulus)
        out[start:stop] = total
    return out


def count_wrong(result: np.ndarray, expected: np.ndarray) -> int:
    """Elements of ``result`` that differ from ``expected``."""
    return int(np.count_nonzero(result != expected))


def count_wrong_against_rank(result: np.ndarray, rank: int, size: int, dtype: str) -> int:
    """Elements of ``result`` that differ from ``rank``'s :func:`rank_input` (generated in
    chunks, so checking a copy of another rank's buffer needs no second full-size array)."""
    modulus = value_modulus(dtype, size)
    wrong = 0
    for start in range(0, result.size, _CHUNK):
        stop = min(result.size, start + _CHUNK)
        wrong += int(np.count_nonzero(result[start:stop] != _pattern_chunk(start, stop, rank, modulus)))
    return wrong


# --- reporting --------------------------------------------------------------------------------

class Progress:
    """A progress line on rank 0's stderr (``\\r``-rewritten) for work that takes a while.

    Silent for the first ``delay`` seconds of each task, so quick sizes print nothing; at most
    five updates a second.
    """

    def __init__(self, enabled: bool, stream: TextIO = sys.stderr, delay: float = 1.0) -> None:
        self.enabled = enabled
        self.stream = stream
        self.delay = delay
        self._task = ""
        self._started = 0.0
        self._last = 0.0
        self._shown = False

    def start(self, task: str) -> None:
        self._task = task
        self._started = time.perf_counter()
        self._last = 0.0

    def update(self, detail: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._started < self.delay or now - self._last < 0.2:
            return
        self._last = now
        line = f"{self._task}: {detail} ({now - self._started:.0f} s)"
        self.stream.write("\r" + line[:120].ljust(120))
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * 120 + "\r")
            self.stream.flush()
            self._shown = False


@dataclass
class Column:
    title: str
    width: int
    fmt: Callable[[Any], str]


def fmt_float(digits: int) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "n/a"
        return f"{value:.{digits}f}"
    return fmt


def fmt_int(value: Any) -> str:
    return "n/a" if value is None else str(int(value))


def fmt_str(value: Any) -> str:
    return "" if value is None else str(value)


def render_table(columns: Sequence[Column], rows: Iterable[Sequence[Any]],
                 groups: Sequence[Tuple[str, int]] = ()) -> List[str]:
    """Right-aligned fixed-width lines; ``groups`` are (title, number of columns) headers above
    the column titles, like nccl-tests' out-of-place/in-place header. Header lines start with
    ``#`` and data lines with a space, so ``grep -v '^#'`` leaves the data."""
    lines = []
    if groups:
        parts, index = [], 0
        for title, span in groups:
            width = sum(c.width for c in columns[index:index + span]) + span - 1
            parts.append(title.center(width) if title else " " * width)
            index += span
        lines.append(("#" + " ".join(parts)).rstrip())
    lines.append("#" + " ".join(c.title.rjust(c.width) for c in columns))
    for row in rows:
        lines.append(" " + " ".join(c.fmt(v).rjust(c.width) for c, v in zip(columns, row)))
    return lines


def environment(comm: Any, argv: Sequence[str], engine_config: Optional[Dict[str, Any]] = None
                ) -> Dict[str, Any]:
    """Where and how the numbers were taken (collective: every rank must call it)."""
    from .. import __version__, _core
    hosts = comm.allgather(socket.gethostname())
    info: Dict[str, Any] = {
        "dist_sync_version": __version__,
        "ranks": comm.Get_size(),
        "hosts": sorted(set(hosts)),
        "hostname": hosts[0],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), "-m", "dist_sync.bench", *argv]),
        "dist_sync_mpi_library": _core.mpi_library_version().strip(),
        "mpi4py_mpi_library": require_mpi4py().Get_library_version().strip(),
        "dist_sync_config": engine_config if engine_config is not None else _config.load(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_average_start": list(os.getloadavg()),
    }
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_json(path: str, data: Dict[str, Any]) -> None:
    """Writes ``data`` atomically (a reader never sees half a file)."""
    data.setdefault("environment", {})["load_average_end"] = list(os.getloadavg())
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(data, handle, indent=1, allow_nan=False, default=_json_default)
        handle.write("\n")
    os.replace(temporary, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def finite_or_none(value: Optional[float]) -> Optional[float]:
    """JSON has no NaN: a value that was not measured is null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def ratio(results: Dict[str, Dict[str, Any]], a: str, b: str, key: str) -> Optional[float]:
    """results[a][key] / results[b][key]; null when either was not measured."""
    if a in results and b in results and results[b][key]:
        return finite_or_none(results[a][key] / results[b][key])
    return None


# --- torch.distributed (gloo) reference --------------------------------------------------------

def init_gloo(comm: Any) -> Tuple[Any, str]:
    """Starts a torch.distributed gloo process group over the same ranks (collective).

    Returns (torch.distributed module, "") or (None, reason) when torch is unavailable on any
    rank. Rank 0 picks a free port and shares it over MPI, so concurrent jobs don't collide.
    """
    try:
        import torch
        import torch.distributed as dist
        available = dist.is_available()
    except ImportError as error:
        available, reason = False, f"torch is not importable ({error})"
    else:
        reason = "" if available else "torch.distributed is not available in this torch build"
    if not all(comm.allgather(available)):
        log.info("no gloo reference: %s", reason or "torch.distributed is unavailable on some rank")
        return None, reason or "torch.distributed is unavailable on some rank"
    if dist.is_initialized():
        return dist, ""
    hosts = comm.allgather(socket.gethostname())
    address = "127.0.0.1" if len(set(hosts)) == 1 else None
    port = 0
    if comm.Get_rank() == 0:
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        if address is None:
            address = socket.gethostbyname(socket.gethostname())
    address, port = comm.bcast((address, port), root=0)
    # Gloo reduces on the calling thread; keep torch's own intra-op pool out of the way (ranks
    # may outnumber cores).
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=comm.Get_rank(), world_size=comm.Get_size(),
                            init_method=f"tcp://{address}:{port}")
    return dist, ""


def stop_gloo(dist: Any) -> None:
    if dist is not None and dist.is_initialized():
        dist.destroy_process_group()


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` took on this rank."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
