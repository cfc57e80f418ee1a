"""A policy file from the fleet store is data from elsewhere: it may not add a command check.

`fleet.sync_from_store` writes the store's files into a node's zones directory. A node
started without --allow-commands keeps its own policy when the store's copy would add (or
change) a command health check, and writes no file outside its zones directory.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from shadowdns import fleet
from shadowdns.resolver.commands import demo_zones_dir
from shadowdns.store import Store, open_store

ORIGIN = "demo.shadowdns.test."
POLICY = "demo.shadowdns.test.policy.yaml"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    zones = tmp_path / "zones"
    shutil.copytree(demo_zones_dir(), zones)
    store = open_store(str(tmp_path / "state.db"))
    try:
        fleet.publish(store, zones)
        yield store, zones
    finally:
        store.close()


def with_check(text: str, resource: str, check: dict[str, object]) -> str:
    data = yaml.safe_load(text)
    data["resources"][resource]["check"] = check
    return yaml.safe_dump(data)


COMMAND = {"type": "command", "command": ["/bin/sh", "-c", "touch /tmp/pwned"]}


@pytest.mark.parametrize("command", [
    COMMAND,
    # the same word spelt with a YAML escape is still a command check
    '{"type": "\\x63ommand", "\\x63ommand": ["/bin/true"]}',
])
def test_a_store_policy_adding_a_command_is_not_taken(node: tuple[Store, Path],
                                                      command: object,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Without --allow-commands the node keeps its file and logs the field and the reason."""
    store, zones = node
    mine = (zones / POLICY).read_text()
    if isinstance(command, str):
        theirs = mine.replace("sb-eu-2: {address: 192.0.2.20,",
                              f"sb-eu-2: {{check: {command}, address: 192.0.2.20,")
        assert theirs != mine and "command" not in theirs
    else:
        theirs = with_check(mine, "sb-eu-2", command)
    store.put_config_file(ORIGIN, "policy", theirs)
    with caplog.at_level(logging.ERROR, logger="shadowdns.fleet"):
        assert fleet.sync_from_store(store, zones, at_start=False).changed is False
    assert (zones / POLICY).read_text() == mine
    assert "resources.sb-eu-2.check.type" in caplog.text
    assert "--allow-commands" in caplog.text


def test_with_allow_commands_the_store_policy_is_taken(node: tuple[Store, Path]) -> None:
    store, zones = node
    theirs = with_check((zones / POLICY).read_text(), "sb-eu-2", COMMAND)
    store.put_config_file(ORIGIN, "policy", theirs)
    assert fleet.sync_from_store(store, zones, at_start=False, allow_commands=True).changed is True
    assert (zones / POLICY).read_text() == theirs


def test_a_command_check_this_host_already_has_does_not_block_other_changes(
        node: tuple[Store, Path]) -> None:
    """The host's own command check, unchanged in the store's copy, lets the copy in."""
    store, zones = node
    mine = with_check((zones / POLICY).read_text(), "sb-eu-2", COMMAND)
    (zones / POLICY).write_text(mine)
    theirs = mine.replace("203.0.113.30", "203.0.113.31")
    store.put_config_file(ORIGIN, "policy", theirs)
    assert fleet.sync_from_store(store, zones, at_start=False).changed is True
    assert (zones / POLICY).read_text() == theirs


def test_a_store_file_whose_name_leaves_the_zones_directory_is_not_written(
        node: tuple[Store, Path]) -> None:
    store, zones = node
    store.put_config_file("../escape.", "zone", "$TTL 300\n")
    assert fleet.sync_from_store(store, zones, at_start=False).changed is False
    assert not (zones.parent / "escape.zone").exists()


SETTINGS = "allocator:\n  window: 5m\n  hooks: {drain: {command: [/bin/true]}}\n"


@pytest.mark.parametrize(("theirs", "taken"), [
    ("allocator:\n  window: 10m\n  hooks: {drain: {command: [/bin/true]}}\n", True),
    ("allocator:\n  window: 5m\n  hooks: {drain: {command: [/bin/sh, -c, id]}}\n", False),
    ("allocator:\n  hooks: {drain: {command: [/bin/true]}, warmup: {command: [id]}}\n", False),
], ids=["same-command", "changed-command", "new-command"])
def test_allocator_yaml_travels_through_the_store_without_new_hook_commands(
        node: tuple[Store, Path], theirs: str, taken: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    """allocator.yaml is published like a policy file and taken from the store, unless the
    store's copy adds or changes a hook command (then the node keeps its own and logs the
    field)."""
    store, zones = node
    (zones / "allocator.yaml").write_text(SETTINGS)
    assert fleet.publish(store, zones) == 1
    assert {(f.origin, f.kind) for f in store.config_files()} >= {(".", "allocator")}
    store.put_config_file(".", "allocator", theirs)
    with caplog.at_level(logging.ERROR, logger="shadowdns.fleet"):
        assert fleet.sync_from_store(store, zones, at_start=False).changed is taken
    assert (zones / "allocator.yaml").read_text() == (theirs if taken else SETTINGS)
    assert taken or ("hooks." in caplog.text and "--allow-commands" in caplog.text)


def test_a_node_without_allocator_yaml_takes_the_fleets(node: tuple[Store, Path]) -> None:
    store, zones = node
    store.put_config_file(".", "allocator", "allocator: {window: 2m}\n")
    assert fleet.sync_from_store(store, zones, at_start=False).changed is True
    assert (zones / "allocator.yaml").read_text() == "allocator: {window: 2m}\n"
