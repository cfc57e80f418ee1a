"""The composition root: builds the running server from its configuration and owns its tasks.

Everything long-lived (engine, listeners, store, background loops) is created here and
passed down, so library code never reaches for globals.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

from shadowdns.errors import ShadowDNSError
from shadowdns.resolver.authority import ZoneSet
from shadowdns.resolver.engine import QueryEngine, Snapshot
from shadowdns.resolver.render import Identity
from shadowdns.resolver.server import DNSServer, ListenAddress, TCPLimits
from shadowdns.zones.loader import load_zone_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    zones_dir: Path
    listen: tuple[ListenAddress, ...]
    identity: Identity = field(default_factory=Identity)
    state_path: Path | None = None
    tcp_max_connections: int = 256
    tcp_idle_timeout: float = 10.0


def build_snapshot(config: ServeConfig, generation: int = 0) -> Snapshot:
    """Load everything the query path needs; raises ConfigError without side effects."""
    zones = load_zone_dir(config.zones_dir)
    return Snapshot(zones=ZoneSet(zones), identity=config.identity, generation=generation)


class Service:
    """One running shadowdns process."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.engine = QueryEngine(build_snapshot(config))
        self.server = DNSServer(
            self.engine, TCPLimits(config.tcp_max_connections, config.tcp_idle_timeout)
        )
        self.stopping = asyncio.Event()
        self.generation = 0

    def reload(self) -> bool:
        """Re-read the zones; keep serving the old data if anything is wrong."""
        try:
            snapshot = build_snapshot(self.config, self.generation + 1)
        except ShadowDNSError as exc:
            log.error("reload failed, still serving the previous zones:\n%s", exc)
            return False
        self.generation += 1
        self.engine.swap(snapshot)
        log.info("reloaded %d zone(s), generation %d", len(snapshot.zones), self.generation)
        return True

    async def start(self) -> list[ListenAddress]:
        bound = [await self.server.listen(addr) for addr in self.config.listen]
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
            loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
            pass
        zones = self.engine.snapshot.zones.zones
        log.info("serving %d zone(s): %s", len(zones), " ".join(str(z) for z in zones))
        return bound

    async def run(self) -> None:
        await self.start()
        await self.stopping.wait()
        await self.server.close()
        log.info("stopped")


def run_service(config: ServeConfig) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        uvloop = None
    service = Service(config)
    if uvloop is not None:
        uvloop.run(service.run())
    else:  # pragma: no cover
        asyncio.run(service.run())
    return 0
