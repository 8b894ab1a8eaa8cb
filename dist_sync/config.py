"""Every user setting of dist_sync, declared once: name, environment variable, default, the rule
that validates it, whether every rank must agree on it, and its documentation.

``init()`` keyword arguments override the environment; both go through the same rule, so a
bad value fails with a message naming the setting wherever it came from. The README's settings
table is this table rendered by :func:`markdown_table` (``python -m dist_sync.config`` prints it;
tests/packaging/test_docs_local.py checks the README holds it verbatim). docs/benchmarks.md says
how the tuned defaults were chosen. The engine receives the resolved values (no C++ default restates them).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

_LOG_LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3, "off": 4}
_MAX_BYTES = 1 << 50


def parse_bytes(text: str) -> int:
    """Parses a byte count such as ``65536``, ``64K``, ``64MiB`` or ``1G``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a byte count (examples: 65536, 64K, 64MiB, 1G)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def format_bytes(count: int) -> str:
    """``65536`` -> ``64 KiB``: the largest binary unit that divides the count."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count and count % (1 << shift) == 0:
            return f"{count >> shift} {unit}"
    return str(count)


def _parse_level(text: str) -> int:
    level = _LOG_LEVELS.get(text.strip().lower())
    if level is None:
        raise ValueError(f"{text!r} is not a log level ({', '.join(_LOG_LEVELS)})")
    return level


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (1/0, true/false, yes/no, on/off)")


def _number(value: Any, low: float, high: float) -> float:
    """A real number in [low, high] (finite); ValueError/TypeError naming the bound otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{value!r} is outside [{low:g}, {high:g}]")
    return number


def _integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"expected an integer, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{value!r} is outside [{low}, {high}]")
    return value


def _bytes_rule(value: Any) -> int:
    return _integer(value, 0, _MAX_BYTES)


def _seconds_rule(value: Any) -> float:
    return _number(value, 0.0, 10 * 365 * 86400.0)


def _cycle_rule(value: Any) -> float:
    # Below 0.1 ms an idle engine would negotiate continuously and burn a core per rank.
    return _number(value, 0.1, 60_000.0)


def _cache_rule(value: Any) -> int:
    # Every cycle exchanges 3 bits per entry, so a huge cache slows every step.
    return _integer(value, 0, 1 << 16)


def _in_flight_rule(value: Any) -> int:
    return _integer(value, 1, 64)


def _min_np_rule(value: Any) -> int:
    return _integer(value, 1, 1 << 20)


def _max_np_rule(value: Any) -> int:
    return _integer(value, 0, 1 << 20)


