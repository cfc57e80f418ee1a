"""DNS over TCP (RFC 1035 §4.2.2, RFC 7766) with the limits a public server needs.

A TCP connection costs the server a slot, a buffer and a timer, and an attacker pays almost
nothing to hold one: a declared 65,535-byte message dripped a byte at a time, or pipelined
queries whose answers are never read. So every connection lives under deadlines that no
trickle of bytes can extend, and its output is back-pressured:

- a message must arrive whole within ``message_timeout`` of its first byte (Knot's
  tcp-io-timeout); the idle timer runs only between messages (``idle_timeout``);
- output the client does not drain pauses reading it (nothing more is answered into a full
  buffer); if the client then takes none of it for ``message_timeout`` the connection is
  aborted. So a connection never buffers more than the transport's high-water mark plus
  one message's answers, and a zone transfer is written message by message as it is read;
- ``lifetime`` after it opened, a connection is closed between messages (PowerDNS'
  max-tcp-connection-duration), never in the middle of a zone transfer;
- a /24 (IPv4) or /56 (IPv6) may hold at most ``per_prefix`` connections; one more is
  refused at once, so one network cannot take every slot;
- at ``max_connections`` a new connection takes the slot of the connection that has been
  in the middle of a message longest (a query normally arrives in one segment, so that is a
  slow sender), else of the one that has gone longest without progress (no message
  completed and no output drained) if that is at least ``EVICT_AFTER``; otherwise it is
  refused. Slow or idle connections thus cannot lock fresh clients out (RFC 7766 §6.2.3
  lets a server under pressure close idle connections), and a connection busy right now is
  never dropped for a newcomer.

Closing is graceful where it can be: answers already queued are flushed first (under the
same drain deadline), so a transfer or a pipelined answer is never cut by the idle timer or
the lifetime. Timers are lazy: one per connection, re-armed only when it fires early or a
deadline moves closer; the per-message cost is a clock read and an O(1) reorder.
"""

from __future__ import annotations

import asyncio
import math
import socket
import sys
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import cast

from shadowdns.errors import ConfigError, Problem
from shadowdns.resolver.engine import QueryEngine

try:  # to read a socket's kernel send queue (TIOCOUTQ, Linux SIOCOUTQ)
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# At the cap, a connection this long (seconds) without progress may be closed for a new one.
EVICT_AFTER = 1.0
V4_PREFIX_BYTES = 3  # /24
V6_PREFIX_BYTES = 7  # /56
_V4_MAPPED = bytes(10) + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class TCPLimits:
    """Limits shared by all TCP listeners of a server (seconds; 0 disables lifetime and
    per_prefix)."""

    max_connections: int = 256
    idle_timeout: float = 10.0
    message_timeout: float = 2.0
    lifetime: float = 120.0
    per_prefix: int = 32

    def __post_init__(self) -> None:
        problems = [
            Problem(f"--tcp-{f.name.replace('_', '-')}", None, reason)
            for f in fields(self)
            if (reason := _check(f.name, getattr(self, f.name))) is not None
        ]
        if problems:
            raise ConfigError(problems)


def _check(name: str, value: float) -> str | None:
    if not math.isfinite(value):
        return "must be a finite number"
    if name in ("lifetime", "per_prefix"):
        return None if value >= 0 else "must be 0 (no limit) or more"
    return None if value > 0 else "must be more than 0"


def client_prefix(host: str) -> bytes:
    """The network a client counts against: its /24 (IPv4, also IPv4-mapped) or /56."""
    try:
        if ":" in host:
            packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
            if packed[:12] == _V4_MAPPED:
                return packed[12:12 + V4_PREFIX_BYTES]
            return packed[:V6_PREFIX_BYTES]
        return socket.inet_pton(socket.AF_INET, host)[:V4_PREFIX_BYTES]
    except (OSError, ValueError):  # not an IP address (never for TCP over IP): one bucket
        return b""


