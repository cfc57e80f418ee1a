"""Garbage-collector pauses: timed, visible, and kept short.

The query path runs on one thread. A full cyclic collection holds the GIL while it walks
every tracked container in the process — the zones' dnspython objects, the snapshot, the
demand book's tens of thousands of series — and no answer goes out meanwhile: 100–350 ms
with 10,000 DIs (the longest gaps of the churn benchmark). Everything that large is
long-lived and freed by reference counting when replaced (a reload or a live change makes no
cyclic garbage: measured by unfreezing and collecting after repeated swaps), so after it is
built it is moved out of the collector's reach with `gc.freeze()`; full collections then walk
only what is young.

`settle()` is called after each such build (an answer-table pass, a demand read). Cyclic
garbage that is frozen would stay; to bound that, when the heap has grown to `GROWTH` times
its floor (`heap_blocks()`), `settle()` unfreezes and runs a full collection (a long pause,
logged). The floor is the heap's size after the last full collection or the last build
known to make no cycles (`rebase`: an answer-table pass with the reload before it, and the
demand book's series; tests/unit/process/test_no_cyclic_garbage.py checks the first), so
only growth from other work, which may hold cycles, counts towards a collection: a big
zone's import grows the live heap, and collecting then found nothing but cost 0.3 s of
answers.

Work that makes hundreds of thousands of objects in one go (a demand flush of one row per
series, the demand book's feed and forecasts, compiling answers) runs inside `paused()`: no
collection runs meanwhile, and what is still alive at its end is frozen rather than walked
by the next young collection (the objects are acyclic: reference counting frees them when
dropped). Cyclic garbage made by any thread during a pause is frozen with it; the growth
rule of `settle()` bounds what that keeps.

`Watch` times every collection through `gc.callbacks` for the metrics and logs the long
ones.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

LONG_PAUSE = 0.05
"""A collection at least this long (seconds) is logged."""

GROWTH = 2.0
"""The frozen set may grow to this multiple of its size after the last full collection."""

CHECK_EVERY = 20.0
"""Seconds between two looks at the frozen set's size."""

BOUNDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Watch:
    """Counts and times collections per generation (a histogram for /metrics)."""

    def __init__(self) -> None:
        self.counts = {g: [0] * (len(BOUNDS) + 1) for g in (0, 1, 2)}
        self.sums = {0: 0.0, 1: 0.0, 2: 0.0}
        self.longest = 0.0
        self._started = 0.0
        self._floor = 0  # heap_blocks() after the last full collection or rebase
        self._checked = -CHECK_EVERY
        self._rebase = False
        self.full_compactions = 0
        self._lock = threading.Lock()
        self._pauses = 0
        self._was_enabled = True

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = int(info.get("generation", 2))
        slot = next((i for i, b in enumerate(BOUNDS) if took <= b), len(BOUNDS))
        self.counts[generation][slot] += 1
        self.sums[generation] += took
        self.longest = max(self.longest, took)
        if took >= LONG_PAUSE:
            log.warning("garbage collection of generation %d paused the process %.0f ms "
                        "(%d objects collected)", generation, took * 1000,
                        info.get("collected", 0))

    def histogram(self, generation: int) -> tuple[list[tuple[str, int]], float]:
        """Cumulative buckets (Prometheus style, with +Inf) and the sum, in seconds."""
        out, total = [], 0
        for bound, count in zip((*map(str, BOUNDS), "+Inf"), self.counts[generation],
                                strict=True):
            total += count
            out.append((bound, total))
        return out, self.sums[generation]

    def hold(self) -> None:
        """Start a pause (see `paused`); every `hold` needs its `release`."""
        with self._lock:
            if not self._pauses:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._pauses += 1

    def release(self) -> None:
        with self._lock:
            self._pauses -= 1
            if not self._pauses:
                # What was made meanwhile and is still alive would otherwise be walked by
                # the next young collection (a forecast of every series: a million tuples);
                # frozen, it is freed by reference counting when dropped.
                gc.freeze()
                # A pause may have frozen cyclic garbage (any thread's): look at the growth
                # here too, as answer-table passes rebase instead of looking.
                self._look(check=False)
                if self._was_enabled:
                    gc.enable()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No automatic collection until the outermost pause of any thread ends."""
        self.hold()
        try:
            yield
        finally:
            self.release()

    def settle(self, check: bool = False, rebase: bool = False) -> None:
        """Freeze what is alive now (see the module docstring); `check`: look at the
        frozen set's growth now (before the listeners open, where a full collection
        costs no answer); `rebase`: what was just built is known to hold no cycles (the
        demand book's series), so the frozen set's size is the new floor, no collection."""
        gc.freeze()  # constant time: the generations' lists are spliced
        if rebase:  # counting walks the list: taken as the floor at the next look instead
            self._rebase = True
            return
        self._look(check)

    def _look(self, check: bool) -> None:
        now = time.monotonic()
        if not check and now - self._checked < CHECK_EVERY:
            return
        self._checked = now
        if not self._floor or self._rebase:
            self._floor = heap_blocks()
            self._rebase = False
        elif heap_blocks() > GROWTH * self._floor:
            started = time.perf_counter()
            gc.unfreeze()
            collected = gc.collect()
            self.full_compactions += 1
            log.info("full garbage collection after the heap grew: %d objects collected in "
                     "%.0f ms", collected, (time.perf_counter() - started) * 1000)
            gc.freeze()
            self._floor = heap_blocks()


def heap_blocks() -> int:
    """The heap's size as the growth rule measures it: the allocator's blocks in use.

    Not `gc.get_freeze_count()`, which walks the frozen list while holding the GIL: 40 ms
    for 3,000,000 objects, a gap in answers at each look (30 ms in the churn benchmark,
    after a demand flush). The block count is read off the allocator's arenas (about 1 ms
    for 9,000,000 blocks); what the heap holds besides frozen objects is young or not
    tracked (bytes, str), and a build that adds those is a rebase."""
    return sys.getallocatedblocks()


WATCH = Watch()
"""The process's one watch (collections are process-wide)."""
