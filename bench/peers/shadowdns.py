"""shadowdns itself: a zones directory with the zone and (geo) its policy file."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from bench.peers.base import Peer, Setup
from bench.workload import LOCATIONS, TTL, Workload

__all__ = ["ShadowDNS", "policy_lines", "resource_id", "write_policy"]


def resource_id(workload: Workload, i: int, location: str) -> str:
    """The id of DI `i`'s primary at `location` (shared: one per location for all DIs)."""
    return f"r-{location}" if workload.resources == "shared" else f"d{i}-{location}"


def policy_lines(workload: Workload, resource_extra: Mapping[str, str] | None = None,
                 extra_resources: Sequence[str] = (),
                 di_ttl: Mapping[int, int] | None = None) -> Iterator[str]:
    """The policy file: one location per continent (+ `def`) and one primary per location
    for every DI — the same five for all (`shared`) or five of its own (`distinct`).

    Each region's own primary sits at its location, so "nearest primary" is that primary.
    Every entry is one line, the shape the loader reads without YAML for DIs. The churn
    benchmark adds flow-mapping text to some resources (`resource_extra`, e.g. a health
    check), whole resource lines (`extra_resources`) and other TTLs for some DIs.
    """
    extra = resource_extra or {}
    ttls = di_ttl or {}
    yield "locations:"
    for name, (lat, lon, continent) in LOCATIONS.items():
        where = f", continent: {continent}" if continent else ""
        yield f"  {name}: {{lat: {lat}, lon: {lon}{where}}}"
    mapping = ", ".join(f"{c}: {n}" for n, (_, _, c) in LOCATIONS.items() if c)
    yield from ("regions:", f"  map: {{{mapping}}}", "  default: def", "resources:")
    per_di = range(workload.dis) if workload.resources == "distinct" else range(1)
    for i in per_di:
        for location in LOCATIONS:
            rid = resource_id(workload, i, location)
            yield (f"  {rid}: {{address: {workload.di_address(i, location)}, "
                   f"location: {location}, role: primary{extra.get(rid, '')}}}")
    yield from extra_resources
    yield "dis:"
    shared = ", ".join(resource_id(workload, 0, location) for location in LOCATIONS)
    for i in range(workload.dis):
        primaries = (shared if workload.resources == "shared" else
                     ", ".join(resource_id(workload, i, location) for location in LOCATIONS))
        yield f"  di{i}: {{primaries: [{primaries}], ttl: {ttls.get(i, TTL)}}}"


def write_policy(path: Path, lines: Iterator[str]) -> Path:
    with path.open("w") as out:
        for line in lines:
            out.write(line + "\n")
    return path


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
        w = setup.workload
        w.write_zone(zones / f"{w.origin}zone", di_default=False)
        argv = [*self.command, "--log-level", "WARNING", "serve", "--zones", str(zones),
                "--listen", f"127.0.0.1:{setup.port}",
                "--state", str(setup.workdir / "state.sqlite")]
        if w.is_geo:
            write_policy(zones / f"{w.origin}policy.yaml", policy_lines(w))
            if setup.geoip is not None:
                if "--geoip" in self._serve_help():
                    argv += ["--geoip", str(setup.geoip)]
                else:
                    print(f"  note: {self.name} has no --geoip option yet; started without it")
        if self.workers:
            argv += ["--workers", str(self.workers)]
        return argv + self.extra

    def fresh_state(self, workdir: Path) -> None:
        for path in workdir.glob("state.sqlite*"):  # the database and its -wal/-shm
            path.unlink()
