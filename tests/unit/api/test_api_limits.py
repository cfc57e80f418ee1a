"""Limits on what a client may send the API: body size, JSON depth, failed logins (issue 15)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.unit.api.support import ZONE, Api, running_api

RRSET = f"/api/v1/zones/{ZONE}/rrsets/www/A"


def test_a_body_over_the_limit_is_refused_before_the_token_is_checked(tmp_path: Path) -> None:
    """Without any token, a body past --api-max-body is 413 naming the limit; nothing is
    written, and a body under the limit still reaches auth (401)."""
    with running_api(tmp_path, api_max_body=4096) as api:
        before = api.zone_file.read_bytes()
        big = b'{"ttl": 60, "rdata": ["' + b"1" * 5000 + b'"]}'
        response = api.http.put(RRSET, content=big,
                                headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        error = response.json()["error"]
        assert error["code"] == "too_large" and "4096" in error["message"]
        assert error["problems"][0]["path"] == "body"
        # streamed without a Content-Length: counted as it arrives
        chunks = (b"x" * 1024 for _ in range(8))
        streamed = api.http.put(RRSET, content=chunks,
                                headers={**api.auth("operator"),
                                         "Content-Type": "application/json"})
        assert streamed.status_code == 413
        assert api.http.put(RRSET, json={"ttl": 60, "rdata": ["192.0.2.1"]}).status_code == 401
        assert api.zone_file.read_bytes() == before


def test_json_nested_too_deep_is_422_not_500(api: Api) -> None:
    """A policy nested 800 levels (the issue's probe) is 422 `too_deep` naming `body`; a
    string full of brackets is not nesting and passes the depth check."""
    deep = "[" * 800 + "]" * 800
    response = api.http.put(f"/api/v1/zones/{ZONE}/policy", content=deep,
                            headers={**api.auth("operator"),
                                     "Content-Type": "application/json"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "too_deep" and error["problems"][0]["path"] == "body"
    assert "800" in error["message"]
    bare = api.http.put(f"/api/v1/zones/{ZONE}/policy", content=deep,
                        headers={**api.auth("operator"), "Content-Type": ""})
    assert bare.status_code == 422 and bare.json()["error"]["code"] == "too_deep"
    text = {"ttl": 60, "rdata": ['"' + "[{" * 100 + '"']}
    ok = api.call("PUT", f"/api/v1/zones/{ZONE}/rrsets/deep/TXT", text)
    assert ok.status_code == 201, ok.text


def test_failed_logins_are_limited_per_address_and_logged_without_the_token(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """After N bad tokens from one address, even a good token gets 429 with Retry-After;
    each failure is a warning naming the address but not the token; the metric counts
    both outcomes."""
    bad = "sdns_0123456789ab_" + "A" * 43
    with running_api(tmp_path, api_login_failures=3) as api, \
            caplog.at_level(logging.WARNING, logger="shadowdns.api.context"):
        for _ in range(3):
            response = api.http.get("/api/v1/zones", headers={"Authorization": f"Bearer {bad}"})
            assert response.status_code == 401
        limited = api.http.get("/api/v1/zones", headers=api.auth("reader"))
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"]["code"] == "too_many_failures"
        warnings = [r.getMessage() for r in caplog.records if "failed login" in r.getMessage()]
        assert len(warnings) == 3 and all("127.0.0.1" in w for w in warnings)
        assert not any(bad in r.getMessage() or bad[5:17] in r.getMessage()
                       for r in caplog.records)
        metrics = api.http.get("/metrics").text
        assert 'shadowdns_api_login_failures_total{result="unauthorized"} 3.0' in metrics
        assert 'shadowdns_api_login_failures_total{result="limited"} 1.0' in metrics
