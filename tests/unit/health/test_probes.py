"""Probes against listeners the test owns on 127.0.0.1 (and an httpx mock transport)."""

from __future__ import annotations

import asyncio
import socket
import sys

import dns.message
import dns.rcode
import httpx

from shadowdns.health.probes import ProbeResult, make_probe
from shadowdns.zones.policy import HealthCheck, Resource

LOCAL = Resource("r", "here", "standby", address="127.0.0.1")


def probe(check: HealthCheck, transport: httpx.AsyncBaseTransport | None = None,
          resource: Resource = LOCAL) -> ProbeResult:
    return asyncio.run(make_probe(resource, check, transport)())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tcp_connects_to_a_listener_and_fails_on_a_closed_port() -> None:
    """TCP passes when something accepts, fails fast when the port is closed."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert probe(HealthCheck("tcp", port=port, timeout=1)).ok
    result = probe(HealthCheck("tcp", port=free_port(), timeout=1))
    assert not result.ok and "tcp" in result.detail


def test_tcp_probes_the_check_host_instead_of_the_served_address() -> None:
    """`host` sends the probe elsewhere than the address in answers."""
    served_elsewhere = Resource("r", "x", "standby", address="192.0.2.99")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        check = HealthCheck("tcp", host="127.0.0.1", port=listener.getsockname()[1], timeout=1)
        assert probe(check, resource=served_elsewhere).ok


def test_http_status_body_and_host_header() -> None:
    """HTTP passes on an expected status and, when set, a body substring; the Host
    header is the configured one."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["host"])
        if request.url.path == "/health":
            return httpx.Response(200, text="status: ok")
        return httpx.Response(503, text="busy")

    transport = httpx.MockTransport(handler)
    base = {"url": "http://127.0.0.1:8081/health", "timeout": 1.0}
    assert probe(HealthCheck("http", **base), transport).ok  # type: ignore[arg-type]
    assert probe(HealthCheck("http", expect_body="ok", host_header="app.example",
                             **base), transport).ok  # type: ignore[arg-type]
    assert seen[-1] == "app.example"
    wrong_body = probe(HealthCheck("http", expect_body="ready", **base), transport)  # type: ignore[arg-type]
    assert not wrong_body.ok and "body" in wrong_body.detail
    bad = probe(HealthCheck("http", url="http://127.0.0.1:8081/x", timeout=1.0), transport)
    assert not bad.ok and "503" in bad.detail
    assert probe(HealthCheck("http", url="http://127.0.0.1:8081/x", timeout=1.0,
                             expect_status=(503,)), transport).ok


def test_http_connection_refused_fails() -> None:
    """A real GET to a closed local port fails, never raises."""
    result = probe(HealthCheck("http", url=f"http://127.0.0.1:{free_port()}/", timeout=1.0))
    assert not result.ok


def test_command_exit_status_and_timeout() -> None:
    """Exit 0 passes, non-zero fails, and a hung command is killed at the timeout."""
    py = sys.executable
    assert probe(HealthCheck("command", command=(py, "-c", "pass"), timeout=5)).ok
    assert not probe(HealthCheck("command", command=(py, "-c", "raise SystemExit(3)"),
                                 timeout=5)).ok
    slow = probe(HealthCheck("command", command=(py, "-c", "import time; time.sleep(5)"),
                             timeout=0.5))
    assert not slow.ok and "timeout" in slow.detail


def test_dns_query_to_a_local_responder() -> None:
    """DNS passes when the server answers NOERROR, fails on REFUSED (qname set)."""

    async def scenario() -> tuple[ProbeResult, ProbeResult]:
        rcode = {"value": dns.rcode.NOERROR}

        class Responder(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                reply = dns.message.make_response(dns.message.from_wire(data))
                reply.set_rcode(rcode["value"])
                self.transport.sendto(reply.to_wire(), addr)  # type: ignore[attr-defined]

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Responder,
                                                           local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        check = HealthCheck("dns", port=port, qname="example.com.", timeout=1)
        try:
            ok = await make_probe(LOCAL, check)()
            rcode["value"] = dns.rcode.REFUSED
            refused = await make_probe(LOCAL, check)()
        finally:
            transport.close()
        return ok, refused

    ok, refused = asyncio.run(scenario())
    assert ok.ok and not refused.ok and "REFUSED" in refused.detail
