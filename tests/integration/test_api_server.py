"""`shadowdns serve --api`: the real process, its HTTP API, TLS, and DNS answers following it."""

from __future__ import annotations

import shutil
import signal
import ssl
import subprocess
import time
from pathlib import Path

import dns.message
import dns.query
import httpx
import pytest

from tests.unit.api.support import ZONE, ServedApi, served_api


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
