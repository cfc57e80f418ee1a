"""Every node of a fleet signs with the same keys: `fleet.sync_keys` makes each node's key
directory and the store's key files one set, and never replaces a key with a different
one unless a roll explains it.

Two nodes here are two key directories on one real store (SQLite; the PostgreSQL store
runs the same SQL, see test_store_key_files.py); keys are made by the real loader and
rolled by the real `shadowdns dnssec roll`.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import dns.name
import pytest

from shadowdns import fleet
from shadowdns.cli import main as cli
from shadowdns.errors import ConfigError
from shadowdns.resolver.commands import demo_zones_dir
from shadowdns.store import Store, open_store
from shadowdns.zones.keys import (
    KeyPolicy,
    load_key,
    new_private_key,
    parse_schedule,
    read_key_files,
)

ORIGIN = "example.com."
NAME = dns.name.from_text(ORIGIN)
CSK = "example.com.csk.pem"
NEXT = "example.com.csk.next.pem"
POLICY = "key-policy.yaml"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(str(tmp_path / "state.db"))
    try:
        yield opened
    finally:
        opened.close()


def stored(store: Store) -> dict[str, bytes]:
    """The store's key files (what `read_key_files` reads from a directory)."""
    return {k.name: k.data for k in store.key_files() if k.name != POLICY}


def stored_policy(store: Store) -> bytes | None:
    return next((k.data for k in store.key_files() if k.name == POLICY), None)


def dnskeys(keys_dir: Path, now: float | None = None) -> list[str]:
    key = load_key(keys_dir, NAME, create=False, now=now)
    assert key is not None
    return sorted(k.to_text() for k in key.published or (key.dnskey,))


def test_nodes_with_empty_directories_get_one_key_made_through_the_store(
    store: Store, tmp_path: Path
) -> None:
    """The first node to sync makes the zone's key in the store and writes it (0600, in a
    0700 directory); the second takes that key instead of making its own."""
    a, b = tmp_path / "a" / "keys", tmp_path / "b" / "keys"
    assert fleet.sync_keys(store, a, [ORIGIN]) is True
    assert fleet.sync_keys(store, b, [ORIGIN]) is True
    assert read_key_files(a) == read_key_files(b) == stored(store)
    assert list(stored(store)) == [CSK]
    for directory in (a, b):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE((directory / CSK).stat().st_mode) == 0o600
    assert dnskeys(a) == dnskeys(b)
    assert fleet.sync_keys(store, b, [ORIGIN]) is False  # in step: nothing to do


class _Interleaved:
    """The real store, with another node's insert landing between this node's read of the
    key files and its own insert (two nodes starting together)."""

    def __init__(self, store: Store, theirs: bytes) -> None:
        self.store, self.theirs = store, theirs

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def swap_key_file(self, origin: str, name: str, old: bytes | None, new: bytes | None,
                      now: float | None = None) -> bool:
        if self.theirs:
            self.store.swap_key_file(origin, name, None, self.theirs, now)
            self.theirs = b""
        return self.store.swap_key_file(origin, name, old, new, now)


def test_a_node_that_loses_the_race_to_make_a_key_takes_the_winners(
    store: Store, tmp_path: Path
) -> None:
    """Two nodes with empty key directories start together: both read no key, the other
    node's insert lands first, this node's insert loses, and it writes the winner's key
    (not none, which would make the load make a third and conflict at start)."""
    theirs = new_private_key()
    keys = tmp_path / "keys"
    racing = _Interleaved(store, theirs)
    assert fleet.sync_keys(racing, keys, [ORIGIN]) is True  # type: ignore[arg-type]
    assert read_key_files(keys) == {CSK: theirs} == stored(store)


