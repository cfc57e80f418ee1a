"""Nothing sent to the API, at any role, runs a program or reads a host file.

Command health checks come only from files on the host (or with --allow-commands), and
zone text from the API may not `$INCLUDE` anything. The processes that must never start
are tested against the real server in tests/integration/test_privilege.py.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import yaml

from shadowdns.api.config_files import Change, ConfigFiles
from shadowdns.api.errors import ApiError
from shadowdns.resolver.commands import demo_zones_dir
from tests.unit.api.support import ZONE, Api, running_api

BASE = f"/api/v1/zones/{ZONE}"
EVIL = ["/bin/sh", "-c", "id > pwned.txt"]


def command_resource(argv: list[str]) -> dict[str, object]:
    return {"address": "192.0.2.66", "location": "eu-west", "role": "standby",
            "check": {"type": "command", "command": argv, "interval": 1, "timeout": 1}}


def problems(response: object) -> list[str]:
    return sorted(p["path"] for p in response.json()["error"]["problems"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_a_command_check_is_refused_at_every_role_and_nothing_is_written(
        api: Api, role: str) -> None:
    """PUT of a resource with a command check: 403 naming body.check.type, file untouched,
    the running policy unchanged."""
    before = api.policy_file.read_bytes()
    response = api.call("PUT", f"{BASE}/resources/evil", command_resource(EVIL), role=role)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "commands_not_allowed"
    assert problems(response) == ["body.check.type"]
    assert "--allow-commands" in response.json()["error"]["problems"][0]["message"]
    assert api.policy_file.read_bytes() == before
    policy = api.service.loaded.policies[next(iter(api.service.loaded.policies))]
    assert "evil" not in policy.resources


def test_a_whole_policy_with_a_command_check_is_refused(api: Api) -> None:
    """PUT /policy names the resource's check inside the body."""
    before = api.policy_file.read_bytes()
    policy = api.get(f"{BASE}/policy")["policy"]
    policy["resources"]["evil"] = command_resource(EVIL)
    response = api.call("PUT", f"{BASE}/policy", policy, role="admin")
    assert response.status_code == 403, response.text
    assert problems(response) == ["body.resources.evil.check.type"]
    assert api.policy_file.read_bytes() == before


def test_turning_an_existing_check_into_a_command_is_refused(api: Api) -> None:
    """Changing a resource's check type to command is a new command, however it is sent."""
    current = api.get(f"{BASE}/resources/web-eu-1")["config"]
    current["check"] = {"type": "command", "command": ["/usr/bin/true"]}
    response = api.call("PUT", f"{BASE}/resources/web-eu-1", current)
    assert response.status_code == 403
    assert problems(response) == ["body.check.type"]


def test_a_command_check_from_the_host_file_survives_api_edits_but_cannot_be_changed(
        api: Api) -> None:
    """The host's own command check is loaded; the API may rewrite the policy around it
    (an override, the resource's address) but not point it at another program."""
    data = yaml.safe_load(api.policy_file.read_text())
    data["resources"]["sb-eu-2"]["check"] = {"type": "command", "command": ["/usr/bin/true"],
                                             "interval": 30, "timeout": 1}
    api.policy_file.write_text(yaml.safe_dump(data))
    assert api.service.reload()
    assert api.call("PUT", f"{BASE}/resources/web-eu-1/override",
                    {"override": "down"}).status_code == 200
    resource = api.get(f"{BASE}/resources/sb-eu-2")["config"]
    resource["address"] = "192.0.2.21"
    assert api.call("PUT", f"{BASE}/resources/sb-eu-2", resource).status_code == 200
    on_disk = yaml.safe_load(api.policy_file.read_text())
    assert on_disk["resources"]["sb-eu-2"]["check"]["command"] == ["/usr/bin/true"]
    resource["check"]["command"] = EVIL
    response = api.call("PUT", f"{BASE}/resources/sb-eu-2", resource)
    assert response.status_code == 403
    assert problems(response) == ["body.check.type"]


def test_with_allow_commands_the_api_accepts_a_command_check(tmp_path: Path) -> None:
    """`serve --allow-commands` (ServeConfig.allow_commands): the same request is written."""
    with running_api(tmp_path, allow_commands=True) as api:
        response = api.call("PUT", f"{BASE}/resources/evil",
                            command_resource(["/usr/bin/true"]))
        assert response.status_code == 201, response.text
        on_disk = yaml.safe_load(api.policy_file.read_text())
        assert on_disk["resources"]["evil"]["check"]["command"] == ["/usr/bin/true"]


ZONE_TEXT = ("$ORIGIN inc.test.\n$TTL 300\n@ SOA ns1 host 1 3600 600 86400 60\n@ NS ns1\n"
             "ns1 A 192.0.2.1\n$INCLUDE {target}\n")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", ["/etc/passwd", "/etc/no-such-file", "/dev/zero",
                                    "demo.shadowdns.test.zone"])
