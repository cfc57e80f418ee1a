"""Response rate limiting over UDP, with the semantics of Knot's mod-rrl.

Spoofed-source floods turn an authoritative server into an amplifier: a 40-byte query
draws a reply 20 to 60 times its size at someone else. RRL caps the replies that go to one
client prefix (IPv4 /24, IPv6 /56) for one *answer class* — positive answers by query name,
negative answers (NXDOMAIN, NODATA) by zone, errors together — at `rate` per second, as a
token bucket. Past the limit replies are dropped, except that every `slip`-th one is sent
truncated (TC=1, no records) so a real client behind the prefix retries over TCP, which
cannot be spoofed; `slip` 0 drops all. Exempt prefixes are never limited; dry run counts
and logs what would be limited and sends everything. TCP replies are never limited.

This runs per UDP reply, so it is hand-written for speed: the class and name come from the
reply's own bytes (a negative answer's SOA owner is a pointer to the zone apex inside the
question), and a source's prefix and exemption are computed once per address.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_BUCKETS = 200_000  # buckets kept; idle ones are swept when there are more
MAX_SOURCES = 200_000  # source addresses whose prefix is remembered
_ERROR = b"\x00e"  # class marks: none is a valid first byte of a wire name but \x00 (root)
_NEGATIVE = b"\x00n"
_POSITIVE = b"\x00p"


@dataclass(frozen=True, slots=True)
class RRLConfig:
    rate: int = 0  # responses per second per bucket; 0: off
    slip: int = 2
    exempt: tuple[str, ...] = ()
    dry_run: bool = False


class RateLimiter:
    """Token buckets per (client prefix, answer class, name); see the module docstring."""

    def __init__(self, config: RRLConfig) -> None:
        if config.rate <= 0:
            raise ValueError("rrl rate must be positive")
        if config.slip < 0:
            raise ValueError("rrl slip must be 0 or more")
        self.rate = float(config.rate)
        self.slip = config.slip
        self.dry_run = config.dry_run
        self.exempt = [ipaddress.ip_network(c, strict=False) for c in config.exempt]
        self._prefix: dict[str, bytes | None] = {}
        # bucket -> [tokens, time of last refill, drops since the last slip]
        self._buckets: dict[bytes, list[float]] = {}
        self.dropped = 0
        self.slipped = 0
        self.would_limit = 0  # dry run

    def _source(self, ip: str) -> bytes | None:
        """The bucket prefix of a source address; None when it is exempt."""
        try:
            address = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            return None
        if any(address in net for net in self.exempt):
            prefix = None
        elif address.version == 4:
            prefix = address.packed[:3]
        else:
            prefix = address.packed[:7]
        if len(self._prefix) >= MAX_SOURCES:
            self._prefix.clear()
        self._prefix[ip] = prefix
        return prefix

    def check(self, query: bytes, reply: bytes, ip: str, now: float) -> bytes | None:
        """The reply to send: `reply`, a truncated stand-in, or None (drop)."""
        prefix = self._prefix.get(ip, b"")
        if prefix == b"":
            prefix = self._source(ip)
        if prefix is None or len(reply) < 12:
            return reply
        rcode = reply[3] & 0xF
        if rcode not in (0, 3):
            key = prefix + _ERROR
        elif rcode == 3 or (reply[6] == 0 and reply[7] == 0):
            key = prefix + _NEGATIVE + _zone(query, reply)
        else:
            key = prefix + _POSITIVE + _qname(query)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._sweep(now)
            self._buckets[key] = [self.rate - 1.0, now, 0.0]
            return reply
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        bucket[1] = now
        if tokens > self.rate:
            tokens = self.rate
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return reply
        bucket[0] = tokens
        if self.dry_run:
            self.would_limit += 1
            if self.would_limit & 0x3FF == 1:
                log.info("rrl dry run: would limit replies to %s (%d so far)", ip,
                         self.would_limit)
            return reply
        bucket[2] += 1
        if self.slip and bucket[2] >= self.slip:
            bucket[2] = 0
            self.slipped += 1
            return _truncated(query, reply)
        self.dropped += 1
        return None

    def _sweep(self, now: float) -> None:
        # a bucket idle for a second is full again: forgetting it changes nothing
        stale = [k for k, b in self._buckets.items() if now - b[1] > 1.0]
        for k in stale:
            del self._buckets[k]
        if len(self._buckets) >= MAX_BUCKETS:
            self._buckets.clear()


def _question_end(query: bytes) -> int:
    i = 12
    n = len(query)
    while i < n and query[i]:
        if query[i] > 63:
            return 0
        i += query[i] + 1
    return i + 5 if i + 5 <= n else 0


def _qname(query: bytes) -> bytes:
    end = _question_end(query)
    return query[12 : end - 4].lower() if end else b""


def _zone(query: bytes, reply: bytes) -> bytes:
    """The zone of a negative answer: its SOA owner is a pointer into the question."""
    end = _question_end(query)
    if not end or len(reply) < end + 2:
        return b""
    if reply[end] & 0xC0 == 0xC0:
        pointer = (reply[end] & 0x3F) << 8 | reply[end + 1]
        if 12 <= pointer < end - 4:
            return query[pointer : end - 4].lower()
    return b""


def _truncated(query: bytes, reply: bytes) -> bytes:
    """The reply's header with TC set and no records, then the question."""
    end = _question_end(query)
    counts = b"\x00\x01\x00\x00\x00\x00\x00\x00" if end else b"\x00" * 8
    return reply[:2] + bytes([reply[2] | 0x02, reply[3]]) + counts + (
        query[12:end] if end else b"")


def parse_exempt(values: Sequence[str]) -> tuple[str, ...]:
    """Validate `--rrl-exempt` values (ValueError naming the bad one)."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"--rrl-exempt {value}: {exc}") from None
    return tuple(values)
