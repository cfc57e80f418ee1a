"""Reading demand series: grids, gaps, the accepted CSV shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shadowdns.errors import ConfigError
from shadowdns.predictor.series import fill_gaps, read_csv, read_input, regularise

from .conftest import ELB, TRAFFIC


def test_off_grid_timestamps_are_rounded_and_gaps_interpolated() -> None:
    """Timestamps off the grid of the first one snap to it; a missing step is interpolated."""
    ts = np.array([0.0, 300.0, 905.0, 1200.0])
    s = regularise("x", ts, np.array([1.0, 2.0, 4.0, 5.0]), 300)
    assert s.values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert s.step == 300 and s.start == 0


def test_duplicates_are_averaged() -> None:
    """Two rows for one step count as their mean."""
    s = regularise("x", np.array([0.0, 0.0, 300.0]), np.array([2.0, 4.0, 5.0]), 300)
    assert s.values.tolist() == [3.0, 5.0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0]),
        ([np.nan, 2.0, np.nan], [2.0, 2.0, 2.0]),
        ([np.nan, np.nan], []),
        ([], []),
    ],
)
def test_fill_gaps(values: list[float], expected: list[float]) -> None:
    """NaN is interpolated, edges take the nearest value, all-NaN is no history at all."""
    assert fill_gaps(np.array(values)).tolist() == expected


def test_elb_trace_has_its_documented_length() -> None:
    """The ELB trace, with 8 off-grid timestamps, regularises to 4,040 five-minute steps."""
    [s] = read_csv(ELB)
    assert len(s.values) == 4040 and s.step == 300 and s.season == 288


def test_nan_and_garbage_in_an_import_become_gaps(tmp_path: Path) -> None:
    """NaN, empty and unparsable values are interpolated, not errors."""
    path = tmp_path / "s.csv"
    rows = ["timestamp,value"] + [
        f"2024-01-01 00:{5 * i:02d}:00,{v}" for i, v in enumerate(["1", "nan", "", "x", "5"])
    ]
    path.write_text("\n".join(rows) + "\n")
    [s] = read_csv(path)
    assert s.values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_multi_series_file_fills_missing_steps_with_zero(tmp_path: Path) -> None:
    """In timestamp,di,region,queries files a step without a row had no queries."""
    path = tmp_path / "demand.csv"
    path.write_text(
        "timestamp,di,region,queries\n"
        "2024-05-01T12:00:00Z,app.example.com.,EU,5\n"
        "2024-05-01T12:10:00Z,app.example.com.,EU,7\n"
        "2024-05-01T12:05:00Z,app.example.com.,NA,2\n"
    )
    series = {s.key: s for s in read_csv(path)}
    assert series["app.example.com.|EU"].values.tolist() == [5.0, 0.0, 7.0]
    assert series["app.example.com.|NA"].values.tolist() == [2.0]


def test_count_rows_are_summed_into_their_step(tmp_path: Path) -> None:
    """Counts add up: duplicate rows of a (di, region, step) and off-grid rows sum into the
    epoch-grid step that contains them; a caller's bucket gathers finer rows."""
    path = tmp_path / "demand.csv"
    path.write_text(
        "timestamp,di,region,queries\n"
        "2024-05-01T12:00:00Z,app.example.com.,EU,5\n"
        "2024-05-01T12:00:00Z,app.example.com.,EU,4\n"
        "2024-05-01T12:07:30Z,app.example.com.,EU,1\n"
        "2024-05-01T12:05:00Z,app.example.com.,EU,2\n"
        "2024-05-01T12:14:59Z,app.example.com.,NA,3\n"
    )
    series = {s.key: s for s in read_csv(path)}
    eu = series["app.example.com.|EU"]
    assert eu.values.tolist() == [9.0, 3.0] and eu.step == 300
    assert eu.start * 300 == 1714564800  # 2024-05-01T12:00:00Z
    assert series["app.example.com.|NA"].start == eu.start + 2
    [na_15, eu_15] = sorted(read_csv(path, bucket=900), key=lambda s: s.key, reverse=True)
    assert eu_15.values.tolist() == [12.0] and na_15.values.tolist() == [3.0]


def test_one_row_per_query_is_binned_into_the_bucket(tmp_path: Path) -> None:
    """A log of single queries at irregular seconds becomes queries per bucket."""
    rng = np.random.default_rng(5)
    stamps = np.sort(rng.uniform(0, 3600, 500)) + 1_714_564_800
    path = tmp_path / "log.csv"
    path.write_text("timestamp,di,region,queries\n"
                    + "".join(f"{t:.3f},a.example.,EU,1\n" for t in stamps))
    [s] = read_csv(path, bucket=300)
    assert s.step == 300 and s.values.sum() == 500 and len(s.values) == 12
    expected = np.bincount(((stamps - 1_714_564_800) // 300).astype(int), minlength=12)
    assert s.values.tolist() == expected.astype(float).tolist()


def test_folder_input_reads_every_trace() -> None:
    """A folder yields one series per timestamp,value file, named by relative path."""
    keys = [s.key for s in read_input(TRAFFIC)]
    assert "nab-aws-elb/elb_request_count_8c0756" in keys and len(keys) == 4


def test_wrong_columns_are_a_config_error(tmp_path: Path) -> None:
    """A file of neither shape is rejected with its name."""
    path = tmp_path / "bad.csv"
    path.write_text("when,count\n1,2\n")
    with pytest.raises(ConfigError, match=r"bad\.csv"):
        read_csv(path)


def test_bad_timestamp_names_file_and_line(tmp_path: Path) -> None:
    """An unreadable timestamp is a config error with the file and line."""
    path = tmp_path / "s.csv"
    path.write_text("timestamp,value\n2024-01-01 00:00:00,1\nyesterday,2\n")
    with pytest.raises(ConfigError, match=r"s\.csv:3: bad timestamp"):
        read_csv(path)
