"""A watchdog for the event loop: how long it went without running, and what held it.

Every answer goes out from the event loop's thread, so any time the loop does not run is a
gap in answers for every client. The loop bumps a heartbeat every `BEAT` seconds; a thread
watches it, and when the loop has been silent for `threshold` seconds it records what every
thread was running (`sys._current_frames`), then logs the longest stall with those stacks
once the loop runs again. A stall caused by another thread holding the GIL shows that
thread's stack; one caused by a long callback shows the loop's own.

Off by default (`serve --stall-trace MS`): it costs a wake-up of the watching thread every
millisecond or two, which takes the GIL from the query path.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

log = logging.getLogger(__name__)

BEAT = 0.002


class StallTrace:
    """See the module docstring."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.beat = time.monotonic()
        self.stalls = 0
        self.longest = 0.0
        self._stacks: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_thread = threading.get_ident()
        self._tick(loop)
        self._thread = threading.Thread(target=self._watch, name="shadowdns-stalls",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        silent = now - self.beat
        self.beat = now
        if silent >= self.threshold:
            self.stalls += 1
            self.longest = max(self.longest, silent)
            log.warning("event loop stalled %.0f ms; threads during the stall:\n%s",
                        silent * 1000, self._stacks or "(not sampled)")
        self._stacks = None
        self._handle = loop.call_later(BEAT, self._tick, loop)

    def _watch(self) -> None:
        while not self._stop.wait(self.threshold / 2):
            beat = self.beat
            if time.monotonic() - beat >= self.threshold and self._stacks is None:
                self._stacks = _stacks()


def _stacks() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    me = threading.get_ident()
    out = []
    for ident, frame in sys._current_frames().items():
        if ident == me:
            continue
        lines = traceback.format_stack(frame, limit=8)
        out.append(f"--- {names.get(ident, ident)}\n{''.join(lines)}")
    return "\n".join(out)