def test_zone_text_with_include_is_refused_at_its_line(api: Api, target: str) -> None:
    """POST /zones with $INCLUDE: 422 naming line 6, the same message whatever the target
    (even a file of the zones directory); no file is created; DNS still answers."""
    response = api.call("POST", "/api/v1/zones",
                        {"origin": "inc.test.", "text": ZONE_TEXT.format(target=target)})
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["problems"]
    assert (problem["path"], problem["line"]) == ("body.text", 6)
    assert problem["message"].startswith(
        "$INCLUDE is not accepted in zone text sent through the API")
    assert not (api.zones / "inc.test.zone").exists()
    assert api.ask(f"www.{ZONE}") == ["192.0.2.80"]


def test_zone_import_with_include_is_refused(api: Api) -> None:
    """PUT /zones/Z (admin import) refuses $INCLUDE the same way; the file is unchanged."""
    before = api.zone_file.read_bytes()
    text = before.decode() + "$INCLUDE /etc/hostname\n"
    response = api.call("PUT", f"{BASE}", {"text": text}, role="admin")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["problems"][0]["line"] == text.count("\n")
    assert api.zone_file.read_bytes() == before


def test_the_api_writes_only_zone_policy_and_allocator_files(api: Api) -> None:
    """Files elsewhere, hidden files and other names are never written."""
    files = ConfigFiles(api.service)
    for target in (api.zones / "allocator.yml", api.zones.parent / "x.zone",
                   api.zones.parent / "allocator.yaml", api.zones / ".hidden.zone"):
        with pytest.raises(ApiError) as info:
            asyncio.run(files.apply([Change(target, "allocator: {}\n")]))
        assert info.value.status == 403
        assert not target.exists()


def test_reading_a_zone_follows_include_only_inside_the_zones_directory(api: Api) -> None:
    """The API reads a zone's records with the server's own loader: a host file's $INCLUDE
    of a file in the zones directory is listed; one of /etc/passwd (edited on disk, not yet
    reloaded) is a 409 naming the line, and no line of /etc/passwd is in the answer."""
    text = api.zone_file.read_text()
    (api.zones / "extra.inc").write_text("inc IN A 192.0.2.77\n")
    api.zone_file.write_text(text + "$INCLUDE extra.inc\n")
    assert api.service.reload()
    rrsets = api.get(f"{BASE}/rrsets")
    assert any(r["name"] == f"inc.{ZONE}" for r in rrsets)
    api.zone_file.write_text(text + "$INCLUDE /etc/passwd\n")
    response = api.http.get(f"{BASE}/rrsets", headers=api.auth("reader"))
    assert response.status_code == 409
    assert "root:x:0" not in response.text and "/bin/" not in response.text
    [problem] = response.json()["error"]["problems"]
    assert problem["line"] == text.count("\n") + 1


def test_allocator_hook_commands_come_only_from_the_host(tmp_path: Path) -> None:
    """PUT /allocator refuses a new or changed hook command (403, the field named, the file
    untouched) but keeps one the host's file already has while other keys change; with
    --allow-commands it takes a new one."""
    source = tmp_path / "source"
    shutil.copytree(demo_zones_dir(), source)
    (source / "allocator.yaml").write_text(
        "allocator:\n  hooks: {drain: {command: [/bin/true]}}\n")
    with running_api(tmp_path / "a", source) as api:
        doc = api.get("/api/v1/allocator")["allocator"]
        assert doc["hooks"]["drain"]["command"] == ["/bin/true"]
        before = (api.zones / "allocator.yaml").read_text()
        for hooks in ({"drain": {"command": EVIL}},
                      {**doc["hooks"], "warmup": {"command": EVIL}}):
            response = api.call("PUT", "/api/v1/allocator", {**doc, "hooks": hooks})
            assert response.status_code == 403, response.text
            assert problems(response)[0].startswith("body.hooks.")
            assert (api.zones / "allocator.yaml").read_text() == before
        kept = api.call("PUT", "/api/v1/allocator", {**doc, "window": 120})
        assert kept.status_code == 200, kept.text
        assert kept.json()["allocator"]["hooks"]["drain"]["command"] == ["/bin/true"]
    with running_api(tmp_path / "b", source, allow_commands=True) as api:
        doc = api.get("/api/v1/allocator")["allocator"]
        taken = api.call("PUT", "/api/v1/allocator",
                         {**doc, "hooks": {"warmup": {"command": ["/bin/echo"]}}})
        assert taken.status_code == 200, taken.text
        assert api.service.loaded.allocator.warmup_hook is not None
