"""What a node does to stay in step with its fleet through the shared store.

Nodes of a fleet keep serving from their own compiled tables; the store (PostgreSQL) is
how they agree. This module holds the node's side of it:

* zone and policy files, and `allocator.yaml` (kind "allocator", origin "."), are mirrored
  through the store: after a node loads new files it publishes their text; the others
  receive a notification, write the text into their own zones directory and reload — so a
  change through any node's API reaches every node;
* with `--dnssec-keys`, the key files (private keys and ZSK schedules) are mirrored the
  same way (`sync_keys`), so every node signs with one key set; unlike a zone file, a key
  is never overwritten by a different one unless a key roll explains it; the key policy
  (`key-policy.yaml`, whether zones split into KSK and ZSK) travels like a zone file;
* allocation and health changes arrive by notification (LISTEN/NOTIFY) and, in case one
  is missed, by comparing the store's change generation every few seconds;
* demand counters are flushed in batches with an id, buffered (bounded) while the store is
  away and retried with the same id, so a retry never counts twice;
* one node holds the control-plane leader lock (a PostgreSQL advisory lock that dies with
  its session); the others stand by.

A file from the store is data from elsewhere, like a request to the API: a node started
without `--allow-commands` does not take a policy file that adds a command health check, nor
an `allocator.yaml` that adds or changes a hook command (see `health.privilege`); it logs
why, keeps its own file, and publishes that with its next change (so the fleet settles on
the file without the new command). Nor does a node write a
file whose name would leave its zones directory.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import dns.name
import yaml

from shadowdns.allocator.settings import SETTINGS_FILE, AllocatorSettings
from shadowdns.errors import ConfigError, PolicyError, Problem
from shadowdns.health.privilege import COMMANDS_REFUSED, new_commands, new_hook_commands
from shadowdns.store import DemandRow, Store
from shadowdns.zones.keys import (
    KEY_SUFFIX,
    NEXT_SUFFIX,
    POLICY_FILE,
    KeyPolicy,
    key_file_zone,
    key_path,
    new_private_key,
    parse_schedule,
    read_key_files,
    write_key_file,
    zone_origin_text,
)
from shadowdns.zones.loader import ZONE_SUFFIX, origin_for
from shadowdns.zones.policy import Policy
from shadowdns.zones.policy_file import POLICY_SUFFIX, load_policy
from shadowdns.zones.staging import TMP_SUFFIX

log = logging.getLogger(__name__)

CONFIG_CHANNEL = "shadowdns_config"
LEADER_LOCK = "control"
SETTINGS_ORIGIN = "."  # allocator.yaml belongs to no zone; the store keys it by this origin


@dataclass(frozen=True, slots=True)
class LocalFile:
    origin: str
    kind: str  # "zone" | "policy" | "allocator"
    path: Path
    text: str


def local_files(zones_dir: Path) -> list[LocalFile]:
    """The zone and policy files of a zones directory, keyed by zone origin, and its
    allocator.yaml."""
    out: list[LocalFile] = []
    settings = zones_dir / SETTINGS_FILE
    if settings.exists():
        out.append(LocalFile(SETTINGS_ORIGIN, "allocator", settings,
                             settings.read_text(encoding="utf-8")))
    for path in sorted(zones_dir.glob(f"*{ZONE_SUFFIX}")):
        origin = origin_for(path).to_text()
        out.append(LocalFile(origin, "zone", path, path.read_text(encoding="utf-8")))
        stem = path.name[: -len(ZONE_SUFFIX)]
        policy = path.with_name(stem + POLICY_SUFFIX)
        if policy.exists():
            out.append(LocalFile(origin, "policy", policy, policy.read_text(encoding="utf-8")))
    return out


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def path_for(zones_dir: Path, origin: str, kind: str, known: dict[tuple[str, str], Path]
             ) -> Path:
    found = known.get((origin, kind))
    if found is not None:
        return found
    if kind == "allocator":
        return zones_dir / SETTINGS_FILE
    zone_path = known.get((origin, "zone"))
    stem = (zone_path.name[: -len(ZONE_SUFFIX)] if zone_path is not None
            else origin.rstrip(".") or "root")
    return zones_dir / (stem + (ZONE_SUFFIX if kind == "zone" else POLICY_SUFFIX))


def _policy_of(path: Path, origin: str) -> Policy | None:
    try:
        return load_policy(path, dns.name.from_text(origin))
    except (PolicyError, ValueError):
        return None


def refusal(zones_dir: Path, path: Path, origin: str, kind: str, text: str,
            allow_commands: bool) -> str | None:
    """Why a node must not write this file from the store into `path` (None: it may)."""
    if path.parent != zones_dir:
        return f"{path.name} is not a file of the zones directory"
    if kind == "allocator":
        return None if allow_commands else _hook_refusal(path, text)
    # Only text holding "command" or an escape (YAML "\x63ommand") can name a command check.
    if kind != "policy" or allow_commands or ("command" not in text and "\\" not in text):
        return None
    fd, tmp = tempfile.mkstemp(dir=zones_dir, prefix=".fleet-check.",
                               suffix=POLICY_SUFFIX + TMP_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        theirs = _policy_of(Path(tmp), origin)
    finally:
        Path(tmp).unlink(missing_ok=True)
    if theirs is None:  # invalid: the reload refuses it, so it runs nothing
        return None
    mine = _policy_of(path, origin) if path.exists() else None
    added = new_commands(mine, theirs)
    if not added:
        return None
    fields = ", ".join(f"resources.{rid}.check.type" for rid in added)
    return f"{fields}: {COMMANDS_REFUSED} (this node runs without it)"


def _settings_of(text: str) -> AllocatorSettings | None:
    try:
        return AllocatorSettings.from_mapping(yaml.safe_load(text))
    except (ConfigError, yaml.YAMLError):
        return None


def _hook_refusal(path: Path, text: str) -> str | None:
    theirs = _settings_of(text)
    if theirs is None:  # invalid: the reload refuses it, so it runs nothing
        return None
    mine = _settings_of(path.read_text(encoding="utf-8")) if path.exists() else None
    added = new_hook_commands(mine, theirs)
    if not added:
        return None
    fields = ", ".join(f"hooks.{name}.command" for name in added)
    return f"{fields}: {COMMANDS_REFUSED} (this node runs without it)"


@dataclass(frozen=True, slots=True)
class Synced:
    """What `sync_from_store` did: whether a local file changed, and the key conflict that
    made this node keep its own keys (None: its keys are the fleet's). The caller reports
    a conflict once and keeps the node degraded while it lasts; every sync finds it again."""

    changed: bool
    key_conflict: str | None = None


def sync_from_store(store: Store, zones_dir: Path, at_start: bool,
                    allow_commands: bool = False, keys_dir: Path | None = None) -> Synced:
    """Make the zones directory match the store; publish local files the store lacks.

    At start, a local file modified after the store's copy was written is published
    instead of overwritten (last writer wins), so an operator's edit made while the node
    was down is not lost. With `keys_dir`, the key files follow (`sync_keys`); a key
    conflict raises at start (the node must not serve other keys than its fleet) and is
    returned later (the node keeps its keys). Runs on the store thread.
    """
    local = {(f.origin, f.kind): f for f in local_files(zones_dir)}
    known = {key: f.path for key, f in local.items()}
    remote = {(c.origin, c.kind): c for c in store.config_files()}
    changed = False
    for key, mine in local.items():
        theirs = remote.get(key)
        if theirs is None or (at_start and theirs.text != mine.text
                              and mine.path.stat().st_mtime > theirs.updated_at):
            store.put_config_file(mine.origin, mine.kind, mine.text)
            remote.pop(key, None)
    for key, copy in remote.items():
        mine_file = local.get(key)
        if mine_file is not None and mine_file.text == copy.text:
            continue
        path = path_for(zones_dir, key[0], key[1], known)
        why = refusal(zones_dir, path, key[0], key[1], copy.text, allow_commands)
        if why is not None:
            log.error("not taking the %s file of %s from the store: %s", key[1], key[0], why)
            continue
        write_atomically(path, copy.text)
        changed = True
    if keys_dir is not None:
        origins = [origin_for(path).to_text() for path in zones_dir.glob(f"*{ZONE_SUFFIX}")]
        try:
            changed = sync_keys(store, keys_dir, origins) or changed
        except ConfigError as exc:
            if at_start:
                raise
            taken = isinstance(exc, KeyConflict) and exc.changed
            return Synced(changed or taken, str(exc))
    return Synced(changed)


def publish(store: Store, zones_dir: Path, keys_dir: Path | None = None) -> int:
    """Publish every local file whose text differs from the store's; returns how many.

    Key files go first (`sync_keys`, adding only: what this node should take from the
    store it takes in `sync_from_store`, which reloads), so a node that takes a new zone
    from the store finds its key there already and does not make another."""
    if keys_dir is not None:
        sync_keys(store, keys_dir, take=False)
    return sum(store.put_config_file(f.origin, f.kind, f.text) for f in local_files(zones_dir))


_ZSK_FILE = re.compile(r"^(?P<zone>.+)\.zsk\.(?P<n>\d+)\.pem$")
_SCHEDULE_SUFFIX = ".zsk.json"


def _origin_of(name: str) -> str:
    zone = key_file_zone(name)
    assert zone is not None  # only key files are read or listed
    return zone_origin_text(zone)


def _retired_holds(files: Mapping[str, bytes], name: str, data: bytes) -> bool:
    """Whether `files` keep `data` as a retired key of the zone of `name`: the CSK/KSK
    that `dnssec roll --finish` replaced by its successor."""
    prefix = f"{key_file_zone(name)}.csk.retired-"
    return any(other.startswith(prefix) and held == data for other, held in files.items())


def _stale_successor(name: str, data: bytes, files: Mapping[str, bytes]) -> bool:
    """Whether `name` is a roll's successor that already is the zone's key in `files`
    (what a finished roll leaves until it is removed)."""
    return (name.endswith(NEXT_SUFFIX)
            and files.get(name[: -len(NEXT_SUFFIX)] + KEY_SUFFIX) == data)


def _signs_nothing_yet(name: str, local: Mapping[str, bytes], remote: Mapping[str, bytes],
                       now: float) -> bool:
    """Whether `name` is a ZSK, or a ZSK schedule, that signs nothing yet under either
    side's schedule: nodes reloading at the same moment each made one (a ZSK is made when
    it enters the DNSKEY set, a propagation interval before it signs), and taking the
    store's copy then changes no signature anyone holds."""
    zsk = _ZSK_FILE.match(name)
    zone = key_file_zone(name)
    schedule_name = f"{zone}{_SCHEDULE_SUFFIX}"
    if zsk is None and name != schedule_name:
        return False
    first = int(zsk.group("n")) if zsk is not None else 1
    try:
        schedules = [parse_schedule(side[schedule_name]) for side in (local, remote)
                     if schedule_name in side]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(schedules) and all(now < s.active(first) for s in schedules)


