"""The sampled query log on the real engine: the rate holds, lines describe the query, and
when off the engine's `respond` is untouched."""

from __future__ import annotations

import logging
import random

import dns.message
import pytest

from shadowdns.resolver.commands import demo_zones_dir
from shadowdns.resolver.engine import QueryEngine
from shadowdns.resolver.querylog import QueryLog, install
from shadowdns.resolver.snapshot import build_snapshot, load_config

ZONE = "demo.shadowdns.test."


def _engine() -> QueryEngine:
    return QueryEngine(build_snapshot(load_config(demo_zones_dir())))


def _query(name: str, qtype: str = "A") -> bytes:
    return dns.message.make_query(name, qtype).to_wire()


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 1.0])
def test_the_share_logged_is_the_rate(rate: float, caplog: pytest.LogCaptureFixture) -> None:
    """Over 20,000 queries the share logged is within 10% of the rate (seeded)."""
    engine = _engine()
    install(engine, rate, random.Random(7))
    wire = _query(f"www.{ZONE}")
    with caplog.at_level(logging.INFO, logger="shadowdns.queries"):
        for _ in range(20_000):
            assert engine.respond(wire, ("192.0.2.1", 53)) is not None
    assert len(caplog.records) == pytest.approx(20_000 * rate, rel=0.1)


def test_a_line_names_client_question_and_rcode(caplog: pytest.LogCaptureFixture) -> None:
    """Client, transport, qname, qtype, rcode and answer count; garbage is logged as such."""
    engine = _engine()
    install(engine, 1.0)
    with caplog.at_level(logging.INFO, logger="shadowdns.queries"):
        engine.respond(_query(f"www.{ZONE}"), ("192.0.2.1", 5300), True)
        engine.respond(_query(f"nope.{ZONE}", "AAAA"), ("192.0.2.2", 53))
        engine.respond(b"\x00\x01garbage", ("192.0.2.3", 53))
    first, second, third = (r.getMessage() for r in caplog.records)
    assert first.startswith(f"192.0.2.1 tcp www.{ZONE} A NOERROR answers=1")
    assert second.startswith(f"192.0.2.2 udp nope.{ZONE} AAAA NXDOMAIN answers=0")
    assert third.startswith("192.0.2.3 udp - - DROPPED")


def test_off_leaves_the_engine_as_it_is() -> None:
    """Without `install`, `respond` is the class's own method: no wrapper on the hot path."""
    engine = _engine()
    assert engine.respond.__func__ is QueryEngine.respond  # type: ignore[attr-defined]
    install(engine, 0.5)
    assert getattr(engine.respond, "__func__", None) is not QueryEngine.respond


def test_rates_outside_zero_to_one_are_refused() -> None:
    for rate in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="sample rate"):
            QueryLog(rate)
