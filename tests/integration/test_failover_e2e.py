"""End to end: demand drives a shadow, health checks fail it over and bring it back.

The real server runs with a policy file whose resources are listeners this test owns on
127.0.0.1: an HTTP server (the standby's health check and the warm-up webhook) and a TCP
listener (the primary's check). Demand history is seeded in the store before the server
starts; the allocator runs every second on minute buckets. A last test follows the TTL
plan onto the wire: answers shorten their TTL before a shadow takes over.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import dns.rdatatype

from shadowdns.store import DemandRow, open_store
from tests.serverproc import ServerProcess

P_HOME, S_JP = "192.0.2.10", "203.0.113.30"
JP, BR = "198.18.1.0/24", "198.18.2.0/24"
INTERVAL, FALL, RISE = 0.5, 2, 2

ZONE = """$ORIGIN fo.test.
$TTL 300
@   SOA ns1 hostmaster 1 3600 600 86400 60
@   NS  ns1
ns1 A   192.0.2.1
"""

POLICY = """locations:
  home: {{lat: 0, lon: -150}}
  jp: {{lat: 35.7, lon: 139.7}}
  br: {{lat: -23.5, lon: -46.6}}
regions:
  cidr: {{"198.18.1.0/24": jp, "198.18.2.0/24": br}}
  default: home
resources:
  p-home:
    address: {p_home}
    location: home
    role: primary
    check: {{type: tcp, host: 127.0.0.1, port: {tcp}, interval: {i}, timeout: 0.4,
             rise: {rise}, fall: {fall}}}
  s-jp:
    address: {s_jp}
    location: jp
    role: standby
    capacity: 1000
    check: {{type: http, url: "http://127.0.0.1:{http}/health", interval: {i}, timeout: 0.4,
             rise: {rise}, fall: {fall}}}
  s-br: {{address: 203.0.113.40, location: br, role: standby}}
dis:
  app:
    primaries: [p-home]
    standby: [s-jp, s-br]
    ttl: 2
    policy: {{threshold: 50, lead_time: 0, max_shadows: 2, min_hold: 3600}}
"""

ALLOCATOR = """allocator:
  mode: {mode}
  window: 1s
  bucket: 1m
  tick: 0.2
  drain_grace: 1
  hooks:
    warmup: {{url: "http://127.0.0.1:{http}/warmup"}}
"""


class Backend:
    """The standby's HTTP endpoint (health and warm-up webhook), stoppable and restartable
    on the same port."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    def start(self) -> None:
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/health" else 404)
                self.end_headers()
                self.wfile.write(b"ok")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                posts.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None




def setup(tmp: Path, backend: Backend, tcp: int, mode: str) -> tuple[Path, Path]:
    zones = tmp / "zones"
    zones.mkdir()
    (zones / "fo.test.zone").write_text(ZONE)
    (zones / "fo.test.policy.yaml").write_text(POLICY.format(
        p_home=P_HOME, s_jp=S_JP, tcp=tcp, http=backend.port, i=INTERVAL, rise=RISE,
        fall=FALL))
    (zones / "allocator.yaml").write_text(ALLOCATOR.format(mode=mode, http=backend.port))
    state = tmp / "state.db"
    store = open_store(str(state))
    # through the current minute: the last complete minute the server reads has demand
    end = int(time.time() // 60 * 60) + 60
    try:
        store.add_demand([DemandRow("app.fo.test.", region, end - 60 * i, "primary", q)
                          for i in range(1, 31) for region, q in (("jp", 200), ("br", 5))])
    finally:
        store.close()
    return zones, state


def answer(server: ServerProcess, ecs: str) -> list[str]:
    addr, prefix = ecs.split("/")
    query = dns.message.make_query("app.fo.test.", "A", use_edns=0,
                                   options=[dns.edns.ECSOption(addr, int(prefix))])
    msg = dns.query.udp(query, server.host, port=server.port, timeout=2)
    return sorted(r.to_text() for rr in msg.answer if rr.rdtype == dns.rdatatype.A for r in rr)


def wait_answer(server: ServerProcess, ecs: str, expect: list[str], deadline: float) -> float:
    started = time.monotonic()
    while True:
        got = answer(server, ecs)
        took = time.monotonic() - started
        if got == expect:
            return took
        if took > deadline:
            raise AssertionError(f"still {got}, wanted {expect} after {took:.2f}s:\n"
                                 + "".join(x for x in server.log if "httpx" not in x)[-3000:])
        time.sleep(0.02)


def serve(zones: Path, state: Path) -> ServerProcess:
    return ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                          "--state", str(state)]).start()