def _conflict(keys_dir: Path, name: str) -> Problem:
    return Problem(str(keys_dir / name), None,
                   f"zone {_origin_of(name)}: this key file differs from the fleet store's "
                   f"{name}; not replaced (every node must sign with the same keys: keep "
                   "the one the zone's DS names and remove the other)")


POLICY_ORIGIN = "."  # the key policy is the fleet's, not one zone's


def _shared_keys(store: Store) -> dict[str, bytes]:
    """The store's key files, {name: contents}, without the key policy."""
    return {k.name: k.data for k in store.key_files() if k.name != POLICY_FILE}


def sync_key_policy(store: Store, keys_dir: Path, take: bool = True) -> bool:
    """Make this node's `key-policy.yaml` the fleet's; True if the local file changed.

    Nodes that disagree on the policy publish different DNSKEY sets (a CSK on one, a KSK
    and ZSKs on another), and a validator that mixes their answers finds signatures by
    keys it was not given. So the policy travels like a zone file: a local file the store
    lacks, or one modified after the store's copy was written, is published (last writer
    wins); otherwise the store's copy is written here. A policy that does not parse is
    neither published nor taken (ConfigError naming it). Times are the wall clock's, as
    the file's modification time is (not a schedule's `now`)."""
    path = keys_dir / POLICY_FILE
    theirs = next((k for k in store.key_files() if k.name == POLICY_FILE), None)
    try:
        mine: bytes | None = path.read_bytes()
        modified = path.stat().st_mtime
    except FileNotFoundError:
        mine, modified = None, 0.0
    if mine is not None and (theirs is None or (mine != theirs.data
                                                and modified > theirs.created_at)):
        KeyPolicy.parse(mine, str(path))
        if store.swap_key_file(POLICY_ORIGIN, POLICY_FILE,
                               theirs.data if theirs else None, mine, time.time()):
            return False
        theirs = next((k for k in store.key_files() if k.name == POLICY_FILE), None)
    if not take or theirs is None or theirs.data == mine:
        return False
    KeyPolicy.parse(theirs.data, f"{POLICY_FILE} in the fleet store")
    write_key_file(path, theirs.data, replace=True)
    return True


