"""The traffic CSV format: what is accepted, and every reason a row is rejected."""

from __future__ import annotations

import io

import pytest

from shadowdns.errors import ConfigError
from shadowdns.store.traffic_csv import (
    TrafficRow,
    format_timestamp,
    parse_timestamp,
    read_traffic,
    write_traffic,
)

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", T0),
        ("2024-05-01T12:00:00", T0),
        ("2024-05-01 12:00:00", T0),
        ("2024-05-01T14:00:00+02:00", T0),
        ("2024-05-01T12:00:30.5", T0 + 30.5),
        (" 2024-05-01 12:00:00 ", T0),
    ],
)
def test_timestamps_are_iso8601_and_naive_means_utc(text: str, expected: float) -> None:
    """ISO 8601 with T or space, with or without offset; no offset is UTC."""
    assert parse_timestamp(text) == expected


def test_format_timestamp_round_trips() -> None:
    """What export writes, import reads back to the same second."""
    assert format_timestamp(T0) == "2024-05-01T12:00:00Z"
    assert parse_timestamp(format_timestamp(T0)) == T0


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        pytest.param(
            "timestamp,di,region,queries\n2024-05-01T12:00:00Z,app.example.com.,EU,5\n",
            [TrafficRow(T0, "app.example.com.", "EU", 5)],
            id="with-header",
        ),
        pytest.param(
            "2024-05-01 12:00:00,app.example.com,EU,5\r\n\n",
            [TrafficRow(T0, "app.example.com.", "EU", 5)],
            id="no-header-crlf-blank-line-relative-di",
        ),
        pytest.param(" Timestamp , DI,Region,QUERIES\n", [], id="header-only"),
        pytest.param("", [], id="empty"),
    ],
)
def test_good_files_are_read(text: str, rows: list[TrafficRow]) -> None:
    """Header optional, blank lines skipped, DI names made absolute."""
    assert read_traffic(io.StringIO(text), "t.csv") == rows


BAD = """timestamp,di,region,queries
2024-05-01T12:00:00Z,app.example.com.,EU,5
yesterday,app.example.com.,EU,5
2024-05-01T12:00:00Z,,EU,5
2024-05-01T12:00:00Z,app.example.com.,,5
2024-05-01T12:00:00Z,app.example.com.,EU,1.5
2024-05-01T12:00:00Z,app.example.com.,EU,-3
2024-05-01T12:00:00Z,app.example.com.,EU,NaN
2024-05-01T12:00:00Z,app.example.com.,EU
2024-05-01T12:00:00Z,app.example.com.,EU,5,extra
2024-05-01T12:00:00Z,app.example.com.,EU,many
1960-01-01T00:00:00Z,app.example.com.,EU,5
2024-13-01T00:00:00Z,,EU,-1
"""


def test_every_bad_line_is_reported_with_its_reason() -> None:
    """Reading stops at nothing: every bad line gets a problem with its number and reason."""
    with pytest.raises(ConfigError) as caught:
        read_traffic(io.StringIO(BAD), "bad.csv")
    found = [(p.file, p.line, p.reason) for p in caught.value.problems]
    expected = [
        (3, "timestamp 'yesterday' is not ISO 8601"),
        (4, "empty di"),
        (5, "empty region"),
        (6, "queries '1.5' is not an integer"),
        (7, "queries '-3' is negative"),
        (8, "queries 'NaN' is not a number (NaN)"),
        (9, "expected 4 columns (timestamp,di,region,queries), got 3"),
        (10, "expected 4 columns (timestamp,di,region,queries), got 5"),
        (11, "queries 'many' is not an integer"),
        (12, "timestamp '1960-01-01T00:00:00Z' is before 1970"),
        (13, "timestamp '2024-13-01T00:00:00Z' is not ISO 8601"),
        (13, "empty di"),
        (13, "queries '-1' is negative"),
    ]
    assert found == [("bad.csv", line, reason) for line, reason in expected]
    assert "bad.csv:13: queries '-1' is negative" in str(caught.value)


def test_write_traffic_writes_a_header_and_rows() -> None:
    """Export writes the header, then one line per bucket."""
    out = io.StringIO()
    assert write_traffic([(int(T0), "a.", "EU", 3)], out) == 1
    assert out.getvalue() == "timestamp,di,region,queries\n2024-05-01T12:00:00Z,a.,EU,3\n"
