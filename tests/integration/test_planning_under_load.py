"""A planning window over thousands of DIs, each with its own resources, runs while the
server answers: every query sent during it is answered, and right, and the shadows it
allocates are served.

This is the shape that stalled the server before (a resource map rebuilt per DI, answers
compiled on first use and dropped whole by every change): 3,000 DIs with four primaries
and two standbys of their own (18,000 resources), demand for all of them seeded in one
region, the allocator planning every few seconds.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import dns.edns
import dns.message
import dns.rdatatype

from shadowdns.store import DemandRow, open_store
from tests.serverproc import ServerProcess

DIS = 3000
JP = "198.18.1.0/24"
LOCATIONS = {"eu": (50.1, 8.7), "na": (39.0, -77.5), "jp": (35.7, 139.7), "br": (-23.5, -46.6)}


def _address(loc: int, i: int) -> str:
    return f"10.{loc * 16 + i // 65536}.{i // 256 % 256}.{i % 256}"


def _write(zones: Path) -> None:
    (zones / "pl.test.zone").write_text(
        "$ORIGIN pl.test.\n$TTL 300\n@ SOA ns h 1 3600 600 86400 60\n@ NS ns\nns A 192.0.2.1\n")
    lines = ["locations:"]
    lines += [f"  {k}: {{lat: {a}, lon: {b}}}" for k, (a, b) in LOCATIONS.items()]
    lines += ["regions:", f'  cidr: {{"{JP}": jp}}', "  default: eu", "resources:"]
    dis = ["dis:"]
    for i in range(DIS):
        ids = []
        for j, loc in enumerate(LOCATIONS):
            if loc == "jp":
                continue  # no primary in jp: a jp shadow is nearer than every primary
            ids.append(f"p{i}-{loc}")
            lines.append(f"  p{i}-{loc}: {{address: {_address(j, i)}, location: {loc}, "
                         "role: primary}")
        for k in range(2):
            lines.append(f"  s{i}-{k}: {{address: {_address(8 + k, i)}, location: jp, "
                         "role: standby, capacity: 1000}")
        dis.append(f"  d{i}: {{primaries: [{', '.join(ids)}], standby: [s{i}-0, s{i}-1], "
                   "ttl: 5, policy: {threshold: 50, lead_time: 0, min_hold: 3600}}")
    (zones / "pl.test.policy.yaml").write_text("\n".join(lines + dis) + "\n")
    (zones / "allocator.yaml").write_text(
        "allocator:\n  mode: active\n  window: 3s\n  bucket: 1m\n  tick: 0.5\n")


def _query(i: int) -> bytes:
    return dns.message.make_query(f"d{i}.pl.test.", "A", use_edns=0, options=[
        dns.edns.ECSOption(JP.split("/")[0], 24)]).to_wire()


def test_planning_window_over_distinct_resources_while_answering(tmp_path: Path) -> None:
    """Queries sent before, during and after a window that allocates a shadow for every
    DI are all answered with one of the DI's own addresses; afterwards jp gets the DI's
    jp standby."""
    zones = tmp_path / "zones"
    zones.mkdir()
    _write(zones)
    state = tmp_path / "state.db"
    store = open_store(str(state))
    end = int(time.time() // 60 * 60) + 60  # through the current minute
    try:
        store.add_demand([DemandRow(f"d{i}.pl.test.", "jp", end - 60 * m, "primary", 200)
                          for i in range(DIS) for m in range(1, 6)])
    finally:
        store.close()
    server = ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                            "--state", str(state)], timeout=120).start()
    answered: list[tuple[int, list[str]]] = []
    unanswered: list[int] = []
    stop = threading.Event()

    def ask() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3.0)
            sock.connect((server.host, server.port))
            i = 0
            while not stop.is_set():
                n = i % DIS
                sock.send(_query(n))
                try:
                    reply = dns.message.from_wire(sock.recv(4096))
                except TimeoutError:
                    unanswered.append(n)
                else:
                    answered.append((n, [r.to_text() for rr in reply.answer
                                         if rr.rdtype == dns.rdatatype.A for r in rr]))
                i += 1
                time.sleep(0.002)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    try:
        line = server.wait_log(r"allocator: generation \d+: \+\d+ shadow", timeout=120)
        added = int(line.split("+")[1].split()[0])
        assert added >= DIS // 2, line
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the shadows turn ready and reach the table
            ready = [int(m.group(1)) for line in list(server.log) if (m := re.search(
                r"live state changed: (\d+) DI\(s\) with shadows", line))]
            if ready and max(ready) >= added:
                break
            time.sleep(0.2)
        # then 250 more answers, however slowly a busy machine gets them
        mark = len(answered)
        deadline = time.monotonic() + 60
        while len(answered) < mark + 250 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(5)
        code = server.stop()
    assert code == 0
    assert not unanswered, (f"{len(unanswered)} queries unanswered of {len(answered)}:\n"
                            + "".join(server.log[-40:]))
    assert len(answered) > 500
    for n, addresses in answered:
        mine = {_address(j, n) for j in range(len(LOCATIONS))} | {_address(8, n),
                                                                  _address(9, n)}
        assert len(addresses) == 1 and addresses[0] in mine, (n, addresses)
    shadows = sum(1 for n, a in answered[-200:] if a[0].startswith(("10.128.", "10.144.")))
    assert shadows > 150, "the window's shadows are not served"
