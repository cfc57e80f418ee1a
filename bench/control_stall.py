"""Does the control plane stop DNS answers? The longest gap between answers at start.

    .venv/bin/python -m bench.control_stall [--dis 250] [--days 3] [--seconds 60]

Writes a policy of `--dis` DIs over four regions (4 × dis demand series) and `--days` of
5-minute demand history for every series into a fresh SQLite state, starts `shadowdns
serve` on it, and sends one ECS query every 10 ms for `--seconds` from the moment the
server listens. The allocator digests the history at start (observe, forecast and score
every bucket of every series); the figure is the longest time without an answer. Before
the demand book had its own thread that work ran on the event loop: 5.5 s at the default
size, 0.04 s after.
"""

from __future__ import annotations

import argparse
import math
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.edns
import dns.message

from shadowdns.store import DemandRow, open_store

REGIONS = ("r0", "r1", "r2", "r3")
ZONE = """$ORIGIN st.test.
$TTL 300
@   SOA ns1 hostmaster 1 3600 600 86400 60
@   NS  ns1
ns1 A   192.0.2.1
"""


def write_setup(root: Path, dis: int, days: float) -> None:
    zones = root / "zones"
    zones.mkdir(parents=True)
    (zones / "st.test.zone").write_text(ZONE)
    lines = ["locations:", "  home: {lat: 0, lon: -150}"]
    lines += [f"  {r}: {{lat: {10 * i}, lon: {30 * i}}}" for i, r in enumerate(REGIONS)]
    cidrs = ", ".join(f'"198.18.{i}.0/24": {r}' for i, r in enumerate(REGIONS))
    lines += ["regions:", f"  cidr: {{{cidrs}}}", "  default: home", "resources:",
              "  p-home: {address: 192.0.2.10, location: home, role: primary}"]
    lines += [f"  s-{r}: {{address: 203.0.113.{40 + i}, location: {r}, role: standby}}"
              for i, r in enumerate(REGIONS)]
    standby = ", ".join(f"s-{r}" for r in REGIONS)
    lines.append("dis:")
    lines += [f"  app{k}: {{primaries: [p-home], standby: [{standby}], ttl: 30, "
              "policy: {threshold: 500, model: snaive}}" for k in range(dis)]
    (zones / "st.test.policy.yaml").write_text("\n".join(lines) + "\n")
    store = open_store(str(root / "state.db"))
    end = int((time.time() - 120) // 300 * 300)
    rows: list[DemandRow] = []
    for k in range(dis):
        for region in REGIONS:
            for i in range(1, int(days * 288) + 1):
                ts = end - 300 * i
                queries = int(100 + 80 * math.sin(ts / 86400 * 2 * math.pi))
                rows.append(DemandRow(f"app{k}.st.test.", region, ts, "primary", queries))
        if len(rows) > 200_000:
            store.add_demand(rows)
            rows = []
    store.add_demand(rows)
    store.close()


def longest_gap(root: Path, seconds: float) -> tuple[float, float]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadowdns", "serve", "--zones", str(root / "zones"),
         "--listen", "127.0.0.1:0", "--state", str(root / "state.db")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        port = 0
        for line in proc.stderr:
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        if not port:
            raise SystemExit("the server did not start")
        # keep reading its log so a full pipe never blocks the server
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        query = dns.message.make_query("app1.st.test.", "A", use_edns=0, options=[
            dns.edns.ECSOption("198.18.1.0", 24)]).to_wire()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(0.01)
        start = last = time.monotonic()
        worst = (0.0, 0.0)
        while time.monotonic() - start < seconds:
            sock.sendto(query, ("127.0.0.1", port))
            try:
                sock.recv(4096)
            except TimeoutError:
                continue
            now = time.monotonic()
            if now - last > worst[0]:
                worst = (now - last, now - start)
            last = now
        return worst
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dis", type=int, default=250)
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shadowdns-stall-") as tmp:
        root = Path(tmp)
        write_setup(root, args.dis, args.days)
        gap, at = longest_gap(root, args.seconds)
    print(f"{args.dis * len(REGIONS)} series, {args.days:g} days of history: longest gap "
          f"between answers {gap:.3f} s (ending {at:.1f} s after the server listened)")


if __name__ == "__main__":
    main()
