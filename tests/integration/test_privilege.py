"""No way in through the API: the real `shadowdns serve --api` runs no program and reads no
host file for a request, at any role; files on the host keep their power.

A command check would run within one interval of the probe monitor's next resync (5 s), so
"nothing ran" is asserted after waiting longer than both; with --allow-commands the same
request does run, which shows the wait is long enough.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import httpx
import pytest
import yaml

from tests.unit.api.support import ZONE, ServedApi, served_api

BASE = f"/api/v1/zones/{ZONE}"
RESYNC = 5.0  # HealthMonitor.resync: how soon a new check starts probing
INTERVAL = 1.0


def command_resource(marker: Path) -> dict[str, object]:
    return {"address": "192.0.2.66", "location": "eu-west", "role": "standby",
            "check": {"type": "command", "command": ["/bin/sh", "-c", f"id > {marker}"],
                      "interval": INTERVAL, "timeout": 1}}


def appears(path: Path, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.1)
    return path.exists()


def www(served: ServedApi) -> list[str]:
    reply = dns.query.udp(dns.message.make_query(f"www.{ZONE}", "A"), "127.0.0.1",
                          port=served.server.port, timeout=2)
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


def test_no_role_can_make_the_server_run_a_program_but_host_files_can(tmp_path: Path) -> None:
    """Operator and admin get 403 for a command check (resource or whole policy) and no
    process ever starts; the same check written into the policy file on the host and
    loaded by SIGHUP does run."""
    marker = tmp_path / "pwned.txt"
    with served_api(tmp_path) as served, httpx.Client(base_url=served.url, timeout=10) as http:
        policy_file = served.zones / "demo.shadowdns.test.policy.yaml"
        before = policy_file.read_bytes()
        for role in ("operator", "admin"):
            response = http.put(f"{BASE}/resources/evil", json=command_resource(marker),
                                headers=served.auth(role))
            assert response.status_code == 403, response.text
            [problem] = response.json()["error"]["problems"]
            assert problem["path"] == "body.check.type"
        whole = http.get(f"{BASE}/policy", headers=served.auth("reader")).json()["policy"]
        whole["resources"]["evil"] = command_resource(marker)
        response = http.put(f"{BASE}/policy", json=whole, headers=served.auth("admin"))
        assert response.status_code == 403, response.text
        assert policy_file.read_bytes() == before
        assert not appears(marker, RESYNC + 3 * INTERVAL)

        host_marker = tmp_path / "host-check-ran"
        data = yaml.safe_load(before)
        data["resources"]["sb-eu-2"]["check"] = {
            "type": "command", "command": ["/bin/sh", "-c", f"touch {host_marker}"],
            "interval": INTERVAL, "timeout": 1}
        policy_file.write_text(yaml.safe_dump(data))
        served.server.signal(signal.SIGHUP)
        assert appears(host_marker, RESYNC + 5 * INTERVAL)
        assert not marker.exists()


def test_with_allow_commands_an_operator_can_add_a_command_check(tmp_path: Path) -> None:
    """`serve --allow-commands`: the same request is written and its program runs."""
    marker = tmp_path / "pwned.txt"
    with served_api(tmp_path, "--allow-commands") as served, \
            httpx.Client(base_url=served.url, timeout=10) as http:
        response = http.put(f"{BASE}/resources/evil", json=command_resource(marker),
                            headers=served.auth("operator"))
        assert response.status_code == 201, response.text
        assert appears(marker, RESYNC + 5 * INTERVAL)


@pytest.mark.timeout(120)
def test_include_is_refused_from_the_api_and_outside_the_zones_directory(
        tmp_path: Path) -> None:
    """POST /zones with `$INCLUDE /dev/zero` gets a 422 at once and DNS keeps answering; a
    host zone file including /etc/hostname is refused by `shadowdns check` (file:line) and
    by the SIGHUP reload, which keeps serving the previous data."""
    with served_api(tmp_path) as served, httpx.Client(base_url=served.url, timeout=10) as http:
        text = ("$ORIGIN inc.test.\n$TTL 300\n@ SOA ns1 host 1 3600 600 86400 60\n"
                "@ NS ns1\nns1 A 192.0.2.1\n$INCLUDE /dev/zero\n")
        response = http.post("/api/v1/zones", json={"origin": "inc.test.", "text": text},
                             headers=served.auth("operator"))
        assert response.status_code == 422, response.text
        assert response.json()["error"]["problems"][0]["line"] == 6
        assert www(served) == ["192.0.2.80"]

        zone_file = served.zones / "demo.shadowdns.test.zone"
        original = zone_file.read_text()
        edited = original.replace("192.0.2.80", "192.0.2.99") + "$INCLUDE /etc/hostname\n"
        zone_file.write_text(edited)
        line = edited.count("\n")
        check = subprocess.run([sys.executable, "-m", "shadowdns", "check", str(served.zones)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 1
        assert (f"{zone_file}:{line}: $INCLUDE /etc/hostname: refused: only files inside "
                "the zones directory may be included") in check.stderr
        served.server.signal(signal.SIGHUP)
        served.server.wait_log(r"reload failed", timeout=10)
        assert www(served) == ["192.0.2.80"]


def hook_document(served: ServedApi, marker: Path) -> dict[str, object]:
    """The running allocator settings with a warm-up hook command and a pin that makes a
    shadow at once (so the hook would run within a second or two)."""
    doc = httpx.get(f"{served.url}/api/v1/allocator", headers=served.auth("reader"),
                    timeout=10).json()["allocator"]
    now = time.time()
    return {**doc, "mode": "active",
            "hooks": {"warmup": {"command": ["/bin/sh", "-c", f"id > {marker}"]}},
            "pins": [{"di": f"app.{ZONE}", "resource": "sb-ap-1", "region": "ap-east",
                      "start": now - 1, "until": now + 3600}]}


def test_no_role_can_add_an_allocator_hook_command(tmp_path: Path) -> None:
    """PUT /api/v1/allocator with a hook command is 403 for operator and admin, the file is
    untouched and no program runs; with --allow-commands the same request is taken and its
    hook runs when the pin's shadow starts warming (so the wait is long enough)."""
    marker = tmp_path / "hook-ran"
    with served_api(tmp_path / "a") as served, \
            httpx.Client(base_url=served.url, timeout=10) as http:
        settings_file = served.zones / "allocator.yaml"
        before = settings_file.read_bytes() if settings_file.exists() else None
        doc = hook_document(served, marker)
        for role in ("operator", "admin"):
            response = http.put("/api/v1/allocator", json=doc, headers=served.auth(role))
            assert response.status_code == 403, response.text
            [problem] = response.json()["error"]["problems"]
            assert problem["path"].startswith("body.hooks.warmup")
        assert (settings_file.read_bytes() if settings_file.exists() else None) == before
        assert not appears(marker, 8.0)
    with served_api(tmp_path / "b", "--allow-commands") as served, \
            httpx.Client(base_url=served.url, timeout=10) as http:
        response = http.put("/api/v1/allocator", json=hook_document(served, marker),
                            headers=served.auth("operator"))
        assert response.status_code == 200, response.text
        assert appears(marker, 15.0)
