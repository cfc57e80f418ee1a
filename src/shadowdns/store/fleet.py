"""What nodes of a fleet share through the store: change channels, listeners, lock keys.

Every write that changes answers (allocations, health states, the policy graph, zone
metadata) bumps the store's *change generation* and announces it on one channel, in the
writing transaction, with the new generation (decimal text) as payload. A change to a
shared zone or policy file (`Store.put_config_file`) bumps it too, but is announced on
`CONFIG` with the zone's origin as payload, so a node knows which zone to fetch. A node
listens on the channels it compiles from and rebuilds its answer table when something
arrives; because a notification can be lost (a dropped connection, a node that was
restarting), it also compares `Store.change_generation()` with the generation its table
was built from, every few seconds. Read the generation *before* the data you compile: a
write that lands between the two reads then only costs one extra rebuild, never a missed
one.

PostgreSQL delivers notifications by LISTEN/NOTIFY; SQLite appends them to a short log
that its listener polls, so a single node (or several processes on one file) gets the same
interface.
"""

from __future__ import annotations

import hashlib
from types import TracebackType
from typing import Protocol, Self

ALLOCATIONS = "shadowdns_allocations"
HEALTH = "shadowdns_health"
POLICY = "shadowdns_policy"
ZONES = "shadowdns_zones"
CONFIG = "shadowdns_config"

CHANNELS: tuple[str, ...] = (ALLOCATIONS, HEALTH, POLICY, ZONES, CONFIG)
"""Channels on which the store itself announces changes (payload: the change generation,
except on `CONFIG`: the origin of the zone whose file changed, or "" for "re-read all")."""

Change = tuple[str, str]
"""One notification: (channel, payload)."""

MAX_CHANNEL_BYTES = 63
MAX_PAYLOAD_BYTES = 7999


def check_channel(channel: str) -> str:
    """`channel` if it is a usable channel name (PostgreSQL identifier length), else ValueError."""
    if not channel or len(channel.encode()) > MAX_CHANNEL_BYTES:
        raise ValueError(f"channel {channel!r} must be 1 to {MAX_CHANNEL_BYTES} bytes")
    if "\x00" in channel:
        raise ValueError(f"channel {channel!r} contains NUL")
    return channel


def check_payload(payload: str) -> str:
    """`payload` if it fits a notification (under 8000 bytes, no NUL), else ValueError."""
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload.encode())} bytes is over {MAX_PAYLOAD_BYTES}")
    if "\x00" in payload:
        raise ValueError("payload contains NUL")
    return payload


def check_batch_id(batch_id: str | None) -> None:
    """Refuse an empty or overlong demand batch id (`Store.add_demand(batch_id=...)`)."""
    if batch_id is not None and not 0 < len(batch_id) <= 200:
        raise ValueError(f"batch_id {batch_id!r} must be 1 to 200 characters")


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a named lock (PostgreSQL advisory lock id)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=b"shadowdns-lock").digest()
    return int.from_bytes(digest, "big", signed=True)


LEADER_PREFIX = "shadowdns:leader:"
MIGRATION_LOCK = "shadowdns:migrate"


class ChangeListener(Protocol):
    """Notifications on the channels it was opened for, from the moment it was opened.

    `poll(timeout)` waits up to `timeout` seconds for at least one notification and returns
    every one that has arrived, oldest first (an empty list when none came). A payload of ""
    on every channel means the listener lost its connection and reconnected: changes may
    have been missed, so re-read everything. One listener belongs to one thread.
    """

    @property
    def channels(self) -> tuple[str, ...]: ...

    def poll(self, timeout: float = 0.0) -> list[Change]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
