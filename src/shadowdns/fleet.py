"""What a node does to stay in step with its fleet through the shared store.

Nodes of a fleet keep serving from their own compiled tables; the store (PostgreSQL) is
how they agree. This module holds the node's side of it:

* zone and policy files are mirrored through the store: after a node loads new files it
  publishes their text; the others receive a notification, write the text into their own
  zones directory and reload — so a change through any node's API reaches every node;
* allocation and health changes arrive by notification (LISTEN/NOTIFY) and, in case one
  is missed, by comparing the store's change generation every few seconds;
* demand counters are flushed in batches with an id, buffered (bounded) while the store is
  away and retried with the same id, so a retry never counts twice;
* one node holds the control-plane leader lock (a PostgreSQL advisory lock that dies with
  its session); the others stand by.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from shadowdns.store import DemandRow, Store
from shadowdns.zones.loader import ZONE_SUFFIX, origin_for

log = logging.getLogger(__name__)

POLICY_SUFFIX = ".policy.yaml"
CONFIG_CHANNEL = "shadowdns_config"
LEADER_LOCK = "control"


@dataclass(frozen=True, slots=True)
class LocalFile:
    origin: str
    kind: str  # "zone" | "policy"
    path: Path
    text: str


def local_files(zones_dir: Path) -> list[LocalFile]:
    """The zone and policy files of a zones directory, keyed by zone origin."""
    out: list[LocalFile] = []
    for path in sorted(zones_dir.glob(f"*{ZONE_SUFFIX}")):
        origin = origin_for(path).to_text()
        out.append(LocalFile(origin, "zone", path, path.read_text(encoding="utf-8")))
        stem = path.name[: -len(ZONE_SUFFIX)]
        policy = path.with_name(stem + POLICY_SUFFIX)
        if policy.exists():
            out.append(LocalFile(origin, "policy", policy, policy.read_text(encoding="utf-8")))
    return out


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
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
    zone_path = known.get((origin, "zone"))
    stem = (zone_path.name[: -len(ZONE_SUFFIX)] if zone_path is not None
            else origin.rstrip(".") or "root")
    return zones_dir / (stem + (ZONE_SUFFIX if kind == "zone" else POLICY_SUFFIX))


def sync_from_store(store: Store, zones_dir: Path, at_start: bool) -> bool:
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
        write_atomically(path_for(zones_dir, key[0], key[1], known), copy.text)
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
