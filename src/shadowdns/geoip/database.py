"""The MaxMind DB behind the geoip part: one reader, and the four facts we take from a record.

A GeoIP2/GeoLite2 City or Country database (or any MMDB laid out like one, such as the
generated loopback test database) is read with `maxminddb` in memory-mapped mode. From each
record only the country ISO code, the continent code and the coordinates are kept, together
with the prefix length of the database network the address fell in: that length is where the
ECS scope prefix starts. Everything else in a record (names in eight languages, postal codes)
is decoded by the reader and dropped here, once per cache miss.

By default the bundled GeoLite2-City database of the `maxminddb-geolite2` distribution is used
(`GeoDatabase.default()`); the operator can give their own with `--geoip PATH`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from types import TracebackType
from typing import Any

import maxminddb

from shadowdns.errors import ConfigError, Problem

__all__ = ["BUNDLED_PACKAGE", "GeoDatabase", "GeoInfo", "bundled_path"]

BUNDLED_PACKAGE = "_maxminddb_geolite2"
"""The import name of `maxminddb-geolite2`, which ships `GeoLite2-City.mmdb` in its folder."""
_BUNDLED_FILE = "GeoLite2-City.mmdb"


@dataclass(frozen=True, slots=True)
class GeoInfo:
    """What the database says about one address.

    `prefix_len` is the length of the database network that holds the address, counted in the
    address's own family (IPv4 addresses get 0..32 even in an IPv6 database). A network the
    database holds no record for comes back with every other field None: its prefix length
    still says how far the absence of data reaches.
    """

    country: str | None
    continent: str | None
    lat: float | None
    lon: float | None
    prefix_len: int

    @property
    def empty(self) -> bool:
        """True when the database has no country, continent or coordinates here."""
        return self.country is None and self.continent is None and self.lat is None


def bundled_path() -> Path | None:
    """Where the bundled GeoLite2-City database is, or None when it is not installed.

    Found through the import system without importing the package.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _BUNDLED_FILE
        if path.is_file():
            return path
    return None


def _code(section: Any, key: str) -> str | None:
    if isinstance(section, dict):
        value = section.get(key)
        if isinstance(value, str) and value:
            return value.upper()
    return None


def _coordinate(location: Any, key: str, limit: float) -> float | None:
    if isinstance(location, dict):
        value = location.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
            if -limit <= value <= limit:
                return value
    return None


def _info(record: Any, prefix_len: int) -> GeoInfo:
    if not isinstance(record, dict):
        return GeoInfo(None, None, None, None, prefix_len)
    country = _code(record.get("country"), "iso_code") or _code(
        record.get("registered_country"), "iso_code"
    )
    continent = _code(record.get("continent"), "code")
    location = record.get("location")
    lat = _coordinate(location, "latitude", 90.0)
    lon = _coordinate(location, "longitude", 180.0)
    if lat is None or lon is None:
        lat = lon = None
    return GeoInfo(country, continent, lat, lon, prefix_len)


class GeoDatabase:
    """A MaxMind DB opened for lookups; cheap to query, safe to share between threads.

    Open with `GeoDatabase.open(path)` or `GeoDatabase.default()`; close with `close()` or by
    using it as a context manager.
    """

    __slots__ = ("_reader", "build_epoch", "database_type", "ip_version", "lookup_errors", "path")

    def __init__(self, reader: maxminddb.Reader, path: str) -> None:
        self._reader = reader
        self.path = path
        metadata = reader.metadata()
        self.database_type: str = str(metadata.database_type)
        self.ip_version: int = int(metadata.ip_version)
        self.build_epoch: int = int(metadata.build_epoch)
        self.lookup_errors = 0
        """Lookups that hit corrupt data and were answered as "no data" (for metrics)."""

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: int = maxminddb.MODE_AUTO) -> GeoDatabase:
        """Open the database at `path` (memory-mapped, C extension when available).

        Raises ConfigError naming the file when it is missing or not a MaxMind DB.
        """
        name = os.fspath(path)
        try:
            reader = maxminddb.open_database(name, mode)
        except (OSError, maxminddb.InvalidDatabaseError, ValueError) as exc:
            raise ConfigError([Problem(name, None, f"cannot open GeoIP database: {exc}")]) from exc
        return cls(reader, name)

    @classmethod
    def default(cls) -> GeoDatabase | None:
        """The bundled GeoLite2-City database, or None when `maxminddb-geolite2` is absent."""
        path = bundled_path()
        return None if path is None else cls.open(path)

    def lookup(self, ip: IPv4Address | IPv6Address) -> GeoInfo | None:
        """What the database says about `ip`.

        Returns None when the database cannot speak for the address at all (an IPv6 address
        in an IPv4-only database, or a corrupt record); a GeoInfo whose fields are None when
        the address lies in a network without a record (loopback, private, unallocated).
        """
        bits = 32 if ip.version == 4 else 128
        if bits == 128 and self.ip_version == 4:
            return None
        try:
            record, prefix_len = self._reader.get_with_prefix_len(ip)
        except maxminddb.InvalidDatabaseError:
            self.lookup_errors += 1
            return None
        return _info(record, min(max(prefix_len, 0), bits))

    def describe(self) -> str:
        """One line for logs and `shadowdns explain`: type, build date, file."""
        built = datetime.fromtimestamp(self.build_epoch, UTC).date().isoformat()
        return f"{self.database_type} (IPv{self.ip_version}, built {built}) {self.path}"

    def close(self) -> None:
        """Release the memory map; lookups after this raise ValueError."""
        self._reader.close()

    def __enter__(self) -> GeoDatabase:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GeoDatabase({self.path!r}, type={self.database_type!r})"
