"""What a node does to stay in step with its fleet through the shared store.

Nodes of a fleet keep serving from their own compiled tables; the store (PostgreSQL) is
how they agree. This module holds the node's side of it:

* zone and policy files, and `allocator.yaml` (kind "allocator", origin "."), are mirrored
  through the store: after a node loads new files it publishes their text; the others
  receive a notification, write the text into their own zones directory and reload — so a
  change through any node's API reaches every node;
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
import tempfile
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import dns.name
import yaml

from shadowdns.allocator.settings import SETTINGS_FILE, AllocatorSettings
from shadowdns.errors import ConfigError, PolicyError
from shadowdns.health.privilege import COMMANDS_REFUSED, new_commands, new_hook_commands
from shadowdns.store import DemandRow, Store
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


def sync_from_store(store: Store, zones_dir: Path, at_start: bool,
                    allow_commands: bool = False) -> bool:
    """Make the zones directory match the store; publish local files the store lacks.

    At start, a local file modified after the store's copy was written is published
    instead of overwritten (last writer wins), so an operator's edit made while the node
    was down is not lost. Returns True if any local file changed. Runs on the store thread.
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
    return changed


def publish(store: Store, zones_dir: Path) -> int:
    """Publish every local file whose text differs from the store's; returns how many."""
    return sum(store.put_config_file(f.origin, f.kind, f.text) for f in local_files(zones_dir))


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