class TCPConnections:
    """The live connections of a server: who is counted, per prefix, and who goes first."""

    def __init__(self, limits: TCPLimits) -> None:
        self.limits = limits
        self.order: OrderedDict[TCPProtocol, None] = OrderedDict()  # least progress first
        self.partial: OrderedDict[TCPProtocol, None] = OrderedDict()  # mid-message, oldest first
        self.per_prefix: dict[bytes, int] = {}

    def admit(self, conn: TCPProtocol, now: float) -> bool:
        """Count `conn` in, making room at the cap if someone is stalled; False: refuse it."""
        limits = self.limits
        held = self.per_prefix.get(conn.prefix, 0)
        if limits.per_prefix and held >= limits.per_prefix:
            return False
        if len(self.order) >= limits.max_connections:
            if self.partial:
                victim = next(iter(self.partial))
            else:
                victim = next(iter(self.order))
                if now - victim.progress < EVICT_AFTER:
                    return False
            victim.evict()
        self.order[conn] = None
        self.per_prefix[conn.prefix] = held + 1
        return True

    def release(self, conn: TCPProtocol) -> None:
        if conn not in self.order:
            return
        del self.order[conn]
        self.partial.pop(conn, None)
        left = self.per_prefix[conn.prefix] - 1
        if left:
            self.per_prefix[conn.prefix] = left
        else:
            del self.per_prefix[conn.prefix]


