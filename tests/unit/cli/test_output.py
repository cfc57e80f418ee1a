"""How listings read: allocation reasons as words, durations, times, progress lines."""

from __future__ import annotations

import io

import pytest

from shadowdns.allocator.planner import reason_text
from shadowdns.output import Progress, cell, duration_words, reason_words, when


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        (reason_text(why="forecast", predicted=130.4567, observed=80.0, model="ets",
                     threshold=100.0, quantile=0.9, p_cross=0.62,
                     window=[1764680700, 1764681000]),
         "forecast: predicted 130 >= threshold 100, observed 80, model ets, quantile 0.9, "
         "P(cross) 0.62, window 13:05-13:10 UTC"),
        (reason_text(why="below threshold", threshold=100.0, min_hold=1800.0),
         "below threshold: threshold 100, min hold 30m"),
        (reason_text(why="pin"), "pin"),
        ("pinned by ops", "pinned by ops"),
        ("moved to a better resource", "moved to a better resource"),
        ("[1, 2]", "[1, 2]"),
        ("", ""),
    ],
)
def test_reasons_read_as_words(reason: str, words: str) -> None:
    """The allocator's JSON reasons become a sentence; hand-written ones stay as they are."""
    assert reason_words(reason) == words


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(45, "45s"), (90, "1.5m"), (1800, "30m"), (7200, "2h"), (129600, "1.5d"), (None, "-")],
)
def test_durations_use_the_largest_unit(seconds: float | None, text: str) -> None:
    assert duration_words(seconds) == text


def test_configs_read_as_key_value_pairs() -> None:
    """`di list` / `resource list` show a config as `key=value`, nested in braces."""
    config = {"primaries": ["web-eu-1", "web-us-1"], "ttl": 30, "warm": True,
              "policy": {"lead_time": 900, "model": "auto"}, "check": None}
    assert cell(config) == ("primaries=web-eu-1,web-us-1 ttl=30 warm=yes "
                            "policy={lead_time=900 model=auto} check=-")


def test_times_are_utc_and_missing_ones_a_dash() -> None:
    assert when(0) == "1970-01-01 00:00:00"
    assert when(None) == "-"
    assert when(True) == "-"


def test_progress_prints_the_first_and_last_step_and_throttles_between() -> None:
    """A million steps print a handful of lines, always including the end."""
    out = io.StringIO()
    progress = Progress("import", "rows", every=3600.0, stream=out)
    for done in range(0, 1_000_001, 1000):
        progress(done, 1_000_000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("import: 0/1,000,000 rows (0%)")
    assert lines[1].startswith("import: 1,000,000/1,000,000 rows (100%)")