def test_a_key_only_this_node_has_is_published_and_one_only_the_store_has_is_taken(
    store: Store, tmp_path: Path
) -> None:
    """A key made by this node's load goes to the store; another zone's key from the
    store is written here; a file being written stays out of the store (the policy goes
    in, as the fleet's: see the tests below)."""
    a = tmp_path / "a"
    load_key(a, NAME)  # the loader makes the key, as serve does
    (a / "key-policy.yaml").write_text("split: false\n")
    (a / ".example.com.csk.pem.77.tmp").write_bytes(b"half")
    other = new_private_key()
    store.swap_key_file("example.net.", "example.net.csk.pem", None, other)
    assert fleet.sync_keys(store, a) is True
    assert sorted(stored(store)) == [CSK, "example.net.csk.pem"]
    assert stored_policy(store) == b"split: false\n"
    assert stored(store)[CSK] == (a / CSK).read_bytes()
    assert (a / "example.net.csk.pem").read_bytes() == other


def test_keys_that_differ_are_refused_and_neither_is_replaced(
    store: Store, tmp_path: Path
) -> None:
    """A node whose key differs from the store's gets a ConfigError naming the zone and
    the file of every conflict; its file and the store's row stay as they were."""
    theirs = {CSK: new_private_key(), "example.net.csk.pem": new_private_key()}
    for name, data in theirs.items():
        store.swap_key_file(ORIGIN if name == CSK else "example.net.", name, None, data)
    mine = tmp_path / "mine"
    load_key(mine, NAME)
    load_key(mine, dns.name.from_text("example.net."))
    before = read_key_files(mine)
    with pytest.raises(ConfigError) as caught:
        fleet.sync_keys(store, mine, [ORIGIN])
    text = str(caught.value)
    assert f"zone {ORIGIN}" in text and str(mine / CSK) in text
    assert "zone example.net." in text and str(mine / "example.net.csk.pem") in text
    assert read_key_files(mine) == before
    assert stored(store) == theirs


def test_a_hand_roll_on_one_node_reaches_the_other(store: Store, tmp_path: Path) -> None:
    """`dnssec roll` on node A: A's sync publishes the successor and B's takes it, so both
    publish both keys; `roll --finish` on A: the successor replaces the old key on B too
    (the old one kept as retired), the successor file goes everywhere, and both publish
    the new key alone."""
    a, b = tmp_path / "a", tmp_path / "b"
    fleet.sync_keys(store, a, [ORIGIN])
    fleet.sync_keys(store, b, [ORIGIN])
    old = dnskeys(a)
    assert cli(["dnssec", "roll", "--keys", str(a), ORIGIN]) == 0
    assert fleet.sync_keys(store, a) is False  # publishes; nothing of its own changed
    assert fleet.sync_keys(store, b) is True
    rolling = dnskeys(a)
    assert len(rolling) == 2 and dnskeys(b) == rolling
    assert cli(["dnssec", "roll", "--finish", "--keys", str(a), ORIGIN]) == 0
    fleet.sync_keys(store, a)
    assert NEXT not in stored(store)
    assert fleet.sync_keys(store, b) is True
    assert NEXT not in read_key_files(b)
    assert read_key_files(a) == read_key_files(b) == stored(store)
    assert dnskeys(b) == dnskeys(a) == [k for k in rolling if k not in old]
    assert fleet.sync_keys(store, a) is False
    assert fleet.sync_keys(store, b) is False


def test_a_finished_roll_reaches_a_node_that_syncs_halfway(store: Store, tmp_path: Path) -> None:
    """B syncing between A's writes (the retired key stored, the key not yet swapped)
    takes only the retired file, and the next full sync completes the roll."""
    a, b = tmp_path / "a", tmp_path / "b"
    fleet.sync_keys(store, a, [ORIGIN])
    cli(["dnssec", "roll", "--keys", str(a), ORIGIN])
    fleet.sync_keys(store, a)
    fleet.sync_keys(store, b)
    cli(["dnssec", "roll", "--finish", "--keys", str(a), ORIGIN])
    retired = next(n for n in read_key_files(a) if ".retired-" in n)
    store.swap_key_file(ORIGIN, retired, None, read_key_files(a)[retired])
    assert fleet.sync_keys(store, b) is True
    assert len(dnskeys(b)) == 2  # still rolling here
    fleet.sync_keys(store, a)
    # B's publish after its reload only adds: the roll is taken by its next sync (which
    # reloads), and B's old successor does not go back into the store
    halfway = read_key_files(b)
    assert fleet.sync_keys(store, b, take=False) is False
    assert read_key_files(b) == halfway
    assert NEXT not in stored(store)
    assert fleet.sync_keys(store, b) is True
    assert read_key_files(a) == read_key_files(b) == stored(store)
    assert len(dnskeys(b)) == 1


