"""What every server under test provides: its packages, a readiness check, its configuration.

A peer renders the shared `Workload` into its own configuration files inside its own work
directory and returns the command line that serves them on 127.0.0.1:`port` in the
foreground. It never touches system configuration or system services.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.workload import Workload

__all__ = ["Peer", "Setup"]


@dataclass(frozen=True, slots=True)
class Setup:
    """Everything a peer needs to write its configuration."""

    workload: Workload
    workdir: Path  # this server's own directory, created by the harness
    port: int
    geoip: Path | None  # the .mmdb every geo-aware server reads (None: static benchmark)
    threads: int = 1  # worker threads/processes matching the cores it is pinned to

    @property
    def zone(self) -> str:
        """The zone name without the trailing dot."""
        return self.workload.origin.rstrip(".")


class Peer:
    """Base of the servers under test; subclasses set the class attributes and `configure`."""

    name: str = ""
    packages: tuple[str, ...] = ()  # Debian packages `--install` adds
    binary: str = ""
    geo_aware: bool = True  # False: answers every client with the default location

    def missing(self) -> str | None:
        """Why this peer cannot run here, or None."""
        if shutil.which(self.binary) is None:
            return f"{self.binary} not installed (apt-get install {' '.join(self.packages)})"
        return None

    def configure(self, setup: Setup) -> list[str]:
        """Write the configuration for `setup`; return the foreground command line."""
        raise NotImplementedError

    def fresh_state(self, workdir: Path) -> None:
        """Remove what an earlier start left in `workdir` (the cold benchmark starts every
        round from the configuration alone); nothing, for servers that keep no state."""
