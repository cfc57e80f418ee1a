"""The one exception tree of shadowdns, so callers can catch by meaning.

::

    ShadowDNSError
    ├── ConfigError            a file or value the operator gave is wrong (file, line, reasons)
    │   ├── ZoneError          a master file failed to load or validate
    │   └── PolicyError        a policy file failed to validate
    └── StoreError             the store could not read or write

Exceptions turn into rcodes only in the resolver's handler and into HTTP codes only in the
API's error handler.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a file was rejected, with where it was found."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.reason}"


class ShadowDNSError(Exception):
    """Root of every error shadowdns raises on purpose."""


class ConfigError(ShadowDNSError):
    """Operator input is wrong; carries every problem found, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid configuration")


class ZoneError(ConfigError):
    """A zone master file is invalid."""


class PolicyError(ConfigError):
    """A policy file is invalid."""


class StoreError(ShadowDNSError):
    """The store failed to read or write."""

