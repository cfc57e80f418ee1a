"""`shadowdns demo`: the server on embedded defaults, with traffic, so everything moves.

It serves the bundled demo zone with the bundled GeoIP data and SQLite state, seeds two days
of synthetic history on first start, and sends real DNS queries over UDP to itself with ECS
subnets from several continents following a daily curve per region, so the demand series,
forecasts and shadows have something to show.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import shutil
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shadowdns.resolver.server import ListenAddress

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Source:
    """Clients of one region: an ECS subnet the bundled GeoLite2 places there, and a curve."""

    region: str
    subnet: str
    prefix: int
    base: float  # queries per minute at the trough
    peak: float  # extra queries per minute at the peak
    peak_hour: float  # UTC hour of the daily peak


SOURCES: tuple[Source, ...] = (
    Source("eu-west", "81.2.69.0", 24, 30, 40, 12.0),
    Source("us-east", "216.160.83.0", 24, 20, 40, 18.0),
    Source("ap-east", "175.16.199.0", 24, 5, 60, 3.0),
    Source("sa-east", "200.147.67.0", 24, 3, 30, 21.0),
)
DEMO_DIS = ("app.demo.shadowdns.test.", "shop.demo.shadowdns.test.")


def rate_per_minute(source: Source, ts: float, di_index: int = 0) -> float:
    """The expected queries per minute of a source at time ts (a smooth daily curve)."""
    hour = (ts / 3600.0) % 24.0
    phase = 2 * math.pi * (hour - source.peak_hour) / 24.0
    daily = (1 + math.cos(phase)) / 2  # 1 at the peak hour, 0 twelve hours away
    scale = 1.0 if di_index == 0 else 0.4
    return scale * (source.base + source.peak * daily ** 3)


def seed_history(store: Any, now: float, days: float = 2.0, seed: int = 7) -> int:
    """Write `days` of minute buckets of the demo curves (with Poisson noise) to the store."""
    from shadowdns.store import DemandRow

    existing = store.demand_series("5m", now - days * 86400, now)
    if any(sum(v for _, v in series) for series in existing.values()):
        return 0
    rng = random.Random(seed)
    rows: list[DemandRow] = []
    start = int((now - days * 86400) // 60 * 60)
    end = int(now // 60 * 60)
    for ts in range(start, end, 60):
        for source in SOURCES:
            for i, di in enumerate(DEMO_DIS):
                lam = rate_per_minute(source, ts, i)
                count = _poisson(rng, lam)
                if count:
                    rows.append(DemandRow(di, source.region, ts, "primary", count))
    store.add_demand(rows)
    store.rollup(now)
    return len(rows)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _query(qname: str, subnet: str, prefix: int, qid: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in qname.rstrip(".").split("."))
    addr = socket.inet_aton(subnet)[: (prefix + 7) // 8]
    ecs = struct.pack("!HHHBB", 8, 4 + len(addr), 1, prefix, 0) + addr
    opt = struct.pack("!BHHBBHH", 0, 41, 1232, 0, 0, 0, len(ecs)) + ecs
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1)
    return header + labels + b"\x00" + struct.pack("!HH", 1, 1) + opt


class _Sink(asyncio.DatagramProtocol):
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        pass


async def generate_traffic(target: ListenAddress, speedup: float = 1.0,
                           seed: int = 11) -> None:
    """Send the demo curves as real queries to the server, forever."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        _Sink, remote_addr=(target.host, target.port))
    rng = random.Random(seed)
    tick = 1.0
    qid = 0
    try:
        while True:
            now = time.time()
            for source in SOURCES:
                for i, di in enumerate(DEMO_DIS):
                    lam = rate_per_minute(source, now, i) * speedup * tick / 60.0
                    for _ in range(_poisson(rng, lam)):
                        qid = (qid + 1) & 0xFFFF
                        transport.sendto(_query(di, source.subnet, source.prefix, qid))
            await asyncio.sleep(tick)
    finally:
        transport.close()


async def start_resource_endpoints(zones_dir: Path) -> list[asyncio.AbstractServer]:
    """Give every demo resource a local TCP endpoint and a health check that probes it.

    The demo's resources are documentation addresses nobody can reach; a local listener
    per resource lets the real probes run, shadows pass their `rise` checks, and an
    operator override show up as a failover on the dashboard.
    """
    import yaml

    from shadowdns.fleet import write_atomically

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    servers: list[asyncio.AbstractServer] = []
    for path in sorted(zones_dir.glob("*.policy.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        resources = data.get("resources") or {}
        for spec in resources.values():
            server = await asyncio.start_server(accept, "127.0.0.1", 0)
            servers.append(server)
            port = server.sockets[0].getsockname()[1]
            spec["check"] = {"type": "tcp", "host": "127.0.0.1", "port": port,
                             "interval": 2, "timeout": 1, "rise": 2, "fall": 2}
        write_atomically(path, yaml.safe_dump(data, sort_keys=False))
    return servers


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the server on embedded defaults with generated traffic")
    demo.add_argument("--listen", default="127.0.0.1:5353", help="DNS address (127.0.0.1:5353)")
    demo.add_argument("--api", default="127.0.0.1:8053", help="API and dashboard address")
    demo.add_argument("--state", default="var/demo.db", help="SQLite state (var/demo.db)")
    demo.add_argument("--speedup", type=float, default=1.0,
                      help="multiply the generated query rate")
    demo.add_argument("--no-traffic", action="store_true", help="do not generate traffic")
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from shadowdns.app import ServeConfig, Service
    from shadowdns.resolver.commands import demo_zones_dir
    from shadowdns.resolver.render import Identity

    listen = ListenAddress.parse(args.listen)
    state_dir = Path(args.state).parent
    state_dir.mkdir(parents=True, exist_ok=True)
    # Serve a copy, so edits through the API change the demo's files, not the package's.
    zones_dir = state_dir / "zones"
    if not zones_dir.exists():
        shutil.copytree(demo_zones_dir(), zones_dir)
    config = ServeConfig(
        zones_dir=zones_dir, listen=(listen,),
        identity=Identity(server_id=socket.gethostname(), version="shadowdns demo"),
        state=args.state, api=args.api,
    )

    async def main() -> None:
        endpoints = await start_resource_endpoints(zones_dir)
        service = Service(config)
        seeded = await service.run_in_io(seed_history, service.store, time.time())
        if seeded:
            log.info("seeded %d rows of demo history", seeded)
        bound = await service.start()
        from shadowdns.api.auth import new_token

        secret, token = new_token("operator", name="demo")
        await service.run_in_io(service.store.add_token, token)
        if args.api:
            log.info("dashboard: http://%s/#token=%s", args.api, secret)
            log.info("API: curl -H 'Authorization: Bearer %s' http://%s/api/v1/dis",
                     secret, args.api)
        if not args.no_traffic:
            service.tasks.append(asyncio.get_running_loop().create_task(
                generate_traffic(bound[0], args.speedup)))
        log.info("demo running: dig @%s -p %d app.demo.shadowdns.test +subnet=175.16.199.0/24",
                 bound[0].host, bound[0].port)
        log.info("fail a resource over: shadowdns health override web-us-1 down "
                 "--api http://%s --token %s", args.api, secret)
        await service.stopping.wait()
        await service.stop()
        for server in endpoints:
            server.close()

    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main())
    else:
        uvloop.run(main())
    return 0
