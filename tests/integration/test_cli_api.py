"""The operator workflow with the `shadowdns` command against a running server's API.

The server is a real subprocess; the command runs in this process (`shadowdns.cli.main`) so
thirty invocations do not pay thirty interpreter starts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from shadowdns.cli import main
from tests.unit.api.support import ZONE, ServedApi, served_api


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    with served_api(tmp_path_factory.mktemp("cli")) as running:
        yield running


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def cli(served: ServedApi, *args: str, role: str = "operator") -> Run:
    env = {"SHADOWDNS_API": served.url, "SHADOWDNS_TOKEN": served.tokens[role]}
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, env), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        code = main(list(args))
    return Run(code, out.getvalue(), err.getvalue())


def test_token_create_prints_a_working_secret_once(served: ServedApi) -> None:
    """`token create` on the server's state file makes a token the API accepts at once."""
    made = cli(served, "token", "create", "--role", "reader", "--name", "ci", "--json",
               "--state", str(served.state))
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["token"]
    listed = cli(served, "zone", "list", "--token", secret)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split()[:3] == ["ZONE", "SERIAL", "RRSETS"]
    assert ZONE in listed.stdout
    tokens = cli(served, "token", "list", "--json", "--state", str(served.state))
    assert "ci" in {t["name"] for t in json.loads(tokens.stdout)}
    assert secret not in tokens.stdout


def test_record_set_export_and_delete(served: ServedApi, tmp_path: Path) -> None:
    """`record set` edits the zone, `zone export` shows it, `record delete` removes it."""
    done = cli(served, "record", "set", f"cli.{ZONE}", "TXT", '"set from the cli"', "--ttl",
               "90")
    assert done.returncode == 0, done.stderr
    assert "cli.demo.shadowdns.test." in done.stdout and "TXT" in done.stdout
    out = tmp_path / "demo.zone"
    exported = cli(served, "zone", "export", ZONE, "-o", str(out), role="reader")
    assert exported.returncode == 0, exported.stderr
    assert 'cli 90 IN TXT "set from the cli"' in out.read_text()
    listed = cli(served, "record", "list", ZONE, "--name", "cli", "--json", role="reader")
    assert json.loads(listed.stdout)[0]["ttl"] == 90
    gone = cli(served, "record", "delete", f"cli.{ZONE}", "TXT")
    assert gone.returncode == 0, gone.stderr
    again = cli(served, "record", "delete", f"cli.{ZONE}", "TXT")
    assert again.returncode == 4
    assert "HTTP 404" in again.stderr


def test_zone_import_replaces_with_a_newer_serial(served: ServedApi, tmp_path: Path) -> None:
    """`zone import` of an exported file replaces the zone (admin) and bumps its serial."""
    out = tmp_path / "z.zone"
    cli(served, "zone", "export", ZONE, "-o", str(out), role="reader")
    serial = json.loads(cli(served, "zone", "list", "--json", role="reader").stdout)[0]["serial"]
    denied = cli(served, "zone", "import", str(out))
    assert denied.returncode == 3 and "HTTP 403" in denied.stderr
    done = cli(served, "zone", "import", str(out), "--json", role="admin")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["serial"] == serial + 1


def test_errors_show_status_problems_and_exit_codes(served: ServedApi) -> None:
    """Invalid data exits 6 listing each bad field; a bad token 3; no server 7."""
    bad = cli(served, "record", "set", f"www.{ZONE}", "A", "192.0.2.1", "not-an-ip")
    assert bad.returncode == 6
    assert "HTTP 422 invalid" in bad.stderr and "body.rdata.1" in bad.stderr
    wrong = cli(served, "zone", "list", "--token", "sdns_000000000000_" + "x" * 43)
    assert wrong.returncode == 3 and "HTTP 401" in wrong.stderr
    down = cli(served, "zone", "list", "--api", "http://127.0.0.1:9")
    assert down.returncode == 7 and "cannot reach the API" in down.stderr


def test_resource_and_health_override(served: ServedApi) -> None:
    """`resource show`, `health override` and `health list` work by resource id alone."""
    shown = cli(served, "resource", "show", "sb-ap-1", role="reader")
    assert shown.returncode == 0, shown.stderr
    assert "role: standby" in shown.stdout
    pinned = cli(served, "health", "override", "sb-ap-1", "down")
    assert pinned.returncode == 0, pinned.stderr
    health = json.loads(cli(served, "health", "list", "--json", role="reader").stdout)
    assert {h["resource"]: h["state"] for h in health}["sb-ap-1"] == "down"
    table = cli(served, "health", "list", role="reader").stdout
    assert table.splitlines()[0].split()[:3] == ["RESOURCE", "STATE", "PROBES"]
    assert cli(served, "health", "override", "sb-ap-1", "obey").returncode == 0


def test_di_edit_from_a_yaml_file(served: ServedApi, tmp_path: Path) -> None:
    """`di set --file` creates a DI from YAML in the policy file's shape."""
    spec = tmp_path / "di.yaml"
    spec.write_text("primaries: [web-us-1]\nttl: 15\n")
    made = cli(served, "di", "set", f"cli-di.{ZONE}", "--file", str(spec))
    assert made.returncode == 0, made.stderr
    shown = json.loads(cli(served, "di", "show", f"cli-di.{ZONE}", "--json",
                           role="reader").stdout)
    assert shown["config"] == {"primaries": ["web-us-1"], "ttl": 15}
    assert cli(served, "di", "delete", f"cli-di.{ZONE}").returncode == 0


def test_alloc_pin_list_release_and_forecasts(served: ServedApi) -> None:
    """Pin a shadow, see it listed, release it; forecasts list without error."""
    pinned = cli(served, "alloc", "pin", f"app.{ZONE}", "sb-sa-1", "sa-east", "--json")
    assert pinned.returncode == 0, pinned.stderr
    allocation = json.loads(pinned.stdout)
    listed = cli(served, "alloc", "list", role="reader")
    assert any(line.split()[:4] == [str(allocation["id"]), f"app.{ZONE}", "sb-sa-1", "sa-east"]
               for line in listed.stdout.splitlines())
    released = cli(served, "alloc", "release", str(allocation["id"]))
    assert released.returncode == 0 and "released allocation" in released.stdout
    forecasts = cli(served, "alloc", "forecasts", role="reader")
    assert forecasts.returncode == 0, forecasts.stderr
    assert forecasts.stdout.splitlines()[0].split()[:3] == ["DI", "REGION", "MODEL"]
