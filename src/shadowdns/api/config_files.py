"""Edits of the zones directory made by the API: validate, write atomically, reload, or undo.

The files in the zones directory stay the source of truth; the API only rewrites them. One
change may touch several files (a zone and its policy). `ConfigFiles.apply` stages every new
content in a temporary file beside its target, replaces the targets (`os.replace`), then
asks the service to reload; when the reload refuses the new configuration, every target
gets its previous bytes back and the caller gets a 409 with the loader's reasons, so the
directory never holds a half-applied change. The change is audited once the server has
loaded it and before it is served, and undone the same way if the audit log cannot be
written (503): no change made through the API goes unrecorded or is served unrecorded.
Callers hold `lock` from reading the current content to applying the change, so concurrent
edits of one object are serialised and their ETag checks are exact.

Zone text is validated with the same loader `serve` uses; policy data with
`policy_from_mapping`. A zone rewritten by the API is written by dnspython (comments are not
kept) and its SOA serial is bumped on every change.

Nothing sent here may make the server run a program or read a host file: zone text with
`$INCLUDE` is refused (422 at its line), a policy that would add a command health check is
refused (403 naming `check.type`, see `health.privilege`) unless the server runs with
`--allow-commands`, and `apply` writes only `<name>.zone`, `<name>.policy.yaml` and
`allocator.yaml` directly in the zones directory (`api.allocator` refuses a new hook command
the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone
import yaml

from shadowdns.allocator.settings import SETTINGS_FILE
from shadowdns.api.errors import ApiError, ProblemItem, problem_item, problems_from_config
from shadowdns.errors import ConfigError, PolicyError, Problem, ShadowDNSError, ZoneError
from shadowdns.health.privilege import COMMANDS_REFUSED, command_checks, new_commands
from shadowdns.offloop import collector_paused
from shadowdns.resolver.render import Identity
from shadowdns.resolver.snapshot import Config, load_config
from shadowdns.runtime import RELOAD_FAILED
from shadowdns.zones.loader import ZONE_SUFFIX, adopt_rendered, load_zone_file, record_lines
from shadowdns.zones.policy import Policy
from shadowdns.zones.policy_file import (
    POLICY_SUFFIX,
    adopt_checked,
    load_policy,
    mapping_text,
    policy_from_mapping,
    policy_from_text,
    policy_to_mapping,
)
from shadowdns.zones.rules import Conflict, node_conflicts
from shadowdns.zones.staging import temp_name
from shadowdns.zones.zone import Zone

SERIAL_MODULO = 2**32


def etag_of(value: object) -> str:
    """A strong ETag of a JSON-able value or of bytes."""
    raw = value if isinstance(value, bytes) else json.dumps(
        value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return '"' + hashlib.sha256(raw).hexdigest()[:20] + '"'


def check_if_match(if_match: str | None, current: str | None) -> None:
    """412 unless `If-Match` is absent, ``*`` for an existing object, or the current ETag."""
    if if_match is None:
        return
    wanted = [tag.strip().removeprefix("W/") for tag in if_match.split(",")]
    if current is not None and ("*" in wanted or current in wanted):
        return
    now = "the object does not exist" if current is None else f"its ETag is now {current}"
    raise ApiError(412, "precondition_failed",
                   f"If-Match {if_match} does not match: {now}; read it again and retry")


def soa_serial(zone: dns.zone.Zone) -> int:
    assert zone.origin is not None
    soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
    return int(soa[0].serial) if soa else 0


def set_serial(zone: dns.zone.Zone, serial: int) -> None:
    """Give the zone's SOA a new serial (in place)."""
    assert zone.origin is not None
    old = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
    if not old:
        return
    new = dns.rdataset.Rdataset(old.rdclass, old.rdtype)
    new.add(old[0].replace(serial=serial), old.ttl)
    zone.replace_rdataset(zone.origin, new)


def next_serial(serial: int) -> int:
    """RFC 1982 increment, never 0."""
    return (serial + 1) % SERIAL_MODULO or 1


def parse_origin(text: str) -> dns.name.Name:
    try:
        name = dns.name.from_text(text.strip() or ".")
    except dns.exception.DNSException as exc:
        raise ApiError(422, "invalid", f"{text!r} is not a DNS name",
                       [ProblemItem(path="path.zone", message=str(exc))]) from None
    return name


@dataclass(frozen=True, slots=True)
class ZoneFile:
    """Where one served zone lives."""

    origin: dns.name.Name
    path: Path

    @property
    def policy_path(self) -> Path:
        stem = self.path.name.removesuffix(ZONE_SUFFIX)
        return self.path.with_name(stem + POLICY_SUFFIX)


