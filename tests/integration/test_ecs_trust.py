"""Trusted ECS: with `--ecs-trust`, a client subnet is believed only from the listed
sources. From any other source the answer is the one for the source address, the echoed
option carries scope 0, and the stored demand counts the source's region, not the subnet's:
one host cannot pretend to be a continent and draw shadows there."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import dns.edns
import dns.message
import dns.rdatatype

from tests.serverproc import ServerProcess

ZONE = "$ORIGIN et.test.\n$TTL 300\n@ SOA ns h 1 3600 600 86400 60\n@ NS ns\nns A 192.0.2.1\n"
POLICY = """locations:
  home: {lat: 52.4, lon: 4.9}
  jp: {lat: 35.7, lon: 139.7}
regions:
  cidr: {"198.18.1.0/24": jp}
  default: home
resources:
  p-home: {address: 192.0.2.10, location: home, role: primary}
  p-jp: {address: 203.0.113.30, location: jp, role: primary}
dis:
  app: {primaries: [p-home, p-jp], ttl: 30}
"""
JP = dns.edns.ECSOption("198.18.1.0", 24)


def ask(port: int, source: str) -> dns.message.Message:
    query = dns.message.make_query("app.et.test.", "A", use_edns=0, options=[JP])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(2)
        sock.sendto(query.to_wire(), ("127.0.0.1", port))
        return dns.message.from_wire(sock.recv(4096))


def answer(msg: dns.message.Message) -> tuple[list[str], int]:
    [ecs] = [o for o in msg.options if isinstance(o, dns.edns.ECSOption)]
    return [r.to_text() for rr in msg.answer if rr.rdtype == dns.rdatatype.A
            for r in rr], ecs.scopelen


def test_ecs_from_an_untrusted_source_changes_neither_answer_nor_demand(tmp_path: Path) -> None:
    """127.0.0.2 is trusted and gets jp's answer for a jp subnet; 127.0.0.1 is not and gets
    home's with scope 0, and its queries are stored as home's demand."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "et.test.zone").write_text(ZONE)
    (zones / "et.test.policy.yaml").write_text(POLICY)
    state = tmp_path / "state.db"
    server = ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                            "--state", str(state), "--flush-interval", "1s",
                            "--ecs-trust", "127.0.0.2/32"]).start()
    try:
        trusted = [answer(ask(server.port, "127.0.0.2")) for _ in range(5)]
        untrusted = [answer(ask(server.port, "127.0.0.1")) for _ in range(30)]
        assert set(map(str, trusted)) == {str((["203.0.113.30"], 24))}
        assert set(map(str, untrusted)) == {str((["192.0.2.10"], 0))}
        deadline = time.monotonic() + 15
        demand: dict[str, int] = {}
        while time.monotonic() < deadline:
            with sqlite3.connect(state) as db:
                demand = dict(db.execute(
                    "SELECT s.region, SUM(d.queries) FROM demand_minute d "
                    "JOIN series s ON s.id = d.series GROUP BY s.region"))
            if sum(demand.values()) >= 35:
                break
            time.sleep(0.3)
    finally:
        assert server.stop() == 0
    assert demand == {"jp": 5, "home": 30}


def test_every_source_is_trusted_by_default(tmp_path: Path) -> None:
    """Without --ecs-trust the subnet decides, from any source (RFC 7871)."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "et.test.zone").write_text(ZONE)
    (zones / "et.test.policy.yaml").write_text(POLICY)
    with ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                        "--state", ":memory:", "--answer-only"]) as server:
        assert answer(ask(server.port, "127.0.0.1")) == (["203.0.113.30"], 24)
