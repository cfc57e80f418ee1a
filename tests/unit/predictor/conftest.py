"""Small slices of the real traffic traces in tests/data/traffic, shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadowdns.predictor.series import Series, read_csv

TRAFFIC = Path(__file__).resolve().parents[2] / "data" / "traffic"
NASA = TRAFFIC / "nasa-http" / "nasa_http_1995-07_5min.csv"
ELB = TRAFFIC / "nab-aws-elb" / "elb_request_count_8c0756.csv"
TAXI = TRAFFIC / "nab-nyc-taxi" / "nyc_taxi.csv"


def head(path: Path, steps: int) -> Series:
    """The first ``steps`` steps of the trace at ``path``."""
    return read_csv(path)[0].head(steps)


@pytest.fixture(scope="session")
def nasa() -> Series:
    """Five days of NASA HTTP requests per 5 minutes (strong daily pattern, bursty)."""
    return head(NASA, 5 * 288)


@pytest.fixture(scope="session")
def elb() -> Series:
    """Five days of AWS ELB requests per 5 minutes (low counts, weak pattern, spikes)."""
    return head(ELB, 5 * 288)


@pytest.fixture(scope="session")
def taxi() -> Series:
    """Ten days of NYC taxi passengers per 30 minutes (a 48-step season)."""
    return head(TAXI, 10 * 48)
