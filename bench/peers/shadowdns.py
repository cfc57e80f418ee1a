"""shadowdns itself: a zones directory with the zone and (geo) its policy file."""

from __future__ import annotations

import shlex
import subprocess
import sys

from bench.peers.base import Peer, Setup
from bench.workload import LOCATIONS, POOL, TTL

__all__ = ["ShadowDNS", "policy_yaml"]


def policy_yaml(setup: Setup) -> str:
    """The policy file: one location and one primary per continent, every DI lists them all.

    Each region's own primary sits at its location, so "nearest primary" is that primary.
    """
    lines = ["locations:"]
    for name, (lat, lon, continent) in LOCATIONS.items():
        extra = f", continent: {continent}" if continent else ""
        lines.append(f"  {name}: {{lat: {lat}, lon: {lon}{extra}}}")
    mapping = ", ".join(f"{c}: {n}" for n, (_, _, c) in LOCATIONS.items() if c)
    lines += ["regions:", f"  map: {{{mapping}}}", "  default: def", "resources:"]
    for name, address in POOL.items():
        lines.append(f"  r-{name}: {{address: {address}, location: {name}, role: primary}}")
    primaries = ", ".join(f"r-{name}" for name in POOL)
    lines.append("dis:")
    body = f"{{primaries: [{primaries}], ttl: {TTL}}}"
    lines += [f"  {name}: {body}" for name in setup.workload.di_names()]
    return "\n".join(lines) + "\n"


class ShadowDNS(Peer):
    name = "shadowdns"
    binary = "shadowdns"

    def __init__(self, command: str | None = None, extra_args: str = "", label: str = "",
                 workers: int | None = None) -> None:
        self.command = shlex.split(command) if command else [sys.executable, "-m", "shadowdns"]
        self.extra = shlex.split(extra_args)
        self.workers = workers
        if label:
            self.name = f"shadowdns[{label}]"
        self._help: str | None = None

    def _serve_help(self) -> str:
        if self._help is None:
            proc = subprocess.run([*self.command, "serve", "--help"], capture_output=True,
                                  text=True, timeout=60)
            self._help = proc.stdout if proc.returncode == 0 else ""
            self._error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return self._help

    def missing(self) -> str | None:
        if not self._serve_help():
            return f"`{shlex.join(self.command)} serve --help` failed: {self._error}"
        if self.workers and "--workers" not in self._serve_help():
            return "this shadowdns has no --workers option yet"
        return None

    def configure(self, setup: Setup) -> list[str]:
        zones = setup.workdir / "zones"
        zones.mkdir(parents=True, exist_ok=True)
        (zones / f"{setup.workload.origin}zone").write_text(setup.workload.zone_text(False))
        argv = [*self.command, "--log-level", "WARNING", "serve", "--zones", str(zones),
                "--listen", f"127.0.0.1:{setup.port}",
                "--state", str(setup.workdir / "state.sqlite")]
        if setup.workload.is_geo:
            (zones / f"{setup.workload.origin}policy.yaml").write_text(policy_yaml(setup))
            if setup.geoip is not None:
                if "--geoip" in self._serve_help():
                    argv += ["--geoip", str(setup.geoip)]
                else:
                    print(f"  note: {self.name} has no --geoip option yet; started without it")
        if self.workers:
            argv += ["--workers", str(self.workers)]
        return argv + self.extra