@dataclass(slots=True)
class Change:
    """New content for one file (None deletes it)."""

    path: Path
    text: str | None


# Entries (resources + DIs) up to which a policy's mapping is kept between API requests
# (~300 B an entry: 60 MB at most; at a million DIs it would be gigabytes).
MAPPING_KEPT = 200_000
_POLICY_HEADER = "# managed by the shadowdns API: edits through the API rewrite this file\n"


def _file_text(data: Mapping[str, Any]) -> str:
    """The policy file the API writes for data of the file's shape."""
    return _POLICY_HEADER + mapping_text(data)


@dataclass(frozen=True, slots=True)
class CheckedPolicy:
    """A policy the API validated, and the file text it was checked as (None when only
    the check of the request's data accepted it): that text is what gets written, so the
    file holds exactly what was checked."""

    policy: Policy
    text: str | None


class FilesConfig(Protocol):
    """The settings of `serve` that editing its files depends on (`ServeConfig` has them)."""

    @property
    def zones_dir(self) -> Path: ...
    @property
    def geoip(self) -> Path | None: ...
    @property
    def identity(self) -> Identity: ...
    @property
    def allow_commands(self) -> bool: ...


class Reloader(Protocol):
    """What `ConfigFiles` takes from the running service: what it serves, and a reload."""

    @property
    def config(self) -> FilesConfig: ...
    @property
    def loaded(self) -> Config: ...  # the configuration served now
    @property
    def degraded(self) -> dict[str, str]: ...  # why it serves but not as configured

    async def reload_async(self, before_serving: Callable[[], Awaitable[None]] | None = None
                           ) -> bool: ...  # see Service.reload_async


