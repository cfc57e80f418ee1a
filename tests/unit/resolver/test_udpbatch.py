"""The UDP listener's recvmmsg/sendmmsg helper against its pure-Python path: the same
datagrams in give the same replies, to the right senders, over real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import dns.edns
import dns.message
import pytest

from shadowdns.resolver import server
from shadowdns.resolver.engine import QueryEngine
from shadowdns.resolver.server import UDPListener
from shadowdns.resolver.snapshot import build_snapshot, load_config
from tests.unit.resolver.test_answer_table import POLICY, ZONE

pytestmark = pytest.mark.skipif(server._udpbatch is None,
                                reason="the compiled helper is not built here")


def _engine(tmp_path: Path) -> QueryEngine:
    (tmp_path / "t.example.zone").write_text(ZONE)
    (tmp_path / "t.example.policy.yaml").write_text(POLICY)
    return QueryEngine(build_snapshot(load_config(tmp_path)))


def _datagrams() -> list[bytes]:
    """Queries of several shapes, malformed ones and a response (which gets no reply)."""
    out: list[bytes] = []
    for i, (name, qtype, ecs) in enumerate([
        ("a.t.example.", "A", dns.edns.ECSOption("193.0.0.0", 24)),
        ("a.t.example.", "A", dns.edns.ECSOption("8.8.8.0", 24)),
        ("d.t.example.", "AAAA", None),
        ("alias.t.example.", "A", None),
        ("missing.t.example.", "TXT", None),
        ("t.example.", "SOA", None),
        ("other.example.", "A", None),
    ]):
        query = dns.message.make_query(name, qtype, use_edns=0 if ecs else -1,
                                       options=[ecs] if ecs else [])
        query.id = 1000 + i
        out.append(query.to_wire())
    out.append(b"\x12\x34\x01\x00\x00\x01")  # short: dropped
    out.append(b"\xab\xcd" + bytes(10) + b"\x07garbage")  # malformed: FORMERR
    reply = dns.message.make_response(dns.message.make_query("a.t.example.", "A"))
    out.append(reply.to_wire())  # a response: never answered
    return out


async def _exchange(listener: UDPListener, clients: list[socket.socket],
                    datagrams: list[bytes], port: int) -> list[list[bytes]]:
    """Send every datagram from each client in turn (interleaved, so one batch holds
    several senders), collecting what each client gets as it goes."""
    loop = asyncio.get_running_loop()
    listener.start(loop)
    got: list[list[bytes]] = [[] for _ in clients]

    def drain() -> None:
        for n, client in enumerate(clients):
            while True:
                try:
                    got[n].append(client.recv(65535))
                except BlockingIOError:
                    break

    # in chunks, draining between them: a client socket's default buffer holds ~256
    # small datagrams, and replies beyond that would be lost on the client side
    for start in range(0, len(datagrams), 50):
        for data in datagrams[start:start + 50]:
            for n, client in enumerate(clients):
                # each client's own ids, so a reply sent to the wrong sender shows
                qid = (int.from_bytes(data[:2], "big") + 100 * n) & 0xFFFF
                client.sendto(qid.to_bytes(2, "big") + data[2:], ("127.0.0.1", port))
        await asyncio.sleep(0.02)
        drain()
    deadline = loop.time() + 5
    want = len([d for d in datagrams if len(d) >= 12 and not d[2] & 0x80])
    while loop.time() < deadline and any(len(g) < want for g in got):
        await asyncio.sleep(0.02)
        drain()
    listener.close()
    return got


def _run(tmp_path: Path, batched: bool, repeat: int) -> list[list[bytes]]:
    engine = _engine(tmp_path / ("b" if batched else "p"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    listener = UDPListener(engine, sock, batched=batched)
    assert (listener.batch is not None) == batched
    clients = []
    for _ in range(3):
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        clients.append(client)
    try:
        return asyncio.run(_exchange(listener, clients, _datagrams() * repeat,
                                     sock.getsockname()[1]))
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("repeat", [1, 40])  # one small batch; more than a callback's worth
def test_batched_replies_equal_the_one_by_one_path(tmp_path: Path, repeat: int) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "p").mkdir()
    batched = _run(tmp_path, True, repeat)
    plain = _run(tmp_path, False, repeat)
    answered = 8 * repeat  # the seven queries and the malformed one, per repeat
    for got_batched, got_plain in zip(batched, plain, strict=True):
        assert len(got_batched) == answered
        assert sorted(got_batched) == sorted(got_plain)
    # each client got the replies to its own queries
    for n, got in enumerate(batched):
        ids = sorted(int.from_bytes(r[:2], "big") for r in got)
        sent = [1000 + i + 100 * n for i in range(7)] + [0xABCD + 100 * n]
        assert ids == sorted(sent * repeat)
    formerr = [r for r in batched[1] if r[:2] == (0xABCD + 100).to_bytes(2, "big")]
    assert formerr and all(r[3] & 0x0F == 1 for r in formerr)  # FORMERR


def test_replies_go_back_to_an_ipv6_sender(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    listener = UDPListener(engine, sock, batched=True)
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client.bind(("::1", 0))
    client.setblocking(False)
    query = dns.message.make_query("a.t.example.", "A")

    async def go() -> bytes:
        listener.start(asyncio.get_running_loop())
        client.sendto(query.to_wire(), ("::1", sock.getsockname()[1]))
        for _ in range(250):
            await asyncio.sleep(0.02)
            try:
                return client.recv(65535)
            except BlockingIOError:
                continue
        raise AssertionError("no reply")

    try:
        reply = dns.message.from_wire(asyncio.run(go()))
    finally:
        listener.close()
        client.close()
    assert reply.id == query.id and reply.answer
