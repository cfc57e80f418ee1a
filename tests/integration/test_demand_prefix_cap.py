"""The demand cap per client prefix: a flood from one /24 adds at most the cap to the stored
demand of a (DI, region) in a minute, while every query is still answered, other prefixes
are counted in full and the capped queries show in /metrics."""

from __future__ import annotations

import re
import socket
import sqlite3
import time
from pathlib import Path

import dns.edns
import dns.message
import dns.rdatatype
import httpx

from tests.serverproc import ServerProcess

ZONE = "$ORIGIN pc.test.\n$TTL 300\n@ SOA ns h 1 3600 600 86400 60\n@ NS ns\nns A 192.0.2.1\n"
POLICY = """locations:
  home: {lat: 52.4, lon: 4.9}
  jp: {lat: 35.7, lon: 139.7}
regions:
  cidr: {"198.18.0.0/16": jp}
  default: home
resources:
  p-home: {address: 192.0.2.10, location: home, role: primary}
  p-jp: {address: 203.0.113.30, location: jp, role: primary}
dis:
  app: {primaries: [p-home, p-jp], ttl: 30}
"""
CAP = 10


def ask(sock: socket.socket, port: int, subnet: str | None) -> list[str]:
    options = [] if subnet is None else [dns.edns.ECSOption(subnet, 24)]
    query = dns.message.make_query("app.pc.test.", "A", use_edns=0, options=options)
    sock.sendto(query.to_wire(), ("127.0.0.1", port))
    reply = dns.message.from_wire(sock.recv(4096))
    return [r.to_text() for rr in reply.answer if rr.rdtype == dns.rdatatype.A for r in rr]


def stored_demand(state: Path) -> dict[str, int]:
    with sqlite3.connect(state) as db:
        return dict(db.execute("SELECT s.region, SUM(d.queries) FROM demand_minute d "
                               "JOIN series s ON s.id = d.series GROUP BY s.region"))


def test_one_prefix_adds_at_most_the_cap_per_minute(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "pc.test.zone").write_text(ZONE)
    (zones / "pc.test.policy.yaml").write_text(POLICY)
    state = tmp_path / "state.db"
    if time.time() % 60 > 45:  # keep the flood inside one minute: the cap's window
        time.sleep(61 - time.time() % 60)
    server = ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                            "--state", str(state), "--flush-interval", "1s",
                            "--api", "127.0.0.1:0",
                            "--demand-prefix-cap", str(CAP)]).start()
    try:
        line = server.wait_log(r"api listening on \S+", timeout=30)
        url = re.search(r"api listening on (\S+)", line).group(1)  # type: ignore[union-attr]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            flood = [ask(sock, server.port, "198.18.1.0") for _ in range(200)]
            other = [ask(sock, server.port, "198.18.2.0") for _ in range(3)]
            plain = [ask(sock, server.port, None) for _ in range(50)]
        assert flood == [["203.0.113.30"]] * 200 and other == [["203.0.113.30"]] * 3
        assert plain == [["192.0.2.10"]] * 50
        deadline = time.monotonic() + 15
        demand: dict[str, int] = {}
        while time.monotonic() < deadline:
            demand = stored_demand(state)
            if sum(demand.values()) >= 2 * CAP + 3:
                break
            time.sleep(0.3)
        time.sleep(1.5)  # one more flush: nothing beyond the cap may arrive late
        demand = stored_demand(state)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        assert server.stop() == 0
    assert demand == {"jp": CAP + 3, "home": CAP}
    assert f"shadowdns_resolver_demand_capped_total {200 - CAP + 50 - CAP}.0" in metrics
