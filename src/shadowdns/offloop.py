"""Runs CPU-heavy control-plane work (parsing zones, rendering master files) off the event
loop, without the cyclic collector stopping the loop meanwhile.

A worker thread leaves the loop free only while neither holds the GIL for long. Parsing a
zone of 10,000 RRsets allocates millions of objects, and every so many allocations the
collector runs a full (generation 2) pass over the whole heap, in whichever thread
allocated: 80-200 ms each, several per import, and the loop waits for each
(bench/api_import.py). So the collector is paused while such work runs (`gcwatch`'s one
pause, counted across threads); the objects it makes are freed by reference counting as
usual, and what is still alive when the last pause ends is frozen. The API's body limit
bounds what one job may parse. `collector_paused` holds the pause across a whole API
write, so what the request keeps between jobs (the zone it edits) is dropped before the
collector could scan it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from shadowdns.gcwatch import WATCH

T = TypeVar("T")


@contextlib.asynccontextmanager
async def collector_paused() -> AsyncIterator[None]:
    """Keep the collector paused across a whole request that parses big objects on worker
    threads and keeps some (a zone being edited): it resumes on the next turn of the loop,
    after the request has dropped them, instead of scanning them all on the loop when
    the first job ends."""
    WATCH.hold()
    try:
        yield
    finally:
        asyncio.get_running_loop().call_soon(WATCH.release)


async def off_loop(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` on a worker thread, the cyclic collector paused until it returns (what
    is alive then is frozen, not scanned on the event loop: see `gcwatch`)."""
    with WATCH.paused():
        return await asyncio.to_thread(fn, *args)
