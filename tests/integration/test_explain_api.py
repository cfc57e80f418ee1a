"""`shadowdns explain --api URL` asks the running server, which explains from the snapshot
it answers from, while explaining from files reads only the files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import httpx

from tests.unit.api.support import ZONE, ServedApi, served_api

APP = f"app.{ZONE}"
ASIA = "175.16.199.0/24"
SHADOW = "203.0.113.20"


def explain(served: ServedApi, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHADOWDNS_TOKEN": served.tokens["reader"]}
    env.pop("SHADOWDNS_STATE", None)
    return subprocess.run([sys.executable, "-m", "shadowdns", "explain", APP, "--client", ASIA,
                           *args], capture_output=True, text=True, env=env, timeout=60)


def dns_answer(served: ServedApi) -> list[str]:
    addr, prefix = ASIA.split("/")
    query = dns.message.make_query(APP, "A", use_edns=0,
                                   options=[dns.edns.ECSOption(addr, int(prefix))])
    reply = dns.query.udp(query, "127.0.0.1", port=served.server.port, timeout=2)
    return sorted(r.to_text() for rr in reply.answer for r in rr)


def test_explain_api_sees_the_servers_shadows_and_files_do_not(tmp_path: Path) -> None:
    """After a pin through the API, `explain --api` gives the shadow, as DNS does; `explain
    --zones` of the same files without the server's state does not; without --zones it says
    it reads the bundled demo; bad input is a 422 naming the field."""
    with served_api(tmp_path) as served, httpx.Client(base_url=served.url) as http:
        pinned = http.post("/api/v1/allocations/pins", headers=served.auth("operator"),
                           json={"di": APP, "resource": "sb-ap-1", "region": "ap-east"})
        assert pinned.status_code == 201, pinned.text
        deadline = time.monotonic() + 5
        while dns_answer(served) != [SHADOW] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dns_answer(served) == [SHADOW]

        asked = explain(served, "--api", served.url, "--json")
        assert asked.returncode == 0, asked.stderr
        report = json.loads(asked.stdout)
        assert report["answers"] == [SHADOW] and report["region"] == "ap-east"
        assert "sb-ap-1" in report["reason"] and report["source"] == "running server"
        text = explain(served, "--api", served.url)
        assert f"the server at {served.url}" in text.stdout and SHADOW in text.stdout

        local = explain(served, "--zones", str(served.zones), "--json")
        assert local.returncode == 0, local.stderr
        assert json.loads(local.stdout)["answers"] != [SHADOW]
        bundled = explain(served)
        assert "bundled demo zones" in bundled.stderr and "--api" in bundled.stderr

        both = explain(served, "--api", served.url, "--zones", str(served.zones))
        assert both.returncode == 1 and "--api" in both.stderr
        bad = http.get("/api/v1/explain", headers=served.auth("reader"),
                       params={"name": APP, "client": "not-an-ip"})
        assert bad.status_code == 422 and "query.client" in bad.text
        assert http.get("/api/v1/explain", params={"name": APP, "client": "192.0.2.1"}
                        ).status_code == 401
