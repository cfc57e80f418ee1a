"""The API access log over real HTTP: by default changes and errors, never the secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.unit.api.support import ZONE, Api, running_api


def _access(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "shadowdns.api.access"]


def test_default_logs_changes_and_errors_not_reads(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """A dashboard's reads stay out; a change and a refused request are logged with the
    token's name (or '-') and no secret."""
    with caplog.at_level(logging.INFO, logger="shadowdns.api.access"):
        api.get("/api/v1/zones")
        changed = api.call("PUT", f"/api/v1/zones/{ZONE}/resources/web-us-1/override",
                           {"override": "down"})
        assert changed.status_code == 200, changed.text
        refused = api.http.get("/api/v1/zones", headers={"Authorization": "Bearer sdns_a_b"})
        assert refused.status_code == 401
    records = _access(caplog)
    assert [(r.method, r.status, r.token) for r in records] == [  # type: ignore[attr-defined]
        ("PUT", 200, "test-operator"), ("GET", 401, "-")]
    assert records[0].path == f"/api/v1/zones/{ZONE}/resources/web-us-1/override"  # type: ignore[attr-defined]
    assert records[0].duration_ms >= 0  # type: ignore[attr-defined]
    text = caplog.text
    assert all(secret not in text for secret in api.tokens.values())


@pytest.mark.parametrize(("mode", "logged"), [("all", 1), ("off", 0)])
def test_all_logs_reads_and_off_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str, logged: int
) -> None:
    with running_api(tmp_path, access_log=mode) as api, \
            caplog.at_level(logging.INFO, logger="shadowdns.api.access"):
        api.get("/api/v1/zones")
        caplog_records = _access(caplog)
    assert len(caplog_records) == logged