def _bool_rule(value: Any) -> bool:
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise TypeError(f"expected a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _level_rule(value: Any) -> int:
    if isinstance(value, str):
        return _parse_level(value)
    return _integer(value, 0, len(_LOG_LEVELS) - 1)


def _path_rule(value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"expected a path, got {type(value).__name__} {value!r}")
    return os.fspath(value)


@dataclass(frozen=True)
class Setting:
    key: str            # name in the dict handed to the engine, and init() keyword
    env: str            # environment variable
    default: Any
    parse: Callable[[str], Any]   # environment text -> value
    rule: Callable[[Any], Any]    # value -> validated value (ValueError/TypeError otherwise)
    help: str           # the README's text
    shared: bool = False  # every rank must use the same value (rank 0's wins; others warn)
    default_text: Optional[str] = None  # how the README shows the default, when not derived

    def shown_default(self) -> str:
        """The default as the README's table shows it."""
        if self.default_text is not None:
            return self.default_text
        if self.parse is parse_bytes:
            return format_bytes(self.default)
        if self.parse is _parse_level:
            return next(name for name, level in _LOG_LEVELS.items() if level == self.default)
        if isinstance(self.default, bool):
            return "1" if self.default else "0"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


SETTINGS: List[Setting] = [
    Setting("fusion_threshold_bytes", "DIST_SYNC_FUSION_THRESHOLD", 64 << 20, parse_bytes,
            _bytes_rule,
            "Ready tensors of the same dtype and op are reduced together in one ring pass up to "
            "this many bytes; `0` disables fusion.", shared=True),
    Setting("cycle_time_ms", "DIST_SYNC_CYCLE_TIME_MS", 5.0, float, _cycle_rule,
            "How often an *idle* engine takes part in a negotiation cycle (0.1 to 60000). A "
            "submission wakes the engine at once, and a rank with work pending polls every "
            "0.2 ms, so this sets what idling costs (about 1% of a core at 5 ms) rather than "
            "latency."),
    Setting("cache_capacity", "DIST_SYNC_CACHE_CAPACITY", 1024, int, _cache_rule,
            "Entries of the response cache (requests negotiated once, then answered by one bit "
            "per cycle), up to 65536; `0` disables it.", shared=True),
    Setting("stall_warning_seconds", "DIST_SYNC_STALL_WARNING_SECONDS", 60.0, float,
            _seconds_rule,
            "Rank 0 logs a warning naming operations submitted by some ranks but not others for "
            "this long, and the missing ranks."),
    Setting("stall_timeout_seconds", "DIST_SYNC_STALL_TIMEOUT_SECONDS", 1800.0, float,
            _seconds_rule,
            "After this long every rank fails its pending operations with that message and the "
            "job exits non-zero; `0` = never."),
    Setting("init_timeout_seconds", "DIST_SYNC_INIT_TIMEOUT_SECONDS", 300.0, float,
            _seconds_rule,
            "`init()` is collective: a rank waits this long for every other rank to call it, "
            "then fails with a message saying so (a rank that calls `init()` again on its own "
            "would otherwise wait for ever); `0` = never."),
    Setting("fatal_grace_seconds", "DIST_SYNC_FATAL_GRACE_SECONDS", 10.0, float, _seconds_rule,
            "After a fatal error (a lost rank, a stall timeout) a process has this long to exit "
            "by itself before dist_sync ends the job with `MPI_Abort`."),
    Setting("ring_segment_bytes", "DIST_SYNC_RING_SEGMENT_BYTES", 0, parse_bytes, _bytes_rule,
            "Ring messages are cut into segments of this size, so reducing one overlaps the "
            "transfer of the next. Auto (`0`): 1 MiB within a host (single-copy shared memory), "
            "32 KiB when the ring crosses hosts (below Open MPI's TCP eager limit, so no "
            "rendezvous handshake per segment).", shared=True, default_text="auto"),
    Setting("ring_in_flight", "DIST_SYNC_RING_IN_FLIGHT", 4, int, _in_flight_rule,
            "Ring segments in flight per direction (1 to 64)."),
    Setting("small_allreduce_bytes", "DIST_SYNC_SMALL_ALLREDUCE_BYTES", 64 << 10, parse_bytes,
            _bytes_rule,
            "Allreduces up to this size use a latency-bound algorithm (1 + ⌈log₂N⌉ steps: "
            "chunks sent to their owners, reduced in the ring's order, gathered by everyone, "
            "when `DIST_SYNC_REPRODUCIBLE=1`; recursive doubling otherwise) instead of the ring "
            "(2(N−1) steps).", shared=True),
    Setting("reproducible", "DIST_SYNC_REPRODUCIBLE", False, _parse_bool, _bool_rule,
            "`1`: every element of an allreduce is reduced in an order fixed by its tensor's size "
            "and its position in that tensor, so results are bit-identical across runs whatever "
            "fusion, the fusion threshold, segment sizes or timing did (for the same number of "
            "ranks; see *Reproducibility*). Off by default: allreduces of 16–64 KiB take "
            "1.3–2.2× as long on 3–4 ranks. `0`: the order follows the fused buffer.",
            shared=True),
    Setting("hierarchical_allreduce", "DIST_SYNC_HIERARCHICAL_ALLREDUCE", False, _parse_bool,
            _bool_rule,
            "`1`: allreduce large buffers hierarchically — reduce-scatter within each host, "
            "allreduce across hosts, allgather within each host — so fewer bytes cross the "
            "slower links between hosts. Needs the same number of ranks on every host.",
            shared=True),
    Setting("log_level", "DIST_SYNC_LOG_LEVEL", _LOG_LEVELS["warning"], _parse_level,
            _level_rule,
            "`debug`, `info`, `warning`, `error` or `off`: messages of the C++ engine, on "
            "stderr, prefixed `[dist_sync rank R]`."),
    Setting("elastic_min_np", "DIST_SYNC_ELASTIC_MIN_NP", 1, int, _min_np_rule,
            "In an elastic run (`hvd.elastic.run` of dist_sync.torch or dist_sync.tensorflow, "
            "launched with `mpirun --with-ft ulfm`), the fewest ranks training continues on: when lost ranks leave fewer, every "
            "survivor ends with an error saying so."),
    Setting("elastic_max_np", "DIST_SYNC_ELASTIC_MAX_NP", 0, int, _max_np_rule,
            "In an elastic run, the size the survivors grow back to after losing ranks: they "
            "spawn replacements (`MPI_Comm_spawn`, the same command line as the ranks) and merge "
            "them in at the next `commit()`. `0`: the size the run started with. A value at or "
            "below the size left after a loss spawns nothing.",
            default_text="0 (the starting size)"),
    Setting("elastic_host_discovery_script", "DIST_SYNC_ELASTIC_HOST_DISCOVERY_SCRIPT", "", str,
            _path_rule,
            "In an elastic run, an executable that prints the hosts the job may use, one "
            "`host:slots` line each (Horovod's format; `host` alone: 1 slot). Rank 0 runs it "
            "after a loss, and no more replacements are spawned than its slots leave free "
            "(never beyond `DIST_SYNC_ELASTIC_MAX_NP`; `mpirun` still places them). A script "
            "that fails spawns none, with a warning.",
            default_text="(none)"),
    Setting("timeline", "DIST_SYNC_TIMELINE", "", str, _path_rule,
            "Write a Chrome-trace / Perfetto timeline of every tensor to this file (rank 0).",
            default_text="(off)"),
]
_BY_KEY = {s.key: s for s in SETTINGS}


def _resolve(setting: Setting, value: Any, source: str) -> Any:
    try:
        if isinstance(value, str) and setting.parse is not str:
            value = setting.parse(value)
        return setting.rule(value)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{source}: {error}") from None


def load(overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Resolves every setting: init() keyword, else environment variable, else default."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(_BY_KEY))
    if unknown:
        raise TypeError(f"unknown dist_sync setting(s) {unknown}; known: {sorted(_BY_KEY)}")
    config: Dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.key in overrides and overrides[setting.key] is not None:
            value = overrides[setting.key]
            config[setting.key] = _resolve(setting, value, f"init({setting.key}={value!r})")
            continue
        raw = os.environ.get(setting.env)
        if raw is None or raw == "":
            config[setting.key] = setting.default
            continue
        config[setting.key] = _resolve(setting, raw, f"{setting.env}={raw!r}")
    return config


def shared_keys() -> List[str]:
    """The settings every rank must agree on (Note [Settings every rank must share])."""
    return [setting.key for setting in SETTINGS if setting.shared]


def markdown_table() -> str:
    """The README's settings table."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    lines += [f"| `{s.env}` | {s.shown_default()} | {s.help} |" for s in SETTINGS]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
