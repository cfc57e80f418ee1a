"""Probes: one attempt to reach a resource the way its `check` says, with a timeout.

Four kinds, each a small async callable returning a `ProbeResult` (never raising):

* `tcp` — connect to host:port;
* `http` / `https` — GET the URL (which may point elsewhere than the served address), with an
  optional Host header; pass on an expected status and, when set, a body substring;
* `dns` — a UDP query (`qname`, default the root SOA) to host:port; any answer passes, and
  with `qname` set only NOERROR or NXDOMAIN does;
* `command` — run a program (no shell); exit status 0 passes. It gets `SHADOWDNS_RESOURCE`
  and `SHADOWDNS_ADDRESS` in its environment. Such checks reach a loaded policy only from
  files on the host, or with `--allow-commands` (see `health.privilege`).

The HTTP probe takes an injected `httpx` transport, so tests need no server at all.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from shadowdns.zones.policy import HealthCheck, Resource


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    detail: str
    seconds: float = 0.0


Probe = Callable[[], Awaitable[ProbeResult]]


def target_host(resource: Resource, check: HealthCheck) -> str:
    """The address to probe: the check's `host`, else the served address."""
    host = check.host or resource.address or resource.address6
    assert host is not None  # a resource has at least one address
    return host


def make_probe(resource: Resource, check: HealthCheck,
               transport: httpx.AsyncBaseTransport | None = None) -> Probe:
    """The probe for `resource` as its `check` describes."""
    kind = check.type
    if kind == "tcp":
        return _timed(check, _tcp(target_host(resource, check), check.port or 80))
    if kind in ("http", "https"):
        return _timed(check, _http(check, transport))
    if kind == "dns":
        return _timed(check, _dns(target_host(resource, check), check.port or 53, check.qname))
    if kind == "command":
        return _timed(check, _command(resource, check))
    raise ValueError(f"unknown check type {kind!r}")


def _timed(check: HealthCheck, attempt: Callable[[], Awaitable[ProbeResult]]) -> Probe:
    async def probe() -> ProbeResult:
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(attempt(), check.timeout)
        except TimeoutError:
            result = ProbeResult(False, f"timeout after {check.timeout:g}s")
        except Exception as exc:  # a probe reports, it never raises
            result = ProbeResult(False, f"{type(exc).__name__}: {exc}")
        return ProbeResult(result.ok, result.detail, time.perf_counter() - started)

    return probe


def _tcp(host: str, port: int) -> Callable[[], Awaitable[ProbeResult]]:
    async def attempt() -> ProbeResult:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            return ProbeResult(False, f"tcp {host}:{port}: {exc.strerror or exc}")
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return ProbeResult(True, f"tcp {host}:{port} connected")

    return attempt


def _http(check: HealthCheck,
          transport: httpx.AsyncBaseTransport | None) -> Callable[[], Awaitable[ProbeResult]]:
    url = check.url
    assert url is not None
    headers = {"Host": check.host_header} if check.host_header else {}

    async def attempt() -> ProbeResult:
        async with httpx.AsyncClient(transport=transport, timeout=check.timeout,
                                     follow_redirects=False) as client:
            try:
                response = await client.get(url, headers=headers)
            except httpx.HTTPError as exc:
                return ProbeResult(False, f"GET {url}: {type(exc).__name__}: {exc}")
        if response.status_code not in check.expect_status:
            return ProbeResult(False, f"GET {url}: status {response.status_code}")
        if check.expect_body is not None and check.expect_body not in response.text:
            return ProbeResult(False, f"GET {url}: body lacks {check.expect_body!r}")
        return ProbeResult(True, f"GET {url}: {response.status_code}")

    return attempt


def _dns(host: str, port: int, qname: str | None) -> Callable[[], Awaitable[ProbeResult]]:
    async def attempt() -> ProbeResult:
        import dns.asyncquery
        import dns.message
        import dns.rcode

        query = dns.message.make_query(qname or ".", "SOA")
        response = await dns.asyncquery.udp(query, host, port=port)
        rcode = response.rcode()
        if qname is not None and rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return ProbeResult(False, f"dns {host}:{port}: {dns.rcode.to_text(rcode)}")
        return ProbeResult(True, f"dns {host}:{port}: {dns.rcode.to_text(rcode)}")

    return attempt


def _command(resource: Resource, check: HealthCheck) -> Callable[[], Awaitable[ProbeResult]]:
    env = {**os.environ, "SHADOWDNS_RESOURCE": resource.id,
           "SHADOWDNS_ADDRESS": resource.address or resource.address6 or ""}

    async def attempt() -> ProbeResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                *check.command, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env)
        except OSError as exc:
            return ProbeResult(False, f"{check.command[0]}: {exc.strerror or exc}")
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        return ProbeResult(code == 0, f"{check.command[0]} exited {code}")

    return attempt
