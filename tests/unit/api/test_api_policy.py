"""DIs, resources and locations over the API: the policy file stays the source of truth."""

from __future__ import annotations

import dns.name
import yaml

from shadowdns.api.config_files import etag_of
from shadowdns.zones.policy_file import policy_from_text, policy_to_mapping
from tests.unit.api.support import ZONE, Api

BASE = f"/api/v1/zones/{ZONE}"
P_EU, P_US = "192.0.2.10", "198.51.100.10"


def test_lists_show_objects_in_the_policy_file_shape(api: Api) -> None:
    """DIs, resources and locations come back as the policy file writes them."""
    dis = api.get("/api/v1/dis")
    assert {d["name"] for d in dis} == {f"app.{ZONE}", f"shop.{ZONE}"}
    app = next(d for d in dis if d["name"] == f"app.{ZONE}")
    assert app["config"]["primaries"] == ["web-eu-1", "web-us-1"]
    resource = api.get(f"{BASE}/resources/sb-ap-1")
    assert resource["config"]["role"] == "standby"
    locations = api.get("/api/v1/locations")
    assert {loc["name"] for loc in locations} == {"eu-west", "us-east", "ap-east", "sa-east"}


def test_put_resource_validates_every_field_with_its_path(api: Api) -> None:
    """All bad fields of a resource are reported at once as body.<field>; nothing is written."""
    before = api.policy_file.read_bytes()
    response = api.call("PUT", f"{BASE}/resources/web-eu-1",
                        {"address": "1.2.3", "location": "nowhere", "role": "x",
                         "capacity": -1, "colour": "red"})
    assert response.status_code == 422
    paths = sorted(p["path"] for p in response.json()["error"]["problems"])
    assert paths == ["body", "body.address", "body.capacity", "body.location", "body.role"]
    assert api.policy_file.read_bytes() == before


def test_deleting_a_location_in_use_names_the_users(api: Api) -> None:
    """A location still used elsewhere cannot go: 422 with the policy paths that use it."""
    response = api.call("DELETE", f"{BASE}/locations/ap-east")
    assert response.status_code == 422
    paths = {p["path"] for p in response.json()["error"]["problems"]}
    assert "policy.resources.sb-ap-1.location" in paths


def test_new_di_answers_at_once_and_is_written_to_the_file(api: Api) -> None:
    """A DI created over the API is in the policy file and answers DNS immediately."""
    response = api.call("PUT", f"{BASE}/dis/api2", {"primaries": ["web-us-1"], "ttl": 20})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == f"api2.{ZONE}"
    assert api.ask(f"api2.{ZONE}") == [P_US]
    on_disk = yaml.safe_load(api.policy_file.read_text())
    assert on_disk["dis"]["api2"] == {"primaries": ["web-us-1"], "ttl": 20}
    assert api.call("DELETE", f"{BASE}/dis/api2.{ZONE}").status_code == 204
    assert api.ask(f"api2.{ZONE}") == []


def test_override_down_fails_over_and_survives_in_the_file(api: Api) -> None:
    """Pinning web-eu-1 down moves loopback (eu-west) clients to web-us-1; obey undoes it."""
    assert api.ask(f"app.{ZONE}") == [P_EU]
    response = api.call("PUT", f"{BASE}/resources/web-eu-1/override", {"override": "down"})
    assert response.status_code == 200, response.text
    assert api.ask(f"app.{ZONE}") == [P_US]
    assert yaml.safe_load(api.policy_file.read_text())["resources"]["web-eu-1"][
        "override"] == "down"
    health = {h["resource"]: h for h in api.get("/api/v1/health")}
    assert health["web-eu-1"]["state"] == "down"
    assert health["web-eu-1"]["override"] == "down"
    api.call("PUT", f"{BASE}/resources/web-eu-1/override", {"override": "obey"})
    assert api.ask(f"app.{ZONE}") == [P_EU]
    assert "override" not in yaml.safe_load(api.policy_file.read_text())["resources"][
        "web-eu-1"]


