"""NOTIFY (RFC 1996) to secondaries when a zone's serial changes.

Sent from the event loop with dnspython's asyncio client, signed with the first TSIG key
when keys are configured, retried a few times; a secondary that never answers is logged,
never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.tsig

log = logging.getLogger(__name__)


def notify_message(origin: dns.name.Name, key: dns.tsig.Key | None) -> dns.message.Message:
    msg = dns.message.make_query(origin, dns.rdatatype.SOA)
    msg.flags = dns.flags.AA  # before the opcode: dnspython keeps the opcode in the flags
    msg.set_opcode(dns.opcode.NOTIFY)
    if key is not None:
        msg.use_tsig(key)
    return msg


async def notify_one(origin: dns.name.Name, target: tuple[str, int],
                     key: dns.tsig.Key | None, attempts: int = 3,
                     timeout: float = 2.0) -> bool:
    """Send NOTIFY for `origin` to one secondary; True once it answered."""
    host, port = target
    for attempt in range(1, attempts + 1):
        msg = notify_message(origin, key)
        try:
            reply = await dns.asyncquery.udp(msg, host, port=port, timeout=timeout)
        except (dns.exception.DNSException, OSError) as exc:
            log.info("NOTIFY %s to %s:%d, attempt %d: %s", origin, host, port, attempt, exc)
            continue
        log.info("NOTIFY %s to %s:%d answered %s", origin, host, port,
                 dns.rcode.to_text(reply.rcode()))
        return True
    log.warning("NOTIFY %s to %s:%d: no answer after %d attempts", origin, host, port,
                attempts)
    return False


async def notify_all(origins: Iterable[dns.name.Name], targets: Iterable[tuple[str, int]],
                     key: dns.tsig.Key | None) -> None:
    jobs = [notify_one(o, t, key) for o in origins for t in targets]
    if jobs:
        await asyncio.gather(*jobs)