class ConfigFiles:
    """Reads and rewrites the zones directory on behalf of the API."""

    def __init__(self, service: Reloader) -> None:
        self.service = service
        self.lock = asyncio.Lock()
        # each zone's policy mapping (0.24 s to make at 10,000 DIs), with the digest of
        # the file bytes it is the mapping of
        self._mapped: dict[dns.name.Name, tuple[str, dict[str, Any]]] = {}

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Hold `lock` for one change, the collector paused until the request is done."""
        async with collector_paused(), self.lock:
            yield

    @property
    def zones_dir(self) -> Path:
        return Path(self.service.config.zones_dir)

    # -- reading ---------------------------------------------------------------------------

    def zone_files(self) -> list[ZoneFile]:
        zones = self.service.loaded.zones
        return [ZoneFile(origin, Path(zone.file)) for origin, zone in zones.items()]

    def zone_file(self, origin: dns.name.Name) -> ZoneFile:
        zone = self.service.loaded.zones.get(origin)
        if zone is None:
            raise ApiError(404, "not_found", f"zone {origin} is not served")
        return ZoneFile(origin, Path(zone.file))

    def zone_for_name(self, name: dns.name.Name) -> ZoneFile:
        """The served zone that holds `name` (the longest matching origin)."""
        best: dns.name.Name | None = None
        for origin in self.service.loaded.zones:
            if name.is_subdomain(origin) and (best is None or len(origin) > len(best)):
                best = origin
        if best is None:
            raise ApiError(404, "not_found", f"no served zone holds {name}")
        return self.zone_file(best)

    @staticmethod
    def read_text(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def zone_etag(self, zf: ZoneFile) -> str:
        zone = self.read_text(zf.path) or ""
        policy = self.read_text(zf.policy_path) or ""
        return etag_of((zone + "\0" + policy).encode())

    def read_zone(self, zf: ZoneFile) -> dns.zone.Zone:
        """The zone as its file says (without the DI static view), read by the loader `serve`
        uses, so a `$INCLUDE` in it reads only what a reload would."""
        try:
            loaded = load_zone_file(zf.path, zf.origin)
        except ZoneError as exc:
            raise ApiError(409, "conflict", f"{zf.path} cannot be read",
                           [ProblemItem(path=_relative(p, self.zones_dir), message=p.reason,
                                        line=p.line) for p in exc.problems]) from None
        return editable(loaded)

    def read_policy(self, zf: ZoneFile) -> Policy | None:
        if not zf.policy_path.exists():
            return None
        try:
            return load_policy(zf.policy_path, zf.origin)
        except PolicyError as exc:
            raise ApiError(409, "conflict", f"{zf.policy_path} is invalid on disk",
                           problems_from_config(exc, prefix="file")) from None

    def policy_mapping(self, zf: ZoneFile) -> dict[str, Any] | None:
        """The policy file as data (`policy_to_mapping`). Only the top level and the
        sections' own dicts (which keys a section has) are the caller's to change: what
        they hold is shared with later reads of the same file, so an entry, or anything
        in `regions`, is copied before it is changed."""
        policy = self.read_policy(zf)
        if policy is None:
            return None
        kept = self._mapped.get(zf.origin)
        if kept is not None and kept[0] == policy.digest:
            mapping = kept[1]
        else:
            mapping = policy_to_mapping(policy)
            self._keep_mapping(zf, policy.digest, mapping)
        return {key: dict(value) if isinstance(value, dict) else value
                for key, value in mapping.items()}

    def foresee_mapping(self, zf: ZoneFile, change: Change, mapping: dict[str, Any]) -> None:
        """`mapping` is what `policy_mapping` will give once the file holds `change`'s
        text (an edit of one entry: the mapping before it, with that entry as the edited
        policy gives it), so the read after an edit does not make it again (0.24 s at
        10,000 DIs). If the edit is refused, the file's bytes are not that text's and it
        is never used."""
        if change.text is not None:
            digest = hashlib.sha256(change.text.encode("utf-8")).hexdigest()
            self._keep_mapping(zf, digest, mapping)

    def _keep_mapping(self, zf: ZoneFile, digest: str | None, mapping: dict[str, Any]) -> None:
        size = len(mapping.get("resources") or ()) + len(mapping.get("dis") or ())
        if digest is not None and size <= MAPPING_KEPT:
            self._mapped[zf.origin] = (digest, mapping)
        else:
            self._mapped.pop(zf.origin, None)

    # -- validating ------------------------------------------------------------------------

    def validate_zone_text(self, origin: dns.name.Name, text: str,
                           path: str = "body.text") -> dns.zone.Zone:
        """Check master-file text exactly as `serve` would; 422 with every problem."""
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ApiError(422, "invalid", "the zone text is not valid Unicode",
                           [ProblemItem(path=path, message=str(exc))]) from None
        declared = _declared_origin(text)
        if declared is not None and declared != origin:
            raise ApiError(422, "invalid", "the text is for another zone", [ProblemItem(
                path=path, message=f"$ORIGIN {declared} does not match the zone {origin}")])
        tmp = temp_name(self.zones_dir / "api-check")
        try:
            tmp.write_bytes(data)
            try:
                loaded = load_zone_file(tmp, origin, includes=False)
            except ZoneError as exc:
                problems = [ProblemItem(path=path, message=p.reason, line=p.line)
                            for p in exc.problems]
                raise ApiError(422, "invalid", f"{len(problems)} problem(s) in the zone text",
                               problems) from None
            clashes = self._di_clashes(loaded)
            if clashes:
                self._refuse_di_clashes(loaded, clashes, record_lines(tmp, origin), path)
            return editable(loaded)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def check_rendered_zone(self, origin: dns.name.Name, zone: dns.zone.Zone, text: str,
                            path: str = "body") -> None:
        """`validate_zone_text` for text the API rendered from `zone`: the loader takes the
        zone's RRsets as the text's parse instead of parsing it (`adopt_rendered`), and
        the reload that follows finds it kept. Whatever the check finds, a parse of the
        text reports, with its lines."""
        loaded = adopt_rendered(origin, rendered_rrsets(zone), text.encode("utf-8"),
                                str(self.zones_dir))
        if loaded is None or self._di_clashes(loaded):
            self.validate_zone_text(origin, text, path=path)

    def _di_clashes(self, zone: Zone) -> list[tuple[dns.name.Name, Conflict]]:
        """Records of the zone at a DI's name (`zones.rules`)."""
        policy = self.service.loaded.policies.get(zone.origin)
        if policy is None:
            return []
        return [(name, c) for name in policy.dis if name in zone.nodes
                for c in node_conflicts(zone.origin, name,
                                        (t for t, _ in zone.nodes[name]), di=True)]

    def _refuse_di_clashes(self, zone: Zone, clashes: list[tuple[dns.name.Name, Conflict]],
                           lines: dict[tuple[dns.name.Name, int], int], path: str) -> None:
        """409 for records of the text at a DI's name, at their line of the text sent:
        found here, not by the reload, whose lines would be those of the file as the API
        rewrites it."""
        policy = self.service.loaded.policies[zone.origin]
        problems = [ProblemItem(path=path, message=c.reason, line=lines.get((n, c.rdtype)))
                    for n, c in clashes]
        raise ApiError(409, "conflict", f"{len(problems)} record(s) at DI names, which the "
                       f"DIs of {policy.source} answer: nothing was changed", problems)

    @staticmethod
    def validate_policy(origin: dns.name.Name, data: Mapping[str, Any],
                        strip: str | None = None, prefix: str = "body") -> CheckedPolicy:
        """Validate policy data; 422 naming each problem (see `problems_from_config`).
        The result's text is the file text it was checked as, or None (see below)."""
        # Checked as the file it would be written as first: the one-line reader takes
        # 0.5 s at 10,000 DIs where checking the data takes 2.4 s. The two accept the same
        # policies (`mapping_text` keeps every value's type); only the data's own check
        # names the request's fields, so a problem is looked for again there.
        text = _file_text(data)
        with contextlib.suppress(PolicyError, yaml.YAMLError):
            return CheckedPolicy(policy_from_text(text, origin, "<api>"), text)
        try:
            return CheckedPolicy(policy_from_mapping(dict(data), origin), None)
        except PolicyError as exc:
            problems = problems_from_config(exc, prefix=prefix, strip=strip)
            raise ApiError(422, "invalid", f"{len(problems)} problem(s) in the policy",
                           problems) from None

    def policy_change(self, zf: ZoneFile, checked: CheckedPolicy, strip: str | None = None,
                      prefix: str = "body") -> Change:
        """The write of a checked policy to the zone's policy file (the text it was checked
        as, else its own), if it runs no new program.

        A command check the file on disk already has for the same resource is kept; one the
        request adds or changes is refused with 403 (nothing written) unless the server runs
        with --allow-commands. `strip` and `prefix` name fields as `validate_policy` does.
        """
        policy = checked.policy
        if not self.service.config.allow_commands and command_checks(policy):
            added = new_commands(self.read_policy(zf), policy)
            if added:
                problems = [problem_item(Problem("<api>", None, f"resources.{rid}.check.type: "
                                                 f"{COMMANDS_REFUSED}"), prefix, strip)
                            for rid in added]
                raise ApiError(403, "commands_not_allowed",
                               f"{len(added)} command check(s) refused: {COMMANDS_REFUSED}",
                               problems)
        text = checked.text
        if text is None:
            return Change(zf.policy_path, self.policy_text(policy))
        adopt_checked(zf.policy_path, text, policy)
        return Change(zf.policy_path, text)

    # -- writing ---------------------------------------------------------------------------

    @staticmethod
    def zone_text(zone: dns.zone.Zone, bump: bool = True) -> str:
        """Master-file text of a dnspython zone, its SOA serial bumped."""
        if bump:
            set_serial(zone, next_serial(soa_serial(zone)))
        header = "; managed by the shadowdns API: edits through the API rewrite this file\n"
        return header + str(zone.to_text(relativize=True, want_origin=True))

    @staticmethod
    def policy_text(policy: Policy) -> str:
        return _file_text(policy_to_mapping(policy))

    async def apply(self, changes: Sequence[Change],
                    audit: Callable[[], Awaitable[None]] | None = None) -> None:
        """Write every change or none; the service serves the result before this returns.

        `audit` records the change once the server has loaded it and before it serves it;
        when it raises (the audit log cannot be written), nothing of the change is served,
        every file gets its previous bytes back, and the error goes to the client.
        """
        for change in changes:
            self._check_target(change.path)
        backups = await asyncio.to_thread(_replace_all, changes)  # fsyncs: off the loop
        degraded_before = self.service.degraded.get(RELOAD_FAILED)
        try:
            served = await self.service.reload_async(audit)
        except BaseException:
            await asyncio.to_thread(_restore, backups)
            raise
        if served:
            return
        problems = await asyncio.to_thread(self._load_problems)
        await asyncio.to_thread(_restore, backups)
        # The files are back to what is served: the refused edit counts as a failed reload
        # (metrics, status) but leaves the server degraded only if it was before.
        if degraded_before is None:
            self.service.degraded.pop(RELOAD_FAILED, None)
        else:
            self.service.degraded[RELOAD_FAILED] = degraded_before
        raise ApiError(409, "rejected",
                       "the server refused the new configuration; nothing was changed",
                       problems)

    def _check_target(self, path: Path) -> None:
        """Only zone, policy and allocator files directly in the zones directory are the
        API's to write."""
        name = path.name
        if path.parent != self.zones_dir or name.startswith(".") or not (
                name.endswith(ZONE_SUFFIX) or name.endswith(POLICY_SUFFIX)
                or name == SETTINGS_FILE):
            raise ApiError(403, "forbidden", f"the API does not write {name}: only zone, "
                           f"policy and {SETTINGS_FILE} files in the zones directory")

    def _load_problems(self) -> list[ProblemItem]:
        cfg = self.service.config
        try:
            load_config(Path(cfg.zones_dir), cfg.geoip, cfg.identity)
        except ConfigError as exc:
            return [ProblemItem(path=_relative(p, self.zones_dir), message=p.reason,
                                line=p.line) for p in exc.problems]
        except ShadowDNSError as exc:
            return [ProblemItem(path="configuration", message=str(exc))]
        return [ProblemItem(path="configuration", message="reload failed; see the server log")]


