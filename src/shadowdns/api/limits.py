"""Limits on what an API client may send: body size, JSON depth, and failed logins.

They run before anything else looks at a request, so a client without a token cannot make
the server buffer a huge body or recurse through a deeply nested document (issue 15):

- `BodyLimits` (ASGI middleware, outermost) answers 413 when the declared or received body
  passes `max_body` bytes, without reading further, and 422 when a JSON body nests deeper
  than `max_depth`, before FastAPI parses it. The depth scan is vectorised (numpy) so a
  1 MiB body costs milliseconds on the event loop, not a Python loop per byte.
- `LoginGuard` counts bad tokens per client address in a sliding window; past `limit`
  failures the address gets 429 with ``Retry-After`` until the oldest failure leaves the
  window. Failures are logged with the address and the reason, never the token.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shadowdns.api.errors import ApiError, ProblemItem

MAX_DEPTH = 32  # the deepest policy document nests 6 levels
LOGIN_WINDOW = 60.0  # seconds failed logins are remembered for
MAX_TRACKED_ADDRESSES = 100_000

_BRACKETS = np.zeros(256, dtype=np.int8)
_BRACKETS[[ord("["), ord("{")]] = 1
_BRACKETS[[ord("]"), ord("}")]] = -1


def json_depth(body: bytes) -> int:
    """How deep arrays and objects nest in JSON text (brackets inside strings ignored).

    Whole-array steps only: a regular expression over the strings ran at ~100 ns a byte on
    the event loop (a 266 KiB zone import: 30-70 ms without answers)."""
    raw = np.frombuffer(body, dtype=np.uint8)
    steps = _BRACKETS[raw]
    if not steps.any():
        return 0
    # A quote opens or closes a string unless an odd run of backslashes precedes it.
    index = np.arange(raw.size, dtype=np.int64)
    last_plain = np.maximum.accumulate(np.where(raw != ord("\\"), index, -1))
    run = np.empty_like(index)
    run[0] = 0
    run[1:] = index[:-1] - last_plain[:-1]  # backslashes right before each byte
    quotes = (raw == ord('"')) & (run % 2 == 0)
    outside = np.cumsum(quotes, dtype=np.int64) % 2 == 0  # a bracket is never a quote
    depth = np.cumsum(np.where(outside, steps, 0), dtype=np.int64)
    return int(depth.max(initial=0))


def too_large(max_body: int) -> ApiError:
    return ApiError(413, "too_large", f"the request body is larger than {max_body} bytes "
                    "(the server's --api-max-body)",
                    [ProblemItem(path="body", message=f"at most {max_body} bytes")])


def too_deep(depth: int, max_depth: int) -> ApiError:
    return ApiError(422, "too_deep", f"the JSON body nests {depth} levels; at most "
                    f"{max_depth} are accepted",
                    [ProblemItem(path="body", message=f"nested deeper than {max_depth}")])


class BodyLimits:
    """ASGI middleware: refuse over-large bodies (413) and over-deep JSON (422) up front."""

    def __init__(self, app: ASGIApp, max_body: int, max_depth: int = MAX_DEPTH) -> None:
        self.app = app
        self.max_body = max_body
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await too_large(self.max_body).response()(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await too_large(self.max_body).response()(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        # FastAPI reads a body without a Content-Type as JSON too. Fewer opening brackets
        # than the limit cannot nest deeper (a zone import has two): counted in C, no scan.
        if body.count(b"[") + body.count(b"{") > self.max_depth:
            depth = json_depth(body)
            if depth > self.max_depth:
                await too_deep(depth, self.max_depth).response()(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class LoginGuard:
    """Failed logins per client address in a sliding window (in memory, per process)."""

    def __init__(self, limit: int, window: float = LOGIN_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.failures: dict[str, deque[float]] = {}
        self.refused = 0  # requests answered 429

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self.failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self.failures[address]
            return None
        return times

    def check(self, address: str) -> None:
        """429 with Retry-After while `address` has `limit` failures in the window."""
        if self.limit <= 0:
            return
        now = self.clock()
        times = self._recent(address, now)
        if times is None or len(times) < self.limit:
            return
        self.refused += 1
        wait = max(1, math.ceil(times[0] + self.window - now))
        raise ApiError(429, "too_many_failures",
                       f"{len(times)} failed logins from {address} in the last "
                       f"{self.window:g} s; retry in {wait} s",
                       headers={"Retry-After": str(wait)})

    def failed(self, address: str) -> int:
        """Record a failure; how many `address` has in the window now."""
        now = self.clock()
        times = self._recent(address, now)
        if times is None:
            if len(self.failures) >= MAX_TRACKED_ADDRESSES:  # forget the stalest address
                del self.failures[next(iter(self.failures))]
            times = self.failures[address] = deque(maxlen=max(1, self.limit))
        times.append(now)
        return len(times)
