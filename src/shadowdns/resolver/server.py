"""UDP and TCP listeners (RFC 1035 §4.2, RFC 7766) around one `QueryEngine`.

The listeners only move bytes: UDP datagrams straight to `QueryEngine.respond`; TCP
streams are split into length-prefixed messages and answered in order under the limits of
`shadowdns.resolver.tcp`, so a slow or hostile client cannot pin the server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass

from shadowdns.resolver.engine import QueryEngine

try:
    from shadowdns.resolver import _udpbatch
except ImportError:  # not built here (no compiler, not Linux): the pure-Python path
    _udpbatch = None  # type: ignore[assignment]
from shadowdns.resolver.rrl import RateLimiter
from shadowdns.resolver.tcp import TCPConnections, TCPLimits, TCPProtocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """Parse `HOST:PORT`, `[V6]:PORT` or a bare port (127.0.0.1)."""
        text = text.strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if not rest.startswith(":"):
                raise ValueError(f"listen address {text!r}: expected [ADDRESS]:PORT")
            port = rest[1:]
        elif text.count(":") == 1:
            host, port = text.split(":")
        elif text.isdigit():
            host, port = "127.0.0.1", text
        else:
            raise ValueError(f"listen address {text!r}: expected HOST:PORT or [V6]:PORT")
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen address {text!r}: bad port")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class UDPListener:
    """One datagram in, at most one datagram out, read straight off the socket.

    Hand-written on purpose (the hot path): when the socket is readable, up to BATCH
    datagrams are read and answered in one callback, so the event loop's per-datagram
    protocol dispatch is paid once per batch — 10–20 % more answers per second on one
    core than a DatagramProtocol. Where the compiled helper `_udpbatch` is built (Linux),
    they are read with one recvmmsg and the replies sent with one sendmmsg per MMSG
    datagrams; otherwise one recvfrom and sendto each (`batched=False` forces that path,
    which is the reference the helper is tested against). A reply that does not fit the
    socket buffer is dropped, as a busy authoritative server does; the client retries.
    One packet in SAMPLE_EVERY is timed (answer computation, not the wire) for the
    response-time histogram.
    """

    BATCH = 256
    MMSG = 64
    SAMPLE_EVERY = 64

    def __init__(self, engine: QueryEngine, sock: socket.socket,
                 rrl: RateLimiter | None = None, batched: bool = True) -> None:
        self.engine = engine
        self.sock = sock
        self.rrl = rrl
        self.seen = 0
        sock.setblocking(False)
        self.batch = _udpbatch.Batch(sock.fileno(), self.MMSG) if (
            batched and _udpbatch is not None) else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.sock.fileno(),
                        self._readable if self.batch is None else self._readable_batched)

    def _readable_batched(self) -> None:
        batch = self.batch
        assert batch is not None
        answer = self._answer
        now = time.monotonic() if self.rrl is not None else 0.0
        for _ in range(self.BATCH // self.MMSG):
            try:
                got = batch.recv()
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                log.debug("udp receive error: %s", exc)
                continue
            if not got:
                return
            replies: list[bytes | None] = []
            for data, addr in got:
                replies.append(answer(data, addr, now))
            batch.send(replies)
            if len(got) < self.MMSG:
                return

    def _answer(self, data: bytes, addr: tuple[str, int], now: float) -> bytes | None:
        """The reply to one datagram (None: send nothing), timed one in SAMPLE_EVERY and
        passed through response rate limiting."""
        self.seen += 1
        if self.seen & (self.SAMPLE_EVERY - 1):
            resp = self.engine.respond(data, addr)
        else:
            start = time.perf_counter()
            resp = self.engine.respond(data, addr)
            self.engine.latency.observe(time.perf_counter() - start)
        if self.rrl is not None and resp is not None:
            resp = self.rrl.check(data, resp, addr[0], now)
        return resp

    def close(self) -> None:
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):  # already closed
            pass
        self.sock.close()

    def _readable(self) -> None:
        recv = self.sock.recvfrom
        send = self.sock.sendto
        answer = self._answer
        now = time.monotonic() if self.rrl is not None else 0.0
        for _ in range(self.BATCH):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                log.debug("udp receive error: %s", exc)
                continue
            resp = answer(data, addr, now)
            if resp is not None:
                try:
                    send(resp, addr)
                except OSError:
                    pass


class DNSServer:
    """Owns the listening sockets of one process."""

    def __init__(self, engine: QueryEngine, limits: TCPLimits | None = None,
                 reuse_port: bool = False, rrl: RateLimiter | None = None,
                 udp_batch: bool = True) -> None:
        self.engine = engine
        self.rrl = rrl
        self.limits = limits or TCPLimits()
        self.connections = TCPConnections(self.limits)  # shared by every TCP listener
        self.reuse_port = reuse_port
        self.udp_batch = udp_batch
        self.udp: list[UDPListener] = []
        self.servers: list[asyncio.base_events.Server] = []
        self.bound: list[ListenAddress] = []

    async def listen(self, address: ListenAddress) -> ListenAddress:
        """Bind UDP and TCP on one address; port 0 picks one port free for both."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        for _attempt in range(20):
            udp_sock = socket.socket(family, socket.SOCK_DGRAM)
            if self.reuse_port:
                udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            except OSError:
                pass
            udp_sock.bind((address.host, address.port))
            port = udp_sock.getsockname()[1]
            tcp_sock = socket.socket(family, socket.SOCK_STREAM)
            tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                tcp_sock.bind((address.host, port))
            except OSError:
                udp_sock.close()
                tcp_sock.close()
                if address.port == 0:
                    continue
                raise
            break
        else:  # pragma: no cover - twenty collisions in a row
            raise OSError(f"no free port pair on {address.host}")
        tcp_sock.listen(1024)
        tcp_sock.setblocking(False)
        udp = UDPListener(self.engine, udp_sock, self.rrl, self.udp_batch)
        udp.start(loop)
        server = await loop.create_server(
            lambda: TCPProtocol(self.engine, self.connections), sock=tcp_sock
        )
        self.udp.append(udp)
        self.servers.append(server)
        bound = ListenAddress(address.host, port)
        self.bound.append(bound)
        log.info("listening on %s (udp+tcp)", bound)
        return bound

    async def close(self) -> None:
        for udp in self.udp:
            udp.close()
        for server in self.servers:
            server.close()
            await server.wait_closed()
        self.udp.clear()
        self.servers.clear()
