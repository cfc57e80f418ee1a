"""Runs CPU-heavy control-plane work (parsing zones, rendering master files) off the event
loop, without the cyclic collector stopping the loop meanwhile.

A worker thread leaves the loop free only while neither holds the GIL for long. Parsing a
zone of 10,000 RRsets allocates millions of objects, and every so many allocations the
collector runs a full (generation 2) pass over the whole heap, in whichever thread
allocated: 80-200 ms each, several per import, and the loop waits for each
(bench/api_import.py). So the collector is paused while such work runs (counted, so
overlapping jobs resume it once); the objects it makes are freed by reference counting
as usual, only cycles wait until it resumes. The API's body limit bounds what one job may
parse. `collector_paused` holds the pause across a whole API write, so what the request
keeps between jobs (the zone it edits) is dropped before the collector could scan it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_paused = 0


def _pause() -> None:
    global _paused
    with _lock:
        if _paused == 0 and gc.isenabled():
            gc.disable()
            _paused = 1
        elif _paused:
            _paused += 1


def _resume(keep: bool) -> None:
    global _paused
    with _lock:
        if _paused:
            _paused -= 1
            if keep:
                gc.freeze()
            if _paused == 0:
                gc.enable()


@contextlib.asynccontextmanager
async def collector_paused() -> AsyncIterator[None]:
    """Keep the collector paused across a whole request that parses big objects on worker
    threads and keeps some (a zone being edited): it resumes on the next turn of the loop,
    after the request has dropped them, instead of scanning them all on the loop when
    the first job ends."""
    _pause()
    try:
        yield
    finally:
        asyncio.get_running_loop().call_soon(_resume, False)


async def off_loop(fn: Callable[..., T], *args: object, keep: bool = False) -> T:
    """`fn(*args)` on a worker thread, the cyclic collector paused until it returns.

    With `keep` (what `fn` built lives on, as a reloaded configuration does), everything
    alive then is moved to the collector's permanent generation, as `serve` does with
    what it loads at start: otherwise the first collection after the pause scans all of it
    on the event loop (~100 ms for 10,000 RRsets)."""
    _pause()
    kept = False
    try:
        result = await asyncio.to_thread(fn, *args)
        kept = keep
        return result
    finally:
        _resume(kept)
