"""Every user setting of dist_sync, read from ``DIST_SYNC_*`` environment variables in one place.

``init()`` keyword arguments override the environment. The defaults are the documented ones
(README, "Configuration"); docs/benchmarks.md says how the tuned ones were chosen.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict

_LOG_LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3, "off": 4}


def parse_bytes(text: str) -> int:
    """Parses a byte count such as ``65536``, ``64K``, ``64MiB`` or ``1G``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a byte count (examples: 65536, 64K, 64MiB, 1G)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


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


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive integer")
    return value


@dataclass(frozen=True)
class Setting:
    key: str            # name in the dict handed to the engine, and init() keyword
    env: str            # environment variable
    default: Any
    parse: Callable[[str], Any]
    help: str
    # Every rank must use the same value (it decides message sizes, algorithms or cache bit
    # positions): the engine adopts rank 0's and warns on a rank whose own differs.
    shared: bool = False


SETTINGS = [
    Setting("fusion_threshold_bytes", "DIST_SYNC_FUSION_THRESHOLD", 64 << 20, parse_bytes,
            "Ready tensors of the same dtype/op are reduced together in one ring pass up to this "
            "many bytes; 0 disables fusion.", shared=True),
    Setting("cycle_time_ms", "DIST_SYNC_CYCLE_TIME_MS", 5.0, _non_negative_float,
            "How often an idle engine runs a negotiation cycle. A submitted tensor wakes the "
            "engine at once; this bounds how long it waits for a rank whose engine is idle."),
    Setting("cache_capacity", "DIST_SYNC_CACHE_CAPACITY", 1024, int,
            "Entries in the response cache (requests negotiated once, then answered by one bit); "
            "0 disables it.", shared=True),
    Setting("stall_warning_seconds", "DIST_SYNC_STALL_WARNING_SECONDS", 60.0, _non_negative_float,
            "Rank 0 warns about operations submitted by some ranks but not others for this long."),
    Setting("stall_timeout_seconds", "DIST_SYNC_STALL_TIMEOUT_SECONDS", 1800.0, _non_negative_float,
            "After this long every rank fails its pending operations and the job exits; 0 = never."),
    Setting("fatal_grace_seconds", "DIST_SYNC_FATAL_GRACE_SECONDS", 10.0, _non_negative_float,
            "After a fatal error (a lost rank, a stall timeout) the process has this long to exit "
            "by itself before dist_sync ends the job with MPI_Abort."),
    Setting("ring_segment_bytes", "DIST_SYNC_RING_SEGMENT_BYTES", 0, parse_bytes,
            "Ring messages are cut into segments of this size so reduction overlaps transfer; "
            "0 (default): 1 MiB within a host, 32 KiB when the ring crosses hosts.", shared=True),
    Setting("ring_in_flight", "DIST_SYNC_RING_IN_FLIGHT", 4, _positive_int,
            "Ring segments in flight per direction."),
    Setting("small_allreduce_bytes", "DIST_SYNC_SMALL_ALLREDUCE_BYTES", 64 << 10, parse_bytes,
            "Allreduces up to this size use recursive doubling (fewer, latency-bound messages) "
            "instead of the ring.", shared=True),
    Setting("hierarchical_allreduce", "DIST_SYNC_HIERARCHICAL_ALLREDUCE", False, _parse_bool,
            "Allreduce large buffers hierarchically: reduce-scatter within each host, allreduce "
            "across hosts, allgather within each host (needs the same number of ranks per host).",
            shared=True),
    Setting("log_level", "DIST_SYNC_LOG_LEVEL", _LOG_LEVELS["warning"], _parse_level,
            "debug, info, warning, error or off (messages from the C++ engine, on stderr)."),
    Setting("timeline", "DIST_SYNC_TIMELINE", "", str,
            "Write a Chrome-trace/Perfetto timeline of every tensor to this file (rank 0)."),
]
_BY_KEY = {s.key: s for s in SETTINGS}


def load(overrides: Dict[str, Any] | None = None) -> Dict[str, Any]:
    """Resolves every setting: init() keyword, else environment variable, else default."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(_BY_KEY))
    if unknown:
        raise TypeError(f"unknown dist_sync setting(s) {unknown}; known: {sorted(_BY_KEY)}")
    config: Dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.key in overrides and overrides[setting.key] is not None:
            value = overrides[setting.key]
            config[setting.key] = setting.parse(str(value)) if isinstance(value, str) else value
            continue
        raw = os.environ.get(setting.env)
        if raw is None or raw == "":
            config[setting.key] = setting.default
            continue
        try:
            config[setting.key] = setting.parse(raw)
        except ValueError as error:
            raise ValueError(f"{setting.env}={raw!r}: {error}") from None
    return config
