"""The kinds of answer, one vocabulary for the resolver that counts them and the store that
keeps them.

The resolver labels every answer it compiles with a kind; demand counters and the
`shadowdns_resolver_queries` metric carry it, and the store keeps demand per kind. A kind
the store did not know made the minute flush fail, so both sides take the kinds from here
(and a test checks the schemas accept exactly these).
"""

from __future__ import annotations

from typing import Literal, get_args

RoutingKind = Literal["shadow", "primary", "fallback", "nodata"]
"""How a DI's address question is answered for one region (`resolver.routing.decide`):
by a ready shadow, the nearest healthy primaries, every primary because all are down
(`all_down: primaries`), or an empty answer (`all_down: nodata`)."""

AnswerKind = Literal[RoutingKind, "static"]
"""Any answer: a DI's (above), or one from zone data alone."""

ROUTING_KINDS: tuple[RoutingKind, ...] = get_args(RoutingKind)
ANSWER_KINDS: tuple[AnswerKind, ...] = get_args(AnswerKind)
