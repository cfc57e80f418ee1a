"""Time as a dependency: the control plane asks a `Clock`, never `time.time()` directly.

The server runs on `SystemClock`. Tests and the simulator run on `SimulatedClock`, whose time
moves only when told to (`advance`, `set`), so a day of allocation decisions replays in
milliseconds and every timing assertion is exact.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock seconds since the epoch, and a way to wait for them to pass."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: `time.time()` and `asyncio.sleep`."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class SimulatedClock:
    """A clock that moves only when `advance` or `set` is called.

    Sleepers wake in deadline order as time passes their deadline; `advance` yields to the
    event loop after each wake-up, so woken tasks run before time moves on.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    def set(self, when: float) -> None:
        """Jump to `when` without waking anyone (for code that does not sleep)."""
        if when < self._now:
            raise ValueError(f"time cannot go back from {self._now} to {when}")
        self._now = float(when)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking every sleeper whose deadline passes."""
        if seconds < 0:
            raise ValueError("cannot advance by a negative duration")
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
            for _ in range(3):  # let the woken task run up to its next await
                await asyncio.sleep(0)
        self._now = target

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock."""
        return sum(1 for _, _, f in self._sleepers if not f.done())
