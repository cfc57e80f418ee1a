"""`shadowdns serve --api`: the real process, its HTTP API, TLS, and DNS answers following it."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import ssl
import subprocess
import time
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rcode
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shadowdns.store.policy_rows import policy_rows
from shadowdns.zones.policy_file import load_policy
from tests.unit.api.support import ZONE, ServedApi, served_api

GRAPH_TABLES = ("resources", "dis", "di_resources")


def ask(served: ServedApi, name: str, rdtype: str = "A") -> list[str]:
    query = dns.message.make_query(name, rdtype)
    reply = dns.query.udp(query, "127.0.0.1", port=served.server.port, timeout=2)
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset
                  if rrset.rdtype == query.question[0].rdtype)


def wait_for(served: ServedApi, name: str, wanted: list[str], limit: float) -> float:
    """Seconds until DNS answers `wanted` (fails after `limit`)."""
    start = time.monotonic()
    while True:
        if ask(served, name) == wanted:
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            raise AssertionError(f"{name} still answers {ask(served, name)}, not {wanted}")
        time.sleep(0.02)


def test_api_changes_reach_dns_within_a_second_and_stop_is_clean(tmp_path: Path) -> None:
    """RRset and override changes over HTTP show in DNS in < 1 s; SIGTERM exits 0."""
    with served_api(tmp_path) as served, httpx.Client(base_url=served.url) as http:
        assert http.get("/readyz").json()["ready"] is True
        assert ask(served, f"www.{ZONE}") == ["192.0.2.80"]
        response = http.put(f"/api/v1/zones/{ZONE}/rrsets/www/A",
                            json={"ttl": 30, "rdata": ["192.0.2.81"]},
                            headers=served.auth("operator"))
        assert response.status_code == 200, response.text
        assert wait_for(served, f"www.{ZONE}", ["192.0.2.81"], 1.0) < 1.0
        response = http.put(f"/api/v1/zones/{ZONE}/resources/web-eu-1/override",
                            json={"override": "down"}, headers=served.auth("operator"))
        assert response.status_code == 200, response.text
        assert wait_for(served, f"app.{ZONE}", ["198.51.100.10"], 1.0) < 1.0
        served.server.signal(signal.SIGTERM)
        assert served.server.proc is not None
        assert served.server.proc.wait(15) == 0


def table_metrics(http: httpx.Client) -> dict[str, float]:
    wanted = {"shadowdns_resolver_answer_table_rebuilds", "shadowdns_resolver_answer_table_entries"}
    return {f.name: f.samples[0].value
            for f in text_string_to_metric_families(http.get("/metrics").text)
            if f.name in wanted}


def ttl_of(served: ServedApi, name: str) -> int:
    reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1",
                          port=served.server.port, timeout=2)
    return reply.answer[0].ttl


def stored_graph(served: ServedApi) -> dict[str, list[tuple[object, ...]]]:
    """The policy graph rows in the server's state database."""
    conn = sqlite3.connect(f"file:{served.state}?mode=ro", uri=True)
    try:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
                for table in GRAPH_TABLES}
    finally:
        conn.close()


def file_graph(served: ServedApi) -> dict[str, list[tuple[object, ...]]]:
    """The rows a whole write of the policy file now on disk would store."""
    policy = load_policy(served.zones / f"{ZONE.rstrip('.')}.policy.yaml",
                         dns.name.from_text(ZONE))
    return {table: sorted(rows) for table, _, rows in policy_rows(ZONE, policy)
            if table in GRAPH_TABLES}


def test_a_di_edit_recompiles_that_di_and_a_zone_edit_the_table(tmp_path: Path) -> None:
    """Through the real API: a DI's new TTL, a new DI and a deleted one are answered in
    under a second while the answer table is kept (no whole-table rebuild, its other
    entries stay) and the store's policy graph follows the file; an RRset edit changes
    the zone's SOA serial, so every negative answer changes and the table is rebuilt
    once."""
    with served_api(tmp_path) as served, httpx.Client(base_url=served.url) as http:
        operator = served.auth("operator")
        assert ttl_of(served, f"app.{ZONE}") == 30
        start = table_metrics(http)
        response = http.put(f"/api/v1/zones/{ZONE}/dis/app", headers=operator, json={
            "primaries": ["web-eu-1", "web-us-1"], "standby": ["sb-ap-1", "sb-sa-1", "sb-eu-2"],
            "ttl": 45, "answers": 1, "all_down": "primaries"})
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 1.0
        while ttl_of(served, f"app.{ZONE}") != 45:
            assert time.monotonic() < deadline, "the DI's new TTL was not answered in 1 s"
            time.sleep(0.02)
        response = http.put(f"/api/v1/zones/{ZONE}/dis/fresh", headers=operator,
                            json={"primaries": ["web-us-1"], "ttl": 20})
        assert response.status_code in (200, 201), response.text
        assert wait_for(served, f"fresh.{ZONE}", ["198.51.100.10"], 1.0) < 1.0
        assert http.delete(f"/api/v1/zones/{ZONE}/dis/fresh",
                           headers=operator).status_code == 204
        deadline = time.monotonic() + 1.0
        while (reply := dns.query.udp(dns.message.make_query(f"fresh.{ZONE}", "A"),
                                      "127.0.0.1", port=served.server.port,
                                      timeout=2)).rcode() != dns.rcode.NXDOMAIN:
            assert time.monotonic() < deadline, f"fresh still answers {reply}"
            time.sleep(0.02)
        # the store took the edits entry by entry and holds what a whole write would
        deadline = time.monotonic() + 5.0
        while (stored := stored_graph(served)) != (wanted := file_graph(served)):
            assert time.monotonic() < deadline, f"the store holds {stored}, not {wanted}"
            time.sleep(0.05)
        assert ("fresh." + ZONE) not in {row[0] for row in stored["dis"]}
        assert any(row[0] == "app." + ZONE and row[2] == 45 for row in stored["dis"])
        kept = table_metrics(http)
        assert kept["shadowdns_resolver_answer_table_rebuilds"] == \
            start["shadowdns_resolver_answer_table_rebuilds"]
        assert kept["shadowdns_resolver_answer_table_entries"] >= \
            start["shadowdns_resolver_answer_table_entries"] - 4
        response = http.put(f"/api/v1/zones/{ZONE}/rrsets/www/A",
                            json={"ttl": 30, "rdata": ["192.0.2.81"]}, headers=operator)
        assert response.status_code == 200, response.text
        assert wait_for(served, f"www.{ZONE}", ["192.0.2.81"], 1.0) < 1.0
        assert table_metrics(http)["shadowdns_resolver_answer_table_rebuilds"] == \
            kept["shadowdns_resolver_answer_table_rebuilds"] + 1


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_when_cert_and_key_are_given(tmp_path: Path) -> None:
    """With --api-cert/--api-key the API speaks HTTPS (verifiable with the cert) and only that."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    with served_api(tmp_path, "--api-cert", str(cert), "--api-key", str(key)) as served:
        assert served.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=served.url, verify=context) as http:
            who = http.get("/api/v1/whoami", headers=served.auth("reader"))
            assert who.status_code == 200 and who.json()["role"] == "reader"
        plain = served.url.replace("https://", "http://")
        with httpx.Client(base_url=plain) as http, pytest.raises(httpx.HTTPError):
            http.get("/healthz")
