"""The event-loop watchdog reports a stall and what the loop's thread was doing in it."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from shadowdns.stalls import StallTrace


def hold_the_loop() -> None:
    time.sleep(0.3)


def test_a_blocked_loop_is_reported_with_its_stack(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> StallTrace:
        trace = StallTrace(0.1)
        trace.start(asyncio.get_running_loop())
        await asyncio.sleep(0.05)
        asyncio.get_running_loop().call_soon(hold_the_loop)
        await asyncio.sleep(0.2)
        trace.stop()
        return trace

    with caplog.at_level(logging.WARNING, logger="shadowdns.stalls"):
        trace = asyncio.run(main())
    assert trace.stalls >= 1
    assert trace.longest >= 0.3
    assert any("hold_the_loop" in r.getMessage() for r in caplog.records)


def test_a_free_loop_reports_nothing() -> None:
    async def main() -> StallTrace:
        trace = StallTrace(0.2)
        trace.start(asyncio.get_running_loop())
        for _ in range(20):
            await asyncio.sleep(0.01)
        trace.stop()
        return trace

    assert asyncio.run(main()).stalls == 0
