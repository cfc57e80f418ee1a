"""Keeps the demand tables in shape while `serve` runs: rollups, then retention.

Flushes write minute buckets (and the pending 5-minute ones); the 5-minute and hourly
tables — what the API, the dashboard and the allocator's history beyond the minute table
read — fill only when `Store.rollup` runs, and nothing is forgotten unless
`Store.apply_retention` runs. `DemandUpkeep` runs both every `interval`, just after the
flush that may complete a bucket, on the store's thread (never on the event loop). A
failure is logged and tried again next time; it never ends the task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from shadowdns.runtime import IO
from shadowdns.store import Resolution, Store

log = logging.getLogger(__name__)

AFTER_FLUSH = 2.0  # seconds after an interval ends: the flush (0.5 s after it) is written


class DemandUpkeep:
    """Rollups and retention of one store, on a schedule (see the module docstring)."""

    def __init__(self, store: Store, io: IO, interval: float,
                 now: Callable[[], float] = time.time,
                 active: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        self.io = io
        self.interval = interval
        self.now = now
        self.active = active  # in a fleet only the leader does it (any node could)
        self.runs = 0
        self.failures = 0
        self.last_ok: float | None = None
        self._failing = False

    async def once(self) -> bool:
        """Roll up the buckets complete now, then drop those past retention; True if both
        worked."""
        now = self.now()
        try:
            rolled: dict[Resolution, int] = await self.io(self.store.rollup, now)
            deleted: dict[Resolution, int] = await self.io(self.store.apply_retention, now)
        except Exception as exc:
            self.failures += 1
            if not self._failing:
                log.warning("demand rollup/retention failed (tried again every %gs): %s",
                            self.interval, exc)
            self._failing = True
            return False
        self.runs += 1
        self.last_ok = now
        if self._failing:
            log.info("demand rollup/retention works again")
        self._failing = False
        log.debug("demand upkeep: rolled up %s, deleted %s", rolled, deleted)
        return True

    async def run(self) -> None:
        """Every `interval` until cancelled, starting at once (a restart catches up)."""
        delay = min(AFTER_FLUSH, self.interval / 2)
        while True:
            if self.active():
                await self.once()
            wall = time.time()
            due = ((wall - delay) // self.interval + 1) * self.interval + delay
            await asyncio.sleep(due - wall)