def rendered_rrsets(zone: dns.zone.Zone) -> list[dns.rrset.RRset]:
    """A dnspython zone's RRsets in the order `zone_text` writes them (names sorted), as
    the parse of that text reads them."""
    return [dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))
            for name in sorted(zone.nodes) for rdataset in zone.nodes[name]]


def editable(loaded: Zone) -> dns.zone.Zone:
    """A dnspython zone of the loaded records to edit: built from the loader's parse, not
    a second parse of the text (a second per 10,000 RRsets)."""
    zone = dns.zone.Zone(loaded.origin, relativize=False)
    for rrset in loaded.rrsets():
        zone.replace_rdataset(rrset.name, rrset)  # a copy: the loaded zone stays as served
    return zone


def _relative(problem: Problem, base: Path) -> str:
    try:
        return "file:" + str(Path(problem.file).relative_to(base))
    except ValueError:
        return "file:" + problem.file


def _declared_origin(text: str) -> dns.name.Name | None:
    """The first $ORIGIN of master-file text, if it declares one (as `origin_for` reads it)."""
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if parts[0].upper() == "$ORIGIN" and len(parts) > 1:
            try:
                return dns.name.from_text(parts[1])
            except dns.exception.DNSException:
                return None  # the loader reports it
        if not line.startswith("$"):
            return None
    return None


