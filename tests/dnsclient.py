"""A small, fast DNS test client: many queries over one UDP socket or one TCP connection.

The differential, malformed-packet and fuzz suites send thousands of messages; opening a
socket per query or sleeping between them would dominate their runtime. UDP queries are
sent in windows and matched to replies by message ID; TCP queries are pipelined on one
connection (RFC 7766 §6.2.1.1) and matched by ID as well.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Sequence

Address = tuple[str, int]


def _family(addr: Address) -> int:
    return socket.AF_INET6 if ":" in addr[0] else socket.AF_INET


def with_id(wire: bytes, qid: int) -> bytes:
    return struct.pack("!H", qid) + wire[2:]


def udp_exchange(addr: Address, wires: Sequence[bytes], window: int = 32,
                 timeout: float = 2.0) -> list[bytes | None]:
    """Send each message (its ID is replaced by a unique one) and collect the replies.

    Returns the reply for each message in order, None where none arrived within
    `timeout` seconds of the last send. IDs are restored to the caller's in the replies.
    """
    replies: list[bytes | None] = [None] * len(wires)
    with socket.socket(_family(addr), socket.SOCK_DGRAM) as sock:
        sock.connect(addr)
        sock.setblocking(False)
        for start in range(0, len(wires), window):
            batch = range(start, min(start + window, len(wires)))
            pending: dict[int, int] = {}
            for index in batch:
                qid = (index % 65535) + 1
                pending[qid] = index
                sock.send(with_id(wires[index], qid))
            deadline = time.monotonic() + timeout
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    continue
                while True:
                    try:
                        data = sock.recv(65535)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    if len(data) < 2:
                        continue
                    qid = data[0] << 8 | data[1]
                    index_or_none = pending.pop(qid, None)
                    if index_or_none is not None:
                        replies[index_or_none] = wires[index_or_none][:2] + data[2:]
    return replies


def recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """Read exactly `size` bytes, or None if the peer closed first."""
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def tcp_read_message(sock: socket.socket) -> bytes | None:
    head = recv_exact(sock, 2)
    if head is None:
        return None
    return recv_exact(sock, head[0] << 8 | head[1])


def tcp_exchange(addr: Address, wires: Sequence[bytes], window: int = 32,
                 timeout: float = 5.0) -> list[bytes | None]:
    """Pipeline the messages on TCP connections, `window` at a time; replies matched by ID."""
    replies: list[bytes | None] = [None] * len(wires)
    sock: socket.socket | None = None
    try:
        for start in range(0, len(wires), window):
            if sock is None:
                sock = socket.create_connection(addr, timeout=timeout)
            batch = range(start, min(start + window, len(wires)))
            pending: dict[int, int] = {}
            out = bytearray()
            for index in batch:
                qid = (index % 65535) + 1
                pending[qid] = index
                msg = with_id(wires[index], qid)
                out += struct.pack("!H", len(msg)) + msg
            sock.sendall(out)
            while pending:
                try:
                    data = tcp_read_message(sock)
                except OSError:
                    data = None
                if data is None:
                    sock.close()
                    sock = None
                    break
                qid = data[0] << 8 | data[1] if len(data) >= 2 else -1
                index_or_none = pending.pop(qid, None)
                if index_or_none is not None:
                    replies[index_or_none] = wires[index_or_none][:2] + data[2:]
    finally:
        if sock is not None:
            sock.close()
    return replies


def udp_query(addr: Address, wire: bytes, timeout: float = 2.0) -> bytes | None:
    """One UDP exchange; None on timeout."""
    return udp_exchange(addr, [wire], timeout=timeout)[0]


def tcp_query(addr: Address, wire: bytes, timeout: float = 5.0) -> bytes | None:
    """One TCP exchange on a fresh connection; None if the server closed without a reply."""
    return tcp_exchange(addr, [wire], timeout=timeout)[0]