def sync_keys(store: Store, keys_dir: Path, origins: Iterable[str] = (),
              now: float | None = None, take: bool = True) -> bool:
    """Make the key directory and the store's key files one set; True if a local file
    changed. Runs on the store thread, in a node's main process. With `take` False only
    the store is written (after a load: the caller would not reload for what it took),
    and conflicts are left to the next full sync to report.

    * A zone of `origins` with an entry key neither here nor in the store gets one made
      through the store (the first node to add it wins, the others take it), so nodes
      starting together never make two.
    * A file only the store has is written here (mode 0600, never half-written); one only
      this directory has (a key the load made, or `dnssec roll` on this node) is added to
      the store, unless another node added that name first.
    * A file both have with different contents is a conflict (ConfigError naming the zone
      and the file) and neither is replaced, except where a roll explains the difference:
      a CSK/KSK that one side keeps as `<zone>.csk.retired-<tag>.pem` was replaced by its
      successor (`dnssec roll --finish`), so the successor wins on both sides; and a ZSK or
      ZSK schedule that signs nothing yet was made by two nodes at once: the store's wins.
    * A successor left over after its roll finished is removed here and in the store.

    The key policy goes first (`sync_key_policy`): it decides which keys a zone has.
    """
    at = time.time() if now is None else now
    changed = sync_key_policy(store, keys_dir, take)
    local = read_key_files(keys_dir)
    remote = _shared_keys(store)
    tried = False
    for origin in origins:
        entry = key_path(keys_dir, dns.name.from_text(origin)).name
        if entry not in local and entry not in remote:
            store.swap_key_file(origin, entry, None, new_private_key(), at)
            tried = True
    if tried:  # read back won or lost: a node that lost must take the winner's key
        remote = _shared_keys(store)
    problems: list[Problem] = []

    def take_file(name: str, data: bytes, replace: bool) -> None:
        nonlocal changed
        if not take:
            return
        write_key_file(keys_dir / name, data, replace=replace)
        changed = True
        local[name] = (keys_dir / name).read_bytes()  # a new file loses to one made meanwhile
        if local[name] != data:
            problems.append(_conflict(keys_dir, name))

    def add(name: str, data: bytes, old: bytes | None = None) -> bool:
        if store.swap_key_file(_origin_of(name), name, old, data, at):
            remote[name] = data
            return True
        return False

    # entry keys before their successors: a finished roll decides what a successor is
    for name in sorted(local.keys() & remote.keys(), key=lambda n: (n.endswith(NEXT_SUFFIX), n)):
        mine, theirs = local[name], remote[name]
        if mine == theirs:
            continue
        is_entry = name.endswith(KEY_SUFFIX)
        if is_entry and _retired_holds(remote, name, mine):  # the fleet finished a roll
            take_file(name, theirs, replace=True)
        elif is_entry and _retired_holds(local, name, theirs):  # this node did: tell the fleet
            prefix = f"{key_file_zone(name)}.csk.retired-"
            for retired in sorted(n for n in local if n.startswith(prefix) and n not in remote):
                add(retired, local[retired])  # first, so others see why the key changed
            if not add(name, mine, old=theirs):
                problems.append(_conflict(keys_dir, name))
        elif _signs_nothing_yet(name, local, remote, at):
            take_file(name, theirs, replace=True)
        else:
            problems.append(_conflict(keys_dir, name))
    for name in sorted(remote.keys() - local.keys()):
        data = remote[name]
        if not (_stale_successor(name, data, remote) or _stale_successor(name, data, local)):
            take_file(name, data, replace=False)
    for name in sorted(local.keys() - remote.keys()):
        data = local[name]
        if _stale_successor(name, data, local) or _stale_successor(name, data, remote):
            continue
        if add(name, data):
            continue
        winner = _shared_keys(store).get(name)
        if winner is None or winner == data:
            continue
        remote[name] = winner  # another node added this name first
        if _signs_nothing_yet(name, local, remote, at):
            take_file(name, winner, replace=True)
        else:
            problems.append(_conflict(keys_dir, name))
    for name in sorted(local.keys() | remote.keys()):
        if take and name in local and _stale_successor(name, local[name], local):
            (keys_dir / name).unlink(missing_ok=True)
            del local[name]
            changed = True
        if name in remote and _stale_successor(name, remote[name], remote):
            store.swap_key_file(_origin_of(name), name, remote.pop(name), None, at)
    if problems and take:
        raise KeyConflict(problems, changed)
    return changed