def _split(*dirs: Path) -> None:
    for directory in dirs:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (directory / "key-policy.yaml").write_text("split: true\nzsk_lifetime: 1d\n")


def test_a_zsk_two_nodes_made_at_once_is_the_stores_until_it_signs(
    store: Store, tmp_path: Path
) -> None:
    """Under a KSK/ZSK split both nodes' loads make the schedule and ZSK 1 at once: the
    later node takes the store's (they sign nothing yet). A ZSK that differs once it signs
    is a conflict like any key."""
    a, b = tmp_path / "a", tmp_path / "b"
    _split(a, b)
    fleet.sync_keys(store, a, [ORIGIN])
    fleet.sync_keys(store, b, [ORIGIN])
    t0 = 2_000_000_000.0
    load_key(a, NAME, now=t0)
    load_key(b, NAME, now=t0 + 0.5)
    assert read_key_files(a) != read_key_files(b)
    assert parse_schedule(read_key_files(a)["example.com.zsk.json"]).start == t0
    fleet.sync_keys(store, a, now=t0 + 1)
    assert fleet.sync_keys(store, b, now=t0 + 1) is True
    assert read_key_files(a) == read_key_files(b) == stored(store)
    assert dnskeys(a, t0 + 1) == dnskeys(b, t0 + 1)
    assert len(dnskeys(a, t0 + 1)) == 2  # the KSK and ZSK 1
    signing = t0 + 2 * 86400  # ZSK 2 signs: each node made its own ZSK 2 and 3 meanwhile
    load_key(a, NAME, now=signing)
    load_key(b, NAME, now=signing)
    fleet.sync_keys(store, a, now=signing)
    with pytest.raises(ConfigError, match=r"example\.com\.zsk\.2\.pem"):
        fleet.sync_keys(store, b, now=signing)


def test_sync_from_store_refuses_a_key_conflict_at_start_and_returns_it_later(
    store: Store, tmp_path: Path
) -> None:
    """At start a key conflict stops the node (it must not serve other keys than its
    fleet); later the sync returns it (the service reports it once and stays degraded),
    keeps the node's key and still takes zone files."""
    zones = tmp_path / "zones"
    shutil.copytree(demo_zones_dir(), zones)
    origin = "demo.shadowdns.test."
    store.swap_key_file(origin, "demo.shadowdns.test.csk.pem", None, new_private_key())
    keys = tmp_path / "keys"
    load_key(keys, dns.name.from_text(origin))
    mine = read_key_files(keys)
    with pytest.raises(ConfigError, match=r"demo\.shadowdns\.test\.csk\.pem"):
        fleet.sync_from_store(store, zones, True, keys_dir=keys)
    store.put_config_file("other.test.", "zone", "$ORIGIN other.test.\n"
                          "@ 60 IN SOA ns h 1 60 60 60 60\n@ 60 IN NS ns\nns 60 IN A 192.0.2.1\n")
    synced = fleet.sync_from_store(store, zones, False, keys_dir=keys)
    assert synced.changed is True
    assert synced.key_conflict is not None
    assert "demo.shadowdns.test.csk.pem" in synced.key_conflict
    assert read_key_files(keys)["demo.shadowdns.test.csk.pem"] == mine[
        "demo.shadowdns.test.csk.pem"]
    assert "other.test.csk.pem" in read_key_files(keys)  # the new zone's key, via the store