def test_whole_policy_round_trips(api: Api) -> None:
    """GET policy then PUT it back with its ETag succeeds; a stale ETag is 412."""
    got = api.http.get(f"{BASE}/policy", headers=api.auth("reader"))
    etag = got.headers["ETag"]
    policy = got.json()["policy"]
    ok = api.call("PUT", f"{BASE}/policy", policy, **{"If-Match": etag})
    assert ok.status_code == 200, ok.text
    api.call("PUT", f"{BASE}/dis/extra", {"primaries": ["web-eu-1"]})
    stale = api.call("PUT", f"{BASE}/policy", policy, **{"If-Match": ok.headers["ETag"]})
    assert stale.status_code == 412


def test_a_model_that_does_not_exist_is_422_naming_the_choices(api: Api) -> None:
    """policy.model takes the names `forecast predict --model` takes; prophet is none."""
    before = api.policy_file.read_bytes()
    response = api.call("PUT", f"{BASE}/dis/app",
                        {"primaries": ["web-eu-1"], "policy": {"model": "prophet"}})
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["problems"]
    assert problem["path"] == "body.policy.model"
    assert "prophet" in problem["message"] and "ets" in problem["message"]
    assert api.policy_file.read_bytes() == before
    ok = api.call("PUT", f"{BASE}/dis/app",
                  {"primaries": ["web-eu-1"], "policy": {"model": "ets"}})
    assert ok.status_code == 200, ok.text


def test_a_refused_edit_leaves_what_reads_show(api: Api) -> None:
    """Reads of an unchanged policy file are kept between requests; an edit refused (422)
    or deleted-then-refused changes neither the file nor what later reads show."""
    before = api.get(f"{BASE}/dis/app")
    listed = api.get("/api/v1/dis")
    response = api.call("PUT", f"{BASE}/dis/app", {"primaries": ["no-such-resource"]})
    assert response.status_code == 422, response.text
    response = api.call("PUT", f"{BASE}/dis/other", {"primaries": ["no-such-resource"]})
    assert response.status_code == 422, response.text
    response = api.call("DELETE", f"{BASE}/locations/ap-east")
    assert response.status_code == 422, response.text
    assert api.get(f"{BASE}/dis/app") == before
    assert api.get("/api/v1/dis") == listed
    assert "ap-east" in {loc["name"] for loc in api.get("/api/v1/locations")}
    assert api.get(f"/api/v1/zones/{ZONE}/policy")["policy"]["dis"]["app"] == before["config"]


def test_reads_after_edits_show_what_the_file_holds(api: Api) -> None:
    """After each kind of one-entry edit (a DI changed, added, deleted; a resource changed
    and overridden) the policy a read shows, in order and with its ETag, is exactly what a
    fresh read of the file gives, though the server no longer reads it whole each time."""
    def fresh() -> dict[str, object]:
        text = api.policy_file.read_text(encoding="utf-8")
        return policy_to_mapping(policy_from_text(text, dns.name.from_text(ZONE)))

    resource = api.get(f"{BASE}/resources/sb-ap-1")["config"]
    edits = [
        ("PUT", f"{BASE}/dis/app", {"primaries": ["web-us-1"], "ttl": 44}),
        ("PUT", f"{BASE}/dis/new1", {"primaries": ["web-eu-1"], "answers": 1}),
        ("DELETE", f"{BASE}/dis/shop", None),
        ("PUT", f"{BASE}/resources/sb-ap-1", {**resource, "capacity": 77.0}),
        ("PUT", f"{BASE}/resources/web-eu-1/override", {"override": "down"}),
        ("PUT", f"{BASE}/dis/new1", {"primaries": ["web-eu-1", "web-us-1"]}),
    ]
    for method, path, body in edits:
        response = api.call(method, path, body)
        assert response.status_code in (200, 201, 204), response.text
        shown = api.http.get(f"/api/v1/zones/{ZONE}/policy", headers=api.auth("reader"))
        expected = fresh()
        assert shown.json()["policy"] == expected, (method, path)
        assert list(shown.json()["policy"]["dis"]) == list(expected["dis"])  # type: ignore[call-overload]
        assert shown.headers["ETag"] == etag_of(expected)