class TCPProtocol(asyncio.Protocol):
    """Length-prefixed messages; several per connection, answered in order (RFC 7766)."""

    def __init__(self, engine: QueryEngine, connections: TCPConnections) -> None:
        self.engine = engine
        self.connections = connections
        self.limits = connections.limits
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.prefix = b""
        self.counted = False  # holds a slot
        self.done = False  # answers nothing more: closing, or refused
        self.paused = False  # writing paused: the client is not draining our output
        self.partial = False  # listed in connections.partial
        self.pending: list[bytes] = []  # answers of one message being written (a transfer)
        self.written = 0  # how many of them the transport has taken
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.born = self.progress = self.msg_start = self.paused_at = 0.0
        self.queued = 0  # bytes in the kernel's send queue when last looked at, while paused

    # -- lifecycle -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but behave as such.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
            self.prefix = client_prefix(peer[0])
        self.loop = asyncio.get_running_loop()
        now = self.born = self.progress = self.loop.time()
        if not self.connections.admit(self, now):
            self.done = True
            transport.abort()
            return
        self.counted = True
        self._arm(self._deadline())

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        self._release()
        self.transport = None
        self.pending = []

    def _release(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.counted:
            self.counted = False
            self.partial = False
            self.connections.release(self)

    def evict(self) -> None:
        """Give up the slot at once, for a new connection (see the module docstring)."""
        transport = self.transport
        self.done = True
        self._release()
        if transport is not None:
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()

    def _close(self) -> None:
        """Answer nothing more; close once the answers already queued have drained."""
        transport = self.transport
        self.done = True
        if transport is None:
            return
        if not transport.get_write_buffer_size():
            self._release()
            transport.close()
            return
        # Keep the slot while flushing. A high-water mark of 0 makes the transport call
        # resume_writing exactly when all is written; the drain deadline still applies.
        self._set_partial(False)
        transport.pause_reading()
        transport.set_write_buffer_limits(high=0, low=0)

    def _abort(self) -> None:
        transport = self.transport
        self.done = True
        self._release()
        if transport is not None:
            transport.abort()

    # -- deadlines -------------------------------------------------------------------------

    def _deadline(self) -> float:
        limits = self.limits
        if self.paused:  # output must drain; the lifetime is checked when it has
            return self.paused_at + limits.message_timeout
        if self.buffer:  # part of a message: all of it is due from its first byte
            deadline = self.msg_start + limits.message_timeout
        else:
            deadline = self.progress + limits.idle_timeout
        if limits.lifetime:
            deadline = min(deadline, self.born + limits.lifetime)
        return deadline

    def _arm(self, at: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = at
        self.timer = self.loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self.timer = None
        if not self.counted:
            return
        now = self.loop.time()
        deadline = self._deadline()
        if now < deadline:
            self._arm(deadline)
        elif not self.paused:
            self._close()
        elif self._reading_slowly(now):
            self._arm(now + self.limits.message_timeout)
        else:
            self._abort()  # its answers are not being read

    def _reading_slowly(self, now: float) -> bool:
        """Has the client taken some of our output since the last look (and may go on)?

        The transport only resumes writing once the kernel has room for all it holds, which
        for a slow reader behind a large socket buffer can take longer than the deadline;
        the kernel's send queue shows the client is still reading. Past its lifetime, and
        not in a transfer, a slow reader has had its time.
        """
        queued = _send_queue(self.transport)
        if queued is None or queued >= self.queued:
            return False
        if not self.pending and self.limits.lifetime and now >= self.born + self.limits.lifetime:
            return False
        self.queued = queued
        return True

    def _set_partial(self, on: bool) -> None:
        if on:
            self.connections.partial.pop(self, None)
            self.connections.partial[self] = None  # ordered by when the message began
        elif self.partial:
            del self.connections.partial[self]
        self.partial = on

    # -- reading ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        buf = self.buffer
        if not buf and not self.paused and len(data) >= 2 \
                and len(data) == 2 + (data[0] << 8 | data[1]):
            # The usual case: exactly one whole message in one segment.
            self._answer(data[2:])
            if not self.done:
                self.progress = self.loop.time()
                self.connections.order.move_to_end(self)
            return
        partial = bool(buf)
        buf += data
        if not self.paused:
            self._answer_buffered(partial)

    def _answer_buffered(self, partial: bool) -> None:
        """Answer the whole messages in the buffer until output backs up."""
        buf = self.buffer
        start = 0
        end = len(buf)
        while end - start >= 2 and not self.paused:
            stop = start + 2 + (buf[start] << 8 | buf[start + 1])
            if stop > end:
                break
            self._answer(bytes(buf[start + 2:stop]))
            if self.done:
                return
            start = stop
        if start or (buf and not partial):
            now = self.loop.time()
            if start:
                del buf[:start]
                self.progress = now
                self.connections.order.move_to_end(self)
            if buf and not self.paused:
                # A new message has begun: all of it is due one message timeout from now.
                self.msg_start = now
                self._set_partial(True)
                due = now + self.limits.message_timeout
                if due < self.timer_at:
                    self._arm(due)
                return
        if self.partial and (not buf or self.paused):
            self._set_partial(False)

    def _answer(self, msg: bytes) -> None:
        replies = self.engine.respond_stream(msg, self.peer)
        transport = self.transport
        if transport is None:
            return
        if not replies:
            # Not answerable (a response, or under 12 bytes): end the stream.
            self._close()
            return
        if len(replies) == 1:
            resp = replies[0]
            transport.write(len(resp).to_bytes(2, "big") + resp)
        else:
            self.pending = replies
            self.written = 0
            self._write_pending()

    def _write_pending(self) -> None:
        """Write a transfer's messages until the transport pushes back.

        `pending` is emptied only once all of it has been taken by the transport without
        pushing back, so until then the connection counts as in a transfer (no lifetime).
        """
        pending = self.pending
        transport = self.transport
        index = self.written
        while index < len(pending) and not self.paused and transport is not None:
            resp = pending[index]
            transport.write(len(resp).to_bytes(2, "big") + resp)
            index += 1
        self.written = index
        if index == len(pending) and not self.paused:
            self.pending = []

    # -- back-pressure ---------------------------------------------------------------------

    def pause_writing(self) -> None:
        self.paused = True
        self.paused_at = self.loop.time()
        self.queued = _send_queue(self.transport) or 0
        if self.transport is not None:
            self.transport.pause_reading()
        if self.counted and self.paused_at + self.limits.message_timeout < self.timer_at:
            self._arm(self.paused_at + self.limits.message_timeout)

    def resume_writing(self) -> None:
        self.paused = False
        transport = self.transport
        if transport is None or not self.counted:
            return
        if self.done:  # closing once drained (see _close): drained now
            self._release()
            transport.close()
            return
        now = self.progress = self.loop.time()
        self.connections.order.move_to_end(self)
        if self.pending:
            self._write_pending()
            if self.pending:
                return
        if self.limits.lifetime and now >= self.born + self.limits.lifetime:
            self._close()
            return
        self._answer_buffered(False)
        if not self.paused and not self.done:
            transport.resume_reading()


def _send_queue(transport: asyncio.Transport | None) -> int | None:
    """Bytes the kernel still holds for the peer (sent unacknowledged or unsent); None if
    the platform cannot tell."""
    if transport is None or fcntl is None:
        return None
    sock = transport.get_extra_info("socket")
    try:
        out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (AttributeError, OSError, ValueError):
        return None
    return int.from_bytes(out, sys.byteorder)
