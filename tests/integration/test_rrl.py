"""Response rate limiting on the real server (`--rrl-rate`, `--rrl-slip`, `--rrl-exempt`,
`--rrl-dry-run`): a flood of one name from one /24 gets about `rate` answers a second and
one truncated reply per `slip` limited ones, never more replies than queries; another /24
and an exempt prefix are answered in full; a dry run answers everything and counts."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import dns.flags
import dns.message
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serverproc import ServerProcess

RATE, SLIP = 20, 2


def blast(port: int, source: str, count: int, seconds: float) -> tuple[int, int, int, float]:
    """Send `count` queries for one name from `source` over `seconds`; (answers, TC
    replies, other replies, seconds taken)."""
    query = dns.message.make_query("www.demo.shadowdns.test.", "A")
    query.flags &= ~dns.flags.RD
    full = truncated = other = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.setblocking(False)
        started = time.monotonic()
        for i in range(count):
            query.id = i
            sock.sendto(query.to_wire(), ("127.0.0.1", port))
            target = started + seconds * (i + 1) / count
            while True:
                try:
                    reply = dns.message.from_wire(sock.recv(4096))
                except BlockingIOError:
                    if time.monotonic() >= target:
                        break
                    time.sleep(0.0005)
                    continue
                if reply.flags & dns.flags.TC:
                    truncated += 1
                elif reply.answer:
                    full += 1
                else:
                    other += 1
        elapsed = time.monotonic() - started
        sock.setblocking(True)
        sock.settimeout(0.5)
        try:
            while True:
                reply = dns.message.from_wire(sock.recv(4096))
                if reply.flags & dns.flags.TC:
                    truncated += 1
                elif reply.answer:
                    full += 1
                else:
                    other += 1
        except TimeoutError:
            pass
    return full, truncated, other, elapsed


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with ServerProcess(["serve", "--listen", "127.0.0.1:0", "--state", ":memory:",
                        "--api", "127.0.0.1:0", "--rrl-rate", str(RATE), "--rrl-slip",
                        str(SLIP), "--rrl-exempt", "127.0.2.0/24"]) as proc:
        yield proc


def test_a_flood_from_one_prefix_is_limited_and_slipped(server: ServerProcess) -> None:
    """About RATE answers a second (plus the first second's burst), one TC reply per SLIP
    limited replies, and never more replies than queries."""
    sent = 800
    full, truncated, other, elapsed = blast(server.port, "127.0.0.9", sent, 2.0)
    allowed = RATE * (elapsed + 1)
    assert full + truncated + other <= sent
    assert other == 0
    assert 0.5 * allowed <= full <= 1.5 * allowed, (full, allowed)
    limited = sent - full
    assert 0.35 * limited / SLIP <= truncated <= 1.2 * limited / SLIP, (truncated, limited)
    # another /24 has its own bucket; an exempt one has none
    assert blast(server.port, "127.0.1.9", RATE // 2, 0.2)[0] == RATE // 2
    assert blast(server.port, "127.0.2.9", 300, 0.5)[:3] == (300, 0, 0)
    metrics = httpx.get(f"{api_url(server)}/metrics", timeout=5).text
    values = {s.labels.get("action"): s.value for f in text_string_to_metric_families(metrics)
              if f.name == "shadowdns_rrl_limited" for s in f.samples}
    assert values["slipped"] == truncated
    assert values["dropped"] >= limited - truncated - 5


def test_dry_run_answers_everything_and_counts() -> None:
    """With --rrl-dry-run the flood is answered in full; the limiter only counts."""
    with ServerProcess(["serve", "--listen", "127.0.0.1:0", "--state", ":memory:",
                        "--answer-only", "--rrl-rate", str(RATE), "--rrl-dry-run"]) as proc:
        full, truncated, other, _ = blast(proc.port, "127.0.0.9", 300, 0.5)
        assert (full, truncated, other) == (300, 0, 0)
        proc.wait_log(r"rrl dry run: would limit")


def api_url(server: ServerProcess) -> str:
    line = server.wait_log(r"api listening on \S+", timeout=30)
    return line.split("api listening on ")[1].strip().rstrip("/")
