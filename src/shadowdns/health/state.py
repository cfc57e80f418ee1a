"""The rise/fall state machine of one resource, with timestamps and a bounded event log.

A resource starts `unknown` (answered as up: a server that just started must not fail every
answer closed). `fall` consecutive failed probes make it `down`; `rise` consecutive passes
make it `up`. A state is only ever left by the opposite streak, so one lost packet does not
flap. An operator override (`up` / `down`) fixes the *effective* state whatever the probes
say; `obey` follows them again.

Readiness of a new shadow is stricter than "not down": `ready_since(t)` holds when the
last `rise` probes all passed and all started at or after `t` (the allocation time).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from shadowdns.zones.policy import Override

State = Literal["unknown", "up", "down"]


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of a resource's effective state."""

    resource: str
    ts: float
    old: State
    new: State
    reason: str


class HealthTracker:
    """Consecutive-result counting for one resource (see the module docstring)."""

    def __init__(self, resource: str, rise: int, fall: int, override: Override = "obey",
                 log_size: int = 100) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.resource = resource
        self.rise = rise
        self.fall = fall
        self.probed: State = "unknown"
        self.override: Override = override
        self.since = 0.0
        self.successes = 0
        self.failures = 0
        self.last_probe: float | None = None
        self.last_ok: float | None = None
        self.last_fail: float | None = None
        self.last_detail = ""
        self.probes = 0
        self._streak: deque[float] = deque(maxlen=rise)
        self.events: deque[Transition] = deque(maxlen=log_size)

    @property
    def state(self) -> State:
        """The effective state: the override when set, else what the probes say."""
        if self.override == "up":
            return "up"
        if self.override == "down":
            return "down"
        return self.probed

    def record(self, ok: bool, ts: float, detail: str = "") -> Transition | None:
        """Count one probe result started at `ts`; return the transition it causes."""
        before = self.state
        self.probes += 1
        self.last_probe = ts
        self.last_detail = detail
        if ok:
            self.successes += 1
            self.failures = 0
            self.last_ok = ts
            self._streak.append(ts)
            if self.probed != "up" and self.successes >= self.rise:
                self.probed = "up"
        else:
            self.failures += 1
            self.successes = 0
            self.last_fail = ts
            self._streak.clear()
            if self.probed != "down" and self.failures >= self.fall:
                self.probed = "down"
        return self._changed(before, ts, detail)

    def set_override(self, override: Override, ts: float) -> Transition | None:
        before = self.state
        self.override = override
        return self._changed(before, ts, f"operator override {override}")

    def _changed(self, before: State, ts: float, detail: str) -> Transition | None:
        after = self.state
        if after == before:
            return None
        self.since = ts
        if self.override != "obey":
            reason = f"operator override {self.override}"
        elif after == "up":
            reason = f"{self.rise} probe(s) passed: {detail}"
        else:
            reason = f"{self.fall} probe(s) failed: {detail}"
        event = Transition(self.resource, ts, before, after, reason)
        self.events.append(event)
        return event

    def ready_since(self, ts: float) -> bool:
        """Whether the last `rise` probes all passed and started at or after `ts`."""
        if self.override == "up":
            return True
        if self.state == "down":
            return False
        return len(self._streak) >= self.rise and self._streak[0] >= ts