class KeyConflict(ConfigError):
    """Key files that differ from the store's (`sync_keys`); `changed`: other key files
    were taken before it was found, which the node must reload to sign with."""

    def __init__(self, problems: Iterable[Problem], changed: bool) -> None:
        super().__init__(problems)
        self.changed = changed


class DemandOutbox:
    """Demand batches waiting for the store, oldest first, bounded; each keeps its id."""

    def __init__(self, max_rows: int = 200_000) -> None:
        self.max_rows = max_rows
        self.batches: deque[tuple[str, list[DemandRow]]] = deque()
        self.rows = 0
        self.dropped = 0
        self.failures = 0  # flushes that stopped at a batch the store refused

    def add(self, rows: list[DemandRow], node: str) -> None:
        if not rows:
            return
        self.batches.append((f"{node}:{uuid.uuid4().hex}", rows))
        self.rows += len(rows)
        while self.rows > self.max_rows and len(self.batches) > 1:
            _, old = self.batches.popleft()
            self.rows -= len(old)
            self.dropped += len(old)
            log.warning("demand buffer full: dropped %d row(s) of the oldest batch", len(old))

    def flush(self, store: Store) -> int:
        """Write batches in order until one fails (runs on the store thread)."""
        written = 0
        while self.batches:
            batch_id, rows = self.batches[0]
            try:
                store.add_demand(rows, batch_id=batch_id)
            except Exception as exc:  # the store is away: keep the batch, retry later
                self.failures += 1
                log.warning("demand flush deferred (%d batch(es) buffered): %s",
                            len(self.batches), exc)
                break
            self.batches.popleft()
            self.rows -= len(rows)
            written += len(rows)
        return written
