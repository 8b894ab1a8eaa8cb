"""The README opens with the two commands and documents every DIST_SYNC_* setting."""
from pathlib import Path

from dist_sync import config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_lines = README.splitlines()[:4]
    assert any(line.startswith("make demo") for line in first_lines)
    assert any(line.startswith("make test") for line in first_lines)


def test_every_setting_is_documented():
    for setting in config.SETTINGS:
        assert f"`{setting.env}`" in README, f"{setting.env} is not in the README"


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
