"""Does a server ever stop answering? A small UDP client that asks every millisecond or two.

    python -m bench.gap_probe PORT --seconds S --out FILE [--interval 0.001] [--query HEX ...]

Sends one query every `--interval` seconds (the given wire queries in turn, each with a new
ID) to 127.0.0.1:PORT and records the CLOCK_MONOTONIC time of every send and of every reply
into FILE (two arrays of doubles, see `read`). The longest interval between two replies is
the longest time the server gave no answer; the longest interval between two sends says how
far the probe itself was held up (a busy client core), so a gap is only the server's when
the probe kept sending through it. It runs in its own process so nothing of the benchmark
driver (threads, the GIL, HTTP calls) can delay it, and the clock is shared by every
process on the machine, so the driver can place the gaps in its own timeline.
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
import struct
import time
from array import array
from pathlib import Path

__all__ = ["Trace", "longest_gap", "read"]

_MAGIC = b"GAP1"


def probe(port: int, seconds: float, interval: float, queries: list[bytes],
          out: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    sends, replies = array("d"), array("d")
    clock = time.monotonic
    end = clock() + seconds
    next_send = clock()
    seq = 0
    stop = []  # SIGINT ends the probe early, trace kept (a run whose length is not known)
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    while not stop:
        now = clock()
        if now >= end:
            break
        if now >= next_send:
            query = queries[seq % len(queries)]
            try:
                sock.send(struct.pack("!H", seq & 0xFFFF) + query[2:])
                sends.append(now)
            except (BlockingIOError, ConnectionRefusedError):
                pass
            seq += 1
            # Late (the core was busy): start the cadence again instead of bursting.
            next_send = next_send + interval if next_send + interval > now else now + interval
        wait = max(0.0, min(next_send, end) - clock())
        if poller.poll(wait * 1000):
            while True:
                try:
                    sock.recv(4096)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                replies.append(clock())
    sock.close()
    with out.open("wb") as f:
        f.write(_MAGIC + struct.pack("!QQ", len(sends), len(replies)))
        sends.tofile(f)
        replies.tofile(f)


class Trace:
    """What a probe recorded: monotonic times of its sends and of the replies."""

    def __init__(self, sends: array[float], replies: array[float]) -> None:
        self.sends = sends
        self.replies = replies


def read(path: Path) -> Trace:
    with path.open("rb") as f:
        if f.read(4) != _MAGIC:
            raise ValueError(f"{path} is not a gap probe trace")
        n_sends, n_replies = struct.unpack("!QQ", f.read(16))
        sends, replies = array("d"), array("d")
        sends.fromfile(f, n_sends)
        replies.fromfile(f, n_replies)
    return Trace(sends, replies)


def longest_gap(times: array[float], start: float, end: float) -> tuple[float, float]:
    """(the longest interval in [start, end) without an entry of `times`, when it ended).

    The interval from `start` to the first entry and from the last entry to `end` count,
    so a window with no reply at all is one gap as long as the window."""
    worst, at, last = 0.0, start, start
    for t in times:
        if t < start:
            continue
        if t >= end:
            break
        if t - last > worst:
            worst, at = t - last, t
        last = t
    if end - last > worst:
        worst, at = end - last, end
    return worst, at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=0.001)
    parser.add_argument("--query", action="append", required=True,
                        help="a wire-format query in hex (repeatable; sent in turn)")
    args = parser.parse_args()
    probe(args.port, args.seconds, args.interval, [bytes.fromhex(q) for q in args.query],
          args.out)


if __name__ == "__main__":
    main()
