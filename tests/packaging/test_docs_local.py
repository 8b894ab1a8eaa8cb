"""The README opens with the two commands and documents every DIST_SYNC_* setting exactly as
dist_sync/config.py declares it; every setting is validated by one rule wherever it comes from."""

import pytest

from dist_sync import config
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_lines = README.splitlines()[:4]
    assert any(line.startswith("make demo") for line in first_lines)
    assert any(line.startswith("make test") for line in first_lines)


def test_every_setting_is_documented():
    for setting in config.SETTINGS:
        assert f"`{setting.env}`" in README, f"{setting.env} is not in the README"


def test_readme_settings_table_is_the_declared_table():
    # Names, defaults and texts: the README holds config.markdown_table() verbatim
    # (regenerate with `python -m dist_sync.config`).
    assert config.markdown_table() in README


def test_documented_defaults_are_the_defaults():
    for setting in config.SETTINGS:
        shown = setting.shown_default()
        if setting.default_text is None and setting.parse is not str:
            assert setting.parse(shown.replace(" ", "")) == setting.default, setting.env
        assert setting.rule(setting.default) == setting.default, setting.env


@pytest.mark.parametrize("key,value,message", [
    ("cycle_time_ms", -1, "init(cycle_time_ms=-1): -1 is outside [0.1, 60000]"),
    ("cycle_time_ms", "nan", "init(cycle_time_ms='nan'): nan is outside"),
    ("cycle_time_ms", float("inf"), "init(cycle_time_ms=inf): inf is outside"),
    ("cycle_time_ms", 1e300, "is outside [0.1, 60000]"),
    ("cycle_time_ms", 0, "init(cycle_time_ms=0): 0 is outside [0.1, 60000]"),
    ("cache_capacity", -1, "init(cache_capacity=-1): -1 is outside [0, 65536]"),
    ("cache_capacity", 2.5, "init(cache_capacity=2.5): expected an integer, got float"),
    ("ring_in_flight", 0, "init(ring_in_flight=0): 0 is outside [1, 64]"),
    ("fusion_threshold_bytes", -5, "init(fusion_threshold_bytes=-5): -5 is outside"),
    ("stall_timeout_seconds", float("nan"), "init(stall_timeout_seconds=nan): nan is outside"),
    ("hierarchical_allreduce", "maybe", "'maybe' is not a boolean"),
    ("log_level", 9, "init(log_level=9): 9 is outside [0, 4]"),
    ("timeline", 3, "init(timeline=3): expected a path, got int"),
])
def test_init_settings_are_validated(key, value, message):
    with pytest.raises((TypeError, ValueError)) as raised:
        config.load({key: value})
    assert message in str(raised.value)


@pytest.mark.parametrize("env,value,message", [
    ("DIST_SYNC_CYCLE_TIME_MS", "nan", "DIST_SYNC_CYCLE_TIME_MS='nan': nan is outside"),
    ("DIST_SYNC_CYCLE_TIME_MS", "inf", "DIST_SYNC_CYCLE_TIME_MS='inf': inf is outside"),
    ("DIST_SYNC_CYCLE_TIME_MS", "1e300", "DIST_SYNC_CYCLE_TIME_MS='1e300': 1e+300 is outside"),
    ("DIST_SYNC_CACHE_CAPACITY", "-1", "DIST_SYNC_CACHE_CAPACITY='-1': -1 is outside"),
    ("DIST_SYNC_RING_SEGMENT_BYTES", "lots", "'lots' is not a byte count"),
])
def test_environment_settings_are_validated(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        config.load()


def test_settings_parse_and_reject_bad_values(monkeypatch):
    monkeypatch.setenv("DIST_SYNC_FUSION_THRESHOLD", "32M")
    monkeypatch.setenv("DIST_SYNC_CYCLE_TIME_MS", "2.5")
    loaded = config.load({"ring_segment_bytes": "1MiB"})
    assert loaded["fusion_threshold_bytes"] == 32 << 20
    assert loaded["cycle_time_ms"] == 2.5
    assert loaded["ring_segment_bytes"] == 1 << 20
    monkeypatch.setenv("DIST_SYNC_CYCLE_TIME_MS", "fast")
    try:
        config.load()
    except ValueError as error:
        assert "DIST_SYNC_CYCLE_TIME_MS='fast'" in str(error)
    else:
        raise AssertionError("a bad value was accepted")
    monkeypatch.delenv("DIST_SYNC_CYCLE_TIME_MS")
    try:
        config.load({"no_such_setting": 1})
    except TypeError as error:
        assert "no_such_setting" in str(error)
    else:
        raise AssertionError("an unknown setting was accepted")
