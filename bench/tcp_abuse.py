"""What TCP abuse costs the server: memory under never-read pipelining, and how long a fresh
client waits behind slow-drip clients.

    .venv/bin/python -m bench.tcp_abuse [--readers 64] [--drippers 300] [-- SERVE FLAGS...]

Serves a zone with a ~21 KB TXT RRset (`shadowdns serve --answer-only`, default TCP limits
unless flags follow `--`) and plays two attacks from loopback networks 127.2.N.M (spread
over /24s, so the per-prefix limit alone does not stop them):

1. `--readers` clients each pipeline queries for the large RRset for `--seconds` and never
   read. Prints the server's RSS before, at its peak, and after the idle timeout has passed
   (and how many of those connections the server closed).
2. `--drippers` clients each declare a 65,535-byte message and send one byte a second,
   reconnecting when dropped. After they have held the slots for a few seconds, a fresh
   client from 127.0.0.1 asks one query over TCP, `--fresh` times; prints how many got an
   answer and the slowest answer.
"""

from __future__ import annotations

import argparse
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.message

TEXT = "x" * 200


def start(zones: Path, flags: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadowdns", "serve", "--zones", str(zones), "--listen",
         "127.0.0.1:0", "--state", ":memory:", "--answer-only", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if match:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(match.group(1))
    raise SystemExit("the server did not start")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def framed(qname: str, qtype: str, qid: int = 1) -> bytes:
    query = dns.message.make_query(qname, qtype)
    query.id = qid
    wire = query.to_wire()
    return struct.pack("!H", len(wire)) + wire


def source(index: int) -> str:
    return f"127.2.{index // 25}.{index % 25 + 1}"


def connect(port: int, src: str, timeout: float) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(src, 0))


def never_read(proc: subprocess.Popen[str], port: int, readers: int, seconds: float,
               idle: float) -> None:
    before = rss_mib(proc.pid)
    socks = []
    for i in range(readers):
        sock = connect(port, source(i), 3.0)
        sock.setblocking(False)
        socks.append(sock)
    blob = framed("big.tcp.test.", "TXT") * 2000
    peak = before
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for sock in socks:
            try:
                sock.send(blob)
            except OSError:
                pass
        peak = max(peak, rss_mib(proc.pid))
        time.sleep(0.05)
    time.sleep(idle + 1)
    after = rss_mib(proc.pid)
    closed = sum(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != 1
                 for sock in socks)
    for sock in socks:
        sock.close()
    print(f"never-read pipelining, {readers} clients for {seconds:g} s: RSS {before:.0f} MiB "
          f"before, {peak:.0f} MiB peak, {after:.0f} MiB {idle + 1:g} s later; "
          f"{closed}/{readers} connections closed by the server")


def slow_drip(port: int, drippers: int, fresh: int) -> None:
    socks: list[socket.socket | None] = [None] * drippers
    stop = threading.Event()

    def open_one(i: int) -> None:
        try:
            sock = connect(port, source(i), 1.0)
            sock.setblocking(False)
            sock.send(b"\xff\xff\x00")
            socks[i] = sock
        except OSError:
            socks[i] = None

    def drip() -> None:
        while not stop.wait(1.0):
            for i, sock in enumerate(socks):
                try:
                    if sock is None:
                        raise OSError
                    sock.send(b"\x00")
                except OSError:
                    if sock is not None:
                        sock.close()
                    open_one(i)

    for i in range(drippers):
        open_one(i)
    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    time.sleep(3)
    waits = []
    for attempt in range(fresh):
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(framed("www.tcp.test.", "A", attempt + 1))
                head = sock.recv(2)
                if len(head) == 2:
                    waits.append(time.monotonic() - started)
        except OSError:
            pass
        time.sleep(0.5)
    stop.set()
    thread.join(10)
    for sock in socks:
        if sock is not None:
            sock.close()
    slowest = f", slowest {max(waits) * 1000:.0f} ms" if waits else ""
    print(f"slow drip, {drippers} clients: {len(waits)}/{fresh} fresh TCP clients "
          f"answered{slowest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--idle", type=float, default=10.0,
                        help="the server's --tcp-idle-timeout (to wait past it)")
    parser.add_argument("--drippers", type=int, default=300)
    parser.add_argument("--fresh", type=int, default=10)
    parser.add_argument("flags", nargs="*", help="extra `serve` flags (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shadowdns-tcp-") as tmp:
        zones = Path(tmp)
        lines = ["$ORIGIN tcp.test.", "$TTL 300", "@ SOA ns1 hostmaster 1 3600 600 86400 60",
                 "@ NS ns1", "ns1 A 192.0.2.1", "www A 192.0.2.80"]
        lines += [f'big TXT "{i:04d}{TEXT}"' for i in range(100)]
        (zones / "tcp.test.zone").write_text("\n".join(lines) + "\n")
        proc, port = start(zones, args.flags)
        try:
            time.sleep(1)
            never_read(proc, port, args.readers, args.seconds, args.idle)
            slow_drip(port, args.drippers, args.fresh)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