def test_a_key_conflict_keeps_the_news_of_the_key_files_taken_before_it(
    store: Store, tmp_path: Path
) -> None:
    """Another zone's key taken from the store in the same sync as a conflict: the sync
    says the directory changed (the node must reload to sign that zone), and names the
    conflict."""
    zones = tmp_path / "zones"
    shutil.copytree(demo_zones_dir(), zones)
    fleet.sync_from_store(store, zones, True)  # the zone files in the store, no keys
    origin = "demo.shadowdns.test."
    keys = tmp_path / "keys"
    load_key(keys, dns.name.from_text(origin))
    store.swap_key_file(origin, "demo.shadowdns.test.csk.pem", None, new_private_key())
    theirs = new_private_key()
    store.swap_key_file("example.net.", "example.net.csk.pem", None, theirs)
    synced = fleet.sync_from_store(store, zones, False, keys_dir=keys)
    assert synced.key_conflict is not None and "demo.shadowdns.test.csk.pem" in synced.key_conflict
    assert synced.changed is True
    assert read_key_files(keys)["example.net.csk.pem"] == theirs


def _age(path: Path, seconds: float) -> None:
    """Set `path`'s modification time `seconds` into the past."""
    at = time.time() - seconds
    os.utime(path, (at, at))


def test_a_node_without_a_key_policy_takes_the_fleets_and_publishes_the_same_keys(
    store: Store, tmp_path: Path
) -> None:
    """Node A splits its zones into KSK and ZSKs; node B, started with no policy, would
    publish a lone CSK, and a validator mixing their answers would find ZSK signatures
    whose key B never published. B takes A's policy from the store and, after the ZSK
    made by A's load, serves A's DNSKEY set."""
    a, b = tmp_path / "a", tmp_path / "b"
    _split(a)
    fleet.sync_keys(store, a, [ORIGIN])
    load_key(a, NAME)  # the load makes ZSK 1 under the split
    fleet.sync_keys(store, a)
    assert stored_policy(store) == (a / POLICY).read_bytes()
    assert fleet.sync_keys(store, b, [ORIGIN]) is True
    assert (b / POLICY).read_bytes() == (a / POLICY).read_bytes()
    assert stat.S_IMODE((b / POLICY).stat().st_mode) == 0o600
    assert KeyPolicy.load(b).split is True
    assert dnskeys(b) == dnskeys(a)
    assert len(dnskeys(b)) == 2  # the KSK and ZSK 1


def test_the_key_policy_written_last_wins_across_the_fleet(store: Store, tmp_path: Path
                                                          ) -> None:
    """An operator's later edit on node B reaches the store and node A; a node whose own
    file is older than the store's copy takes the store's instead of publishing it."""
    a, b = tmp_path / "a", tmp_path / "b"
    _split(a)
    _age(a / POLICY, 60)
    fleet.sync_keys(store, a, [ORIGIN])
    fleet.sync_keys(store, b)
    (b / POLICY).write_text("split: false\n")  # edited now: after the store's copy
    assert fleet.sync_keys(store, b) is False  # published, nothing here changed
    assert stored_policy(store) == b"split: false\n"
    assert fleet.sync_keys(store, a) is True
    assert (a / POLICY).read_bytes() == b"split: false\n"
    c = tmp_path / "c"
    _split(c)
    _age(c / POLICY, 3600)  # a stale copy, older than the store's
    assert fleet.sync_keys(store, c) is True
    assert (c / POLICY).read_bytes() == b"split: false\n"
    assert stored_policy(store) == b"split: false\n"


def test_a_key_policy_that_does_not_parse_is_not_published(store: Store, tmp_path: Path
                                                           ) -> None:
    """A broken edit on one node is refused with the file and the reason; the store keeps
    the fleet's policy and the other nodes never see the broken one."""
    a, b = tmp_path / "a", tmp_path / "b"
    _split(a)
    _age(a / POLICY, 60)
    fleet.sync_keys(store, a, [ORIGIN])
    fleet.sync_keys(store, b)
    (b / POLICY).write_text("split: maybe\n")
    with pytest.raises(ConfigError) as caught:
        fleet.sync_keys(store, b)
    assert str(b / POLICY) in str(caught.value) and "split" in str(caught.value)
    assert stored_policy(store) == (a / POLICY).read_bytes()
    assert fleet.sync_keys(store, a) is False