def _replace_all(changes: Sequence[Change]) -> list[tuple[Path, bytes | None]]:
    """Stage every new content, then replace the targets; what they held before. On an
    error every target is put back and the API answers 409."""
    staged: list[tuple[Change, Path | None]] = []
    backups: list[tuple[Path, bytes | None]] = []
    try:
        for change in changes:
            tmp = None
            if change.text is not None:
                tmp = temp_name(change.path)
                _write_synced(tmp, change.text.encode("utf-8"))
            staged.append((change, tmp))
        for change, _ in staged:
            backups.append((change.path, _read_bytes(change.path)))
        for change, tmp in staged:
            if tmp is not None:
                os.replace(tmp, change.path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    change.path.unlink()
    except OSError as exc:
        _restore(backups)
        raise ApiError(409, "write_failed", f"cannot write the zones directory: {exc}") \
            from None
    finally:
        for _, tmp in staged:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
    return backups


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _restore(backups: Sequence[tuple[Path, bytes | None]]) -> None:
    for path, data in backups:
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            tmp = temp_name(path, "restore")
            _write_synced(tmp, data)
            os.replace(tmp, path)


_SAFE_STEM = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def new_zone_path(zones_dir: Path, origin: dns.name.Name) -> Path:
    """`<origin>.zone` in the zones directory; 422 for names that make no safe file name."""
    stem = origin.to_text(omit_final_dot=True) or "root"
    if not _SAFE_STEM.fullmatch(stem):
        raise ApiError(422, "invalid", f"{origin} cannot be a file name in the zones directory",
                       [ProblemItem(path="body.origin",
                                    message="use letters, digits, '-', '_' and dots only")])
    return zones_dir / f"{stem}{ZONE_SUFFIX}"


def default_zone_text(origin: dns.name.Name, nameservers: Sequence[str], ttl: int) -> str:
    """A minimal zone: SOA and NS records (the first name server is the SOA's MNAME)."""
    ns = [dns.name.from_text(n, origin) for n in nameservers] or \
        [dns.name.from_text("ns1", origin)]
    mname = ns[0].to_text()
    rname = dns.name.from_text("hostmaster", origin).to_text()
    lines = [f"$ORIGIN {origin}", f"$TTL {ttl}",
             f"@ IN SOA {mname} {rname} 1 3600 600 1209600 60"]
    lines += [f"@ IN NS {n}" for n in ns]
    return "\n".join(lines) + "\n"