def test_shadow_follows_demand_fails_over_and_comes_back(
    tmp_path: Path, backend: Backend, tcp_listener: int
) -> None:
    """Seeded demand from jp gives jp the shadow once its check passed; br (low demand)
    keeps the primary. Stopping the shadow's listener moves jp's answer away within
    interval × fall + 1 s; restarting it brings the shadow back after rise passes."""
    zones, state = setup(tmp_path, backend, tcp_listener, "active")
    server = serve(zones, state)
    try:
        wait_answer(server, JP, [S_JP], deadline=20)
        assert answer(server, BR) == [P_HOME]
        hooks = [p for p in backend.posts if p["event"] == "warmup"]
        assert [(h["di"], h["resource"], h["region"]) for h in hooks] == [
            ("app.fo.test.", "s-jp", "jp")]
        assert hooks[0]["ready_by"] > 0

        store = open_store(str(state))
        try:
            health = {h.resource: h.state for h in store.health_states()}
            [alloc] = store.list_allocations()
            audit = [e.action for e in store.list_audit()]
        finally:
            store.close()
        assert health == {"p-home": "up", "s-jp": "up"}  # probed from start, no query needed
        assert alloc.state == "ready" and json.loads(alloc.reason)["threshold"] == 50.0
        assert "allocator.generation" in audit

        backend.stop()
        took = wait_answer(server, JP, [P_HOME], deadline=INTERVAL * FALL + 3)
        assert took <= INTERVAL * FALL + 1.0

        backend.start()
        wait_answer(server, JP, [S_JP], deadline=15)
    finally:
        server.stop()


def test_preview_mode_changes_no_answer(tmp_path: Path, backend: Backend,
                                        tcp_listener: int) -> None:
    """mode: preview stores the generations and the answers they would change, and the
    answers stay on the primary."""
    zones, state = setup(tmp_path, backend, tcp_listener, "preview")
    server = serve(zones, state)
    try:
        server.wait_log(r"allocator: preview", timeout=10)
        deadline = time.monotonic() + 10
        records: list[dict[str, Any]] = []
        while not records and time.monotonic() < deadline:
            time.sleep(0.3)
            store = open_store(str(state))
            try:
                records = [json.loads(e.after_json or "{}") for e in store.list_audit()
                           if e.action == "allocator.preview"]
                allocations = store.list_allocations()
            finally:
                store.close()
        assert records, "no preview generation recorded"
        assert {"di": "app.fo.test.", "region": "jp", "before": ["p-home"],
                "after": ["s-jp"]}.items() <= records[0]["answers"][0].items()
        assert allocations == []
        time.sleep(1.5)
        assert answer(server, JP) == [P_HOME]
        assert backend.posts == []
    finally:
        server.stop()


TTL_POLICY = """locations:
  home: {lat: 0, lon: -150}
  br: {lat: -23.5, lon: -46.6}
regions:
  cidr: {"198.18.2.0/24": br}
  default: home
resources:
  p-home: {address: 192.0.2.10, location: home, role: primary}
  s-br: {address: 203.0.113.40, location: br, role: standby, warmup: 4}
dis:
  app:
    primaries: [p-home]
    standby: [s-br]
    ttl: 3
    policy: {threshold: 50, lead_time: 0, max_shadows: 1, min_hold: 3600}
"""

TTL_ALLOCATOR = """allocator:
  window: 1s
  bucket: 1m
  tick: 0.2
  ttl_floor: 1
"""


def answer_with_ttl(server: ServerProcess, ecs: str) -> tuple[list[str], int]:
    addr, prefix = ecs.split("/")
    query = dns.message.make_query("app.fo.test.", "A", use_edns=0,
                                   options=[dns.edns.ECSOption(addr, int(prefix))])
    msg = dns.query.udp(query, server.host, port=server.port, timeout=2)
    [rrset] = [rr for rr in msg.answer if rr.rdtype == dns.rdatatype.A]
    return sorted(r.to_text() for r in rrset), int(rrset.ttl)


def test_answers_shorten_their_ttl_before_the_shadow_takes_over(tmp_path: Path) -> None:
    """The allocator's TTL plan reaches the wire: a shadow with a 4 s warm-up is planned,
    and for the last TTL (3 s) before it is ready br's answers still name the primary but
    carry ttl_floor (1 s), so resolvers let go in time; then the shadow answers with the
    DI's TTL (its first answers may still carry the cut: readiness and the end of the cut
    are both "after the warm-up" and either may come first)."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "fo.test.zone").write_text(ZONE)
    (zones / "fo.test.policy.yaml").write_text(TTL_POLICY)
    (zones / "allocator.yaml").write_text(TTL_ALLOCATOR)
    state = tmp_path / "state.db"
    store = open_store(str(state))
    end = int(time.time() // 60 * 60) + 60  # through the current minute
    try:
        store.add_demand([DemandRow("app.fo.test.", "br", end - 60 * i, "primary", 200)
                          for i in range(1, 31)])
    finally:
        store.close()
    server = serve(zones, state)
    seen: list[tuple[list[str], int]] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen.append(answer_with_ttl(server, BR))
            if seen[-1] == (["203.0.113.40"], 3):
                break
            time.sleep(0.05)
    finally:
        server.stop()
    assert seen[-1] == (["203.0.113.40"], 3), seen[-5:]
    switch = next(i for i, (addrs, _) in enumerate(seen) if addrs == ["203.0.113.40"])
    assert all(addrs == ["203.0.113.40"] for addrs, _ in seen[switch:]), seen[switch:]
    before = [ttl for addrs, ttl in seen[:switch]]
    assert all(addrs == [P_HOME] for addrs, _ in seen[:switch])
    assert 1 in before, before
    shortened = before[before.index(1):]
    assert set(shortened) == {1} and len(shortened) >= 10  # ~3 s of 0.05 s polls
    assert set(before[:before.index(1)]) <= {3}
