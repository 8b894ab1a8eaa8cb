"""Streams a job's output as it arrives, each line prefixed with the rank that printed it.

The launcher tags every chunk a rank writes, and every line within a chunk (Open MPI:
``[1,3]<stdout>: text``; Hydra, told to by dist_sync.launch.mpi: ``[dist_sync:3] text``); this
turns those into ``[3] text`` lines written to the caller's own
``sys.stdout``/``sys.stderr`` (so that a notebook shows them) and keeps the last lines for error
messages. Lines the launcher prints itself pass through unprefixed.
"""
from __future__ import annotations

import codecs
import collections
import os
import re
import threading
from typing import Deque, Dict, List, Optional, TextIO, Tuple

from .mpi import OPENMPI  # Hydra's tag: mpi.HYDRA_PATTERN

_OPENMPI_TAG = re.compile(r"\[\d+,(\d+)\]<(?:stdout|stderr|stddiag)>: ?")
# Hydra's own ``-prepend-rank`` tag, ``[3] ``, is too common in programs' output to be told
# apart from it when it starts a chunk in mid-line.
_HYDRA_TAG = re.compile(r"\[dist_sync:(\d+)\] ")
_TAIL_LINES = 200


class RankOutput:
    """Receives one launcher stream (its stdout or its stderr) and writes prefixed lines.

    Launchers tag each chunk, not only each line: a rank that prints without a newline is
    followed on the same launcher line by another rank's tag (or its own, for the rest of its
    line). Text between two tags belongs to the first tag's rank, and is kept until that rank
    finishes its line.
    """

    def __init__(self, flavor: str, target: TextIO, tail: Deque[str], prefix: bool = True,
                 lock: Optional[threading.Lock] = None) -> None:
        self._flavor = flavor
        self._target = target
        self._tail = tail
        self._prefix = prefix
        self._lock = lock or threading.Lock()
        self._pending_stream = ""
        self._pending_rank: Dict[Optional[int], str] = {}

    def feed(self, text: str) -> None:
        """Takes the next piece of the stream; writes every line it completes."""
        lines = (self._pending_stream + text).split("\n")
        self._pending_stream = lines.pop()
        out = []
        for line in lines:
            out += self._complete(line)
        self._write(out)

    def close(self) -> None:
        """Writes what is left (lines the ranks never ended) at the end of the stream."""
        out = self._complete(self._pending_stream) if self._pending_stream else []
        self._pending_stream = ""
        for rank, text in sorted(self._pending_rank.items(), key=lambda item: (item[0] is None,
                                                                               item[0] or 0)):
            if text:
                out.append((rank, text))
        self._pending_rank.clear()
        self._write(out)

    def _complete(self, line: str) -> List[Tuple[Optional[int], str]]:
        """The (rank, text) lines that one launcher line completes."""
        tag = _OPENMPI_TAG if self._flavor == OPENMPI else _HYDRA_TAG
        pieces: List[Tuple[Optional[int], str]] = []
        position, rank = 0, None
        for match in tag.finditer(line):
            pieces.append((rank, line[position:match.start()]))
            position, rank = match.end(), int(match.group(1))
        pieces.append((rank, line[position:]))
        if pieces[0] == (None, "") and len(pieces) > 1:
            pieces.pop(0)
        # Every piece but the last ends where another tag begins: a partial line of its rank.
        for partial_rank, text in pieces[:-1]:
            self._pending_rank[partial_rank] = self._pending_rank.get(partial_rank, "") + text
        last_rank, text = pieces[-1]
        return [(last_rank, self._pending_rank.pop(last_rank, "") + text)]

    def _write(self, lines: List[Tuple[Optional[int], str]]) -> None:
        if not lines:
            return
        rendered = [text if rank is None or not self._prefix else f"[{rank}] {text}"
                    for rank, text in lines]
        with self._lock:
            self._tail.extend(rendered)
            try:
                self._target.write("".join(line + "\n" for line in rendered))
                self._target.flush()
            except (OSError, ValueError):
                pass  # the caller's stream is gone (closed notebook cell): keep the job running


class OutputPump:
    """One thread per launcher pipe, feeding a RankOutput until the pipe closes."""

    def __init__(self, flavor: str, stdout: TextIO, stderr: TextIO, prefix: bool = True) -> None:
        self.tail: Deque[str] = collections.deque(maxlen=_TAIL_LINES)
        lock = threading.Lock()
        self._streams = (RankOutput(flavor, stdout, self.tail, prefix, lock),
                         RankOutput(flavor, stderr, self.tail, prefix, lock))
        self._threads: List[threading.Thread] = []

    def start(self, stdout_fd: int, stderr_fd: int) -> None:
        for fd, stream in zip((stdout_fd, stderr_fd), self._streams):
            thread = threading.Thread(target=self._pump, args=(fd, stream),
                                      name="dist_sync-output", daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: Optional[float] = None) -> None:
        """Waits until both pipes are drained (they close when every process holding them has
        exited)."""
        for thread in self._threads:
            thread.join(timeout)

    @staticmethod
    def _pump(fd: int, stream: RankOutput) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            stream.feed(decoder.decode(chunk))  # keeps a character split across reads
        stream.feed(decoder.decode(b"", final=True))
        stream.close()
        os.close(fd)
