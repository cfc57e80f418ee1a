"""Records the running server's parts share without importing the composition root.

`app.Service` builds the parts (health, control plane, API) and hands each the inputs it
declares in its own package; what several of them name — how a reload went, the degraded
reason a failed one sets, the shape of a store call run on the store's thread — lives here,
so no part imports `shadowdns.app` back. Nothing here imports the rest of shadowdns.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

# The degraded reason a failed reload sets (and a good one clears): still serving, but not
# what the files say.
RELOAD_FAILED = "config_reload_failed"
# The degraded reason of a fleet node whose DNSSEC keys conflict with the store's: it keeps
# signing with its own, which its fleet does not serve.
KEY_CONFLICT = "dnssec_key_conflict"


class IO(Protocol):
    """Runs a store call on the store's thread: `await io(store.method, *args)`
    (`app.Service.run_in_io`; the store's connection belongs to that thread)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


@dataclass(slots=True)
class ReloadStatus:
    """What became of the reloads of this process: /readyz, /metrics and the status
    endpoint read it, so a refused configuration is seen without reading the log."""

    last_attempt: float | None = None
    last_success: float = field(default_factory=time.time)  # the start-up load counts
    failures: int = 0
    error: str | None = None  # why the last reload failed; None when it worked

    def succeeded(self, now: float) -> None:
        self.last_attempt = self.last_success = now
        self.error = None

    def failed(self, now: float, reason: str) -> None:
        self.last_attempt = now
        self.failures += 1
        self.error = reason
