"""The sampled query log: one line for some of the queries answered (`--query-log-sample`).

Off by default, and then it costs nothing: `install` is not called and the engine's
`respond` stays the plain method. When on, it wraps `respond` with a countdown whose gaps
are drawn from a geometric distribution, so each query is logged with probability RATE
independently while a query that is not logged pays one decrement and one compare. The
logged line is parsed from the wire only for sampled queries.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype

if TYPE_CHECKING:
    from shadowdns.resolver.engine import QueryEngine

__all__ = ["QueryLog", "install"]

log = logging.getLogger("shadowdns.queries")

Respond = Callable[..., bytes | None]


class QueryLog:
    """Decides which queries to log (with probability `rate`) and writes their lines."""

    def __init__(self, rate: float, rng: random.Random | None = None) -> None:
        if not 0 < rate <= 1:
            raise ValueError("the query log sample rate must be above 0 and at most 1")
        self.rate = rate
        self.rng = rng or random.Random()
        self._log_q = math.log1p(-rate) if rate < 1 else 0.0
        self.countdown = self.gap()

    def gap(self) -> int:
        """Queries until the next logged one (1 = the next): geometric with mean 1/rate."""
        if self.rate >= 1:
            return 1
        return int(math.log(1.0 - self.rng.random()) / self._log_q) + 1

    def wrap(self, respond: Respond) -> Respond:
        def sampled(data: bytes, addr: tuple[str, int] | None = None,
                    tcp: bool = False) -> bytes | None:
            reply = respond(data, addr, tcp)
            self.countdown -= 1
            if self.countdown:
                return reply
            self.countdown = self.gap()
            self.write(data, addr, tcp, reply)
            return reply

        return sampled

    def write(self, query: bytes, addr: tuple[str, int] | None, tcp: bool,
              reply: bytes | None) -> None:
        """One line for a query and its reply; a malformed query is logged as such."""
        try:
            qname, used = dns.name.from_wire(query, 12)
            qtype = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(
                int.from_bytes(query[12 + used:14 + used], "big")))
            name = qname.to_text()
        except (dns.exception.DNSException, IndexError, ValueError):
            name, qtype = "-", "-"
        if reply is None or len(reply) < 12:
            rcode, answers, size = "DROPPED", 0, 0
        else:
            rcode = dns.rcode.to_text(dns.rcode.Rcode(reply[3] & 0x0F))
            answers, size = int.from_bytes(reply[6:8], "big"), len(reply)
        client = "-" if addr is None else addr[0]
        proto = "tcp" if tcp else "udp"
        log.info("%s %s %s %s %s answers=%d size=%d", client, proto, name, qtype, rcode,
                 answers, size,
                 extra={"client": client, "proto": proto, "qname": name, "qtype": qtype,
                        "rcode": rcode, "answers": answers, "size": size})


def install(engine: QueryEngine, rate: float, rng: random.Random | None = None) -> QueryLog:
    """Wrap `engine.respond` (UDP and TCP both call it) with a sampled query log."""
    query_log = QueryLog(rate, rng)
    engine.respond = query_log.wrap(engine.respond)  # type: ignore[method-assign]
    return query_log
