"""Authentication and roles: 401 and 403 are distinct and say why; tokens are stored hashed."""

from __future__ import annotations

import time

import pytest

from shadowdns.api.auth import Principal, check_token, hash_token, new_token
from shadowdns.api.errors import ApiError
from tests.unit.api.support import ZONE, Api


def test_token_is_stored_only_as_its_hash() -> None:
    """The row to store has the SHA-256 of the secret and never the secret itself."""
    secret, row = new_token("operator", "ci")
    assert secret.startswith(f"sdns_{row.id}_")
    assert row.hash == hash_token(secret)
    assert secret not in (row.id, row.name, row.hash)


def test_check_token_refuses_another_tokens_secret() -> None:
    """A secret is only good for its own row (the id in the token must match too)."""
    secret, row = new_token("admin")
    other, _ = new_token("admin")
    assert check_token(secret, row) == Principal(row.id, row.name, "admin")
    with pytest.raises(ApiError) as info:
        check_token(other, row)
    assert info.value.status == 401


@pytest.mark.parametrize(("header", "reason"), [
    (None, "no credentials"),
    ("Basic dXNlcjpwYXNz", "must be 'Bearer TOKEN'"),
    ("Bearer not-a-token", "malformed token"),
    ("Bearer sdns_0123456789ab_" + "x" * 43, "unknown or revoked"),
])
def test_missing_or_bad_credentials_are_401_with_the_reason(
        api: Api, header: str | None, reason: str) -> None:
    """Each way of failing to authenticate gets 401, a Bearer challenge and its own reason."""
    headers = {} if header is None else {"Authorization": header}
    response = api.http.get("/api/v1/zones", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    assert reason in error["message"]


@pytest.mark.parametrize(("role", "method", "path", "body", "needed"), [
    ("reader", "PUT", f"/api/v1/zones/{ZONE}/rrsets/www/A", {"ttl": 60, "rdata": ["192.0.2.1"]},
     "operator"),
    ("reader", "POST", "/api/v1/allocations/pins",
     {"di": f"app.{ZONE}", "resource": "sb-ap-1", "region": "ap-east"}, "operator"),
    ("operator", "DELETE", f"/api/v1/zones/{ZONE}", None, "admin"),
    ("operator", "GET", "/api/v1/tokens", None, "admin"),
    ("reader", "GET", "/api/v1/audit", None, "operator"),
])
def test_a_role_too_low_is_403_naming_the_role_needed(
        api: Api, role: str, method: str, path: str, body: object, needed: str) -> None:
    """A valid token without the right role gets 403 (not 401), saying which role is needed."""
    before = api.zone_file.read_bytes()
    response = api.http.request(method, path, json=body, headers=api.auth(role))
    assert response.status_code == 403
    assert f"has role {role}; this needs {needed}" in response.json()["error"]["message"]
    assert api.zone_file.read_bytes() == before


def test_revoked_token_stops_working(api: Api) -> None:
    """Deleting a token over the API makes it 401 at once; the secret is shown only on create."""
    created = api.http.post("/api/v1/tokens", json={"role": "reader", "name": "temp"},
                              headers=api.auth("admin"))
    assert created.status_code == 201
    secret = created.json()["token"]
    listed = api.get("/api/v1/tokens", "admin")
    assert all("token" not in t and "hash" not in t for t in listed)  # type: ignore[union-attr]
    who = api.http.get("/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert who.json() == {"token_id": created.json()["id"], "name": "temp", "role": "reader"}
    gone = api.http.delete(f"/api/v1/tokens/{created.json()['id']}", headers=api.auth())
    assert gone.status_code == 204
    again = api.http.get("/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert again.status_code == 401


def test_status_endpoints_need_no_token(api: Api) -> None:
    """/healthz, /readyz, /metrics, the dashboard and the OpenAPI document are open."""
    assert api.http.get("/healthz").json() == {"status": "ok"}
    ready = api.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "status": "ready", "not_ready": [], "checks": {
        "zones_loaded": True, "store_reachable": True, "listeners_up": True}, "degraded": {}}
    assert api.http.get("/metrics").status_code == 200
    page = api.http.get("/")
    assert page.status_code == 200 and "shadowdns" in page.text
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert api.http.get("/api/v1/openapi.json").json()["info"]["title"] == "shadowdns"


def test_an_expired_token_is_refused_with_401_and_an_unexpired_one_works(api: Api) -> None:
    """A token past its expiry gets 401 saying so; one created over the API with
    `expires_in` works and shows its expiry in the token list."""
    secret, row = new_token("reader", "old", now=time.time() - 3600, expires_in=60)
    api.in_store(api.service.store.add_token, row)
    refused = api.http.get("/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401 and "expired" in refused.text
    made = api.call("POST", "/api/v1/tokens", {"role": "reader", "expires_in": 3600},
                    role="admin")
    assert made.status_code == 201, made.text
    fresh = made.json()
    assert fresh["expires_at"] == pytest.approx(time.time() + 3600, abs=60)
    who = api.http.get("/api/v1/whoami", headers={"Authorization": f"Bearer {fresh['token']}"})
    assert who.status_code == 200
    listed = {t["id"]: t for t in api.get("/api/v1/tokens", role="admin")}
    assert listed[fresh["id"]]["expires_at"] == fresh["expires_at"]
    assert listed[row.id]["expires_at"] == row.expires_at
    bad = api.call("POST", "/api/v1/tokens", {"role": "reader", "expires_in": -5}, role="admin")
    assert bad.status_code == 422 and "expires_in" in bad.text
