"""Demand upkeep in serve: rollups and retention on a schedule, surviving a failing store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from shadowdns.store.base import DemandRow, Retention
from shadowdns.store.sqlite import SQLiteStore
from shadowdns.upkeep import DemandUpkeep

T0 = 1_714_564_800  # a whole hour
DI = "app.example.com."


async def direct(fn: Callable[..., Any], *args: object) -> Any:
    return fn(*args)


def test_once_rolls_up_then_forgets_old_minutes() -> None:
    """One run completes the 5-minute and hourly buckets that ended, then drops minute rows
    past their retention: the history survives in the rollups."""
    store = SQLiteStore(":memory:", retention=Retention(minute=3600))
    store.add_demand([DemandRow(DI, "EU", T0 + 60, "nodata", 4),
                      DemandRow(DI, "EU", T0 + 60, "primary", 3)])
    upkeep = DemandUpkeep(store, direct, 60.0, now=lambda: T0 + 2 * 3600)
    assert asyncio.run(upkeep.once())
    assert store.demand_series("minute", 0, T0 + 86400) == {}
    assert store.demand_series("5m", 0, T0 + 86400) == {(DI, "EU"): [(T0, 7)]}
    assert store.demand_series("hour", 0, T0 + 86400) == {(DI, "EU"): [(T0, 7)]}
    assert (upkeep.runs, upkeep.failures, upkeep.last_ok) == (1, 0, T0 + 2 * 3600)


def test_a_failing_store_is_logged_once_and_tried_again(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    """Failures never raise: the first is logged, repeats are only counted, and the run
    after the store recovers says so and does the work."""
    store = SQLiteStore(":memory:")
    store.add_demand([DemandRow(DI, "EU", T0, "primary", 5)])
    broken = True

    async def io(fn: Callable[..., Any], *args: object) -> Any:
        if broken:
            raise OSError("disk gone")
        return fn(*args)

    upkeep = DemandUpkeep(store, io, 60.0, now=lambda: T0 + 3600)
    with caplog.at_level(logging.INFO, logger="shadowdns.upkeep"):
        assert not asyncio.run(upkeep.once())
        assert not asyncio.run(upkeep.once())
        broken = False
        assert asyncio.run(upkeep.once())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("disk gone" in m for m in messages) == 1
    assert any("works again" in m for m in messages)
    assert (upkeep.runs, upkeep.failures) == (1, 2)
    assert store.demand_series("5m", 0, T0 + 3600) == {(DI, "EU"): [(T0, 5)]}
