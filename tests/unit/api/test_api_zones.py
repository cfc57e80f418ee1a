"""Zones and RRsets over the API: every change is validated, atomic, bumps the serial and
shows in DNS answers as soon as the request returns."""

from __future__ import annotations

import time

import dns.zone
import pytest

from tests.unit.api.support import ZONE, Api

RRSETS = f"/api/v1/zones/{ZONE}/rrsets"


def serial(api: Api) -> int:
    return int(api.get(f"/api/v1/zones/{ZONE}")["serial"])


def test_list_and_get_zone_with_etag(api: Api) -> None:
    """The zone list shows the served zone; GET of one zone carries an ETag."""
    zones = api.get("/api/v1/zones")
    assert [z["origin"] for z in zones] == [ZONE]
    assert zones[0]["dis"] == 2 and zones[0]["policy"] is True
    response = api.http.get(f"/api/v1/zones/{ZONE}", headers=api.auth("reader"))
    assert response.headers["ETag"].startswith('"')


def test_put_rrset_changes_dns_within_a_second_and_bumps_serial(api: Api) -> None:
    """Replacing www A is answered by the DNS listener right away, with a newer serial."""
    assert api.ask(f"www.{ZONE}") == ["192.0.2.80"]
    before = serial(api)
    start = time.monotonic()
    response = api.call("PUT", f"{RRSETS}/www/A", {"ttl": 60, "rdata": ["192.0.2.99"]})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": f"www.{ZONE}", "type": "A", "ttl": 60,
                               "rdata": ["192.0.2.99"]}
    assert api.ask(f"www.{ZONE}") == ["192.0.2.99"]
    assert time.monotonic() - start < 1.0
    assert serial(api) == before + 1
    on_disk = dns.zone.from_file(str(api.zone_file), ZONE, relativize=False)
    assert on_disk.get_rdataset(f"www.{ZONE}", "A")[0].to_text() == "192.0.2.99"


def test_create_list_and_delete_rrset(api: Api) -> None:
    """POST adds an RRset (409 when it exists), GET lists it, DELETE removes it from DNS."""
    body = {"name": "new", "type": "TXT", "ttl": 120, "rdata": ['"hello world"']}
    created = api.call("POST", RRSETS, body)
    assert created.status_code == 201, created.text
    assert api.call("POST", RRSETS, body).status_code == 409
    listed = api.get(RRSETS, name="new", type="TXT")
    assert listed == [{"name": f"new.{ZONE}", "type": "TXT", "ttl": 120,
                       "rdata": ['"hello world"']}]
    assert api.ask(f"new.{ZONE}", "TXT") == ['"hello world"']
    assert api.call("DELETE", f"{RRSETS}/new/TXT").status_code == 204
    assert api.ask(f"new.{ZONE}", "TXT") == []
    assert api.call("DELETE", f"{RRSETS}/new/TXT").status_code == 404


def test_bad_rdata_is_422_with_every_bad_item_and_writes_nothing(api: Api) -> None:
    """Each unparsable rdata is named by its index; the file is untouched."""
    before = api.zone_file.read_bytes()
    response = api.call("PUT", f"{RRSETS}/www/A",
                        {"ttl": 60, "rdata": ["192.0.2.1", "not-an-ip", "300.1.1.1"]})
    assert response.status_code == 422
    paths = [p["path"] for p in response.json()["error"]["problems"]]
    assert paths == ["body.rdata.1", "body.rdata.2"]
    assert api.zone_file.read_bytes() == before


@pytest.mark.parametrize(("rdtype", "rdata", "message"), [
    ("A", ["192.0.2.1\n192.0.2.2"], "line break"),
    ("TXT", ["v=1; p=x"], "starts a comment"),
    ("TXT", ['"a" "b"\r'], "line break"),
    ("TXT", [" ".join(['"' + "x" * 255 + '"'] * 300)], "at most 65535"),
    ("TXT", [" ".join(['"' + "x" * 255 + '"'] * 200)] * 2, "no DNS message could carry"),
])
def test_rdata_that_would_be_cut_or_cannot_be_sent_is_422(api: Api, rdtype: str,
                                                           rdata: list[str], message: str) -> None:
    """Record data the master-file format would cut short (a line break, a `;` comment
    outside quotes) or that no DNS message could carry is refused, naming the item; the
    file is untouched. A quoted `;` is data and is kept."""
    before = api.zone_file.read_bytes()
    response = api.call("PUT", f"{RRSETS}/txt1/{rdtype}", {"ttl": 60, "rdata": rdata})
    assert response.status_code == 422, response.text
    assert message in response.text
    assert api.zone_file.read_bytes() == before
    kept = api.call("PUT", f"{RRSETS}/txt1/TXT", {"ttl": 60, "rdata": ['"v=1; p=x"']})
    assert kept.status_code in (200, 201), kept.text
    assert kept.json()["rdata"] == ['"v=1; p=x"']


@pytest.mark.parametrize(("body", "paths"), [
    ({"ttl": -1, "rdata": []}, ["body.ttl", "body.rdata"]),
    ({"rdata": ["192.0.2.1"]}, ["body.ttl"]),
])
def test_body_schema_errors_name_each_field(api: Api, body: object, paths: list[str]) -> None:
    """Schema violations are 422 with the path of every bad field."""
    response = api.call("PUT", f"{RRSETS}/www/A", body)
    assert response.status_code == 422
    assert sorted(p["path"] for p in response.json()["error"]["problems"]) == sorted(paths)


def test_if_match_detects_concurrent_edits(api: Api) -> None:
    """A change based on a stale ETag is 412 and writes nothing; the fresh ETag works."""
    first = api.http.get(f"{RRSETS}/www/A", headers=api.auth("reader"))
    etag = first.headers["ETag"]
    ok = api.call("PUT", f"{RRSETS}/www/A", {"ttl": 60, "rdata": ["192.0.2.50"]},
                  **{"If-Match": etag})
    assert ok.status_code == 200
    stale = api.call("PUT", f"{RRSETS}/www/A", {"ttl": 60, "rdata": ["192.0.2.51"]},
                     **{"If-Match": etag})
    assert stale.status_code == 412
    assert api.ask(f"www.{ZONE}") == ["192.0.2.50"]
    fresh = api.call("DELETE", f"{RRSETS}/www/A", **{"If-Match": ok.headers["ETag"]})
    assert fresh.status_code == 204


def test_change_the_server_refuses_is_rolled_back(api: Api) -> None:
    """A delegation at a DI's name passes the zone loader but not the reload (the DI would
    sit below the cut): 409 with the reload's reason, files restored."""
    zone_before = api.zone_file.read_bytes()
    policy_before = api.policy_file.read_bytes()
    text = zone_before.decode() + "app 300 IN NS ns.elsewhere.test.\n"
    response = api.call("PUT", f"/api/v1/zones/{ZONE}", {"text": text}, role="admin")
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "rejected"
    assert any("delegation" in p["message"] for p in error["problems"]), error
    assert api.zone_file.read_bytes() == zone_before
    assert api.policy_file.read_bytes() == policy_before
    assert api.ask(f"app.{ZONE}") != []


def test_imported_static_record_at_a_di_is_409_at_its_line_of_the_text(api: Api) -> None:
    """Zone text with a static A at a DI's name is refused before anything is written, at
    the line of the text sent (the file as the API would rewrite it has other lines)."""
    before = api.zone_file.read_bytes()
    text = before.decode().rstrip("\n") + "\napp 300 IN A 192.0.2.7"  # no final newline
    line = text.count("\n") + 1
    response = api.call("PUT", f"/api/v1/zones/{ZONE}", {"text": text}, role="admin")
    assert response.status_code == 409, response.text
    [problem] = response.json()["error"]["problems"]
    assert problem["line"] == line and "static A" in problem["message"], problem
    assert api.zone_file.read_bytes() == before


def test_zone_text_problems_carry_lines(api: Api) -> None:
    """An invalid master file on import is 422 with the line of each problem."""
    text = f"$ORIGIN {ZONE}\n@ 300 IN SOA ns1 hostmaster 1 2 3 4 5\n@ 300 IN NS ns1\n" \
           "www 300 IN A 999.1.1.1\n"
    response = api.call("PUT", f"/api/v1/zones/{ZONE}", {"text": text}, role="admin")
    assert response.status_code == 422
    problem = response.json()["error"]["problems"][0]
    assert problem["path"] == "body.text" and problem["line"] == 4


def test_export_import_round_trip_keeps_the_serial_increasing(api: Api) -> None:
    """Exporting and re-importing the same text still bumps the serial (admin only)."""
    text = api.http.get(f"/api/v1/zones/{ZONE}/export", headers=api.auth("reader")).text
    assert "$ORIGIN demo.shadowdns.test." in text
    before = serial(api)
    assert api.call("PUT", f"/api/v1/zones/{ZONE}", {"text": text}).status_code == 403
    response = api.call("PUT", f"/api/v1/zones/{ZONE}", {"text": text}, role="admin")
    assert response.status_code == 200, response.text
    assert response.json()["serial"] == before + 1


def test_create_and_delete_a_zone(api: Api) -> None:
    """A new empty zone answers SOA at once; deleting it (admin) removes it and its file."""
    created = api.call("POST", "/api/v1/zones",
                       {"origin": "new.test.", "nameservers": ["ns1.new.test."]})
    assert created.status_code == 201, created.text
    assert created.json()["serial"] == 1
    assert len(api.ask("new.test.", "SOA")) == 1
    assert api.call("POST", "/api/v1/zones", {"origin": "new.test."}).status_code == 409
    assert api.call("DELETE", "/api/v1/zones/new.test.").status_code == 403
    assert api.call("DELETE", "/api/v1/zones/new.test.", role="admin").status_code == 204
    assert not (api.zones / "new.test.zone").exists()
    assert api.call("GET", "/api/v1/zones/new.test.", role="reader").status_code == 404


def test_every_change_is_audited_with_before_and_after(api: Api) -> None:
    """The audit log names the token, the action, the object and both versions."""
    api.call("PUT", f"{RRSETS}/www/A", {"ttl": 60, "rdata": ["192.0.2.7"]})
    entries = api.get("/api/v1/audit", role="operator")
    last = entries[-1]
    assert last["action"] == "rrset.replace"
    assert last["object"] == f"rrset:www.{ZONE}/A"
    assert last["token_id"] == api.tokens["operator"].split("_")[1]
    assert last["before"]["rdata"] == ["192.0.2.80"]
    assert last["after"]["rdata"] == ["192.0.2.7"]


def test_zone_names_that_are_no_safe_file_name_are_refused(api: Api) -> None:
    """A label with '/' is valid DNS but would escape the zones directory: 422, no file."""
    response = api.call("POST", "/api/v1/zones", {"origin": "a/b.test."})
    assert response.status_code == 422
    assert response.json()["error"]["problems"][0]["path"] == "body.origin"
    assert sorted(p.name for p in api.zones.iterdir()) == [
        "demo.shadowdns.test.policy.yaml", "demo.shadowdns.test.zone"]


@pytest.mark.parametrize(("method", "path", "body", "in_the_way"), [
    # a CNAME at mail (A, and the apex MX points at it) would delete its A
    ("POST", RRSETS, {"name": "mail", "type": "CNAME", "ttl": 60, "rdata": ["www"]},
     [f"mail.{ZONE} A"]),
    ("PUT", f"{RRSETS}/mail/CNAME", {"ttl": 60, "rdata": ["www"]}, [f"mail.{ZONE} A"]),
    # an A at api (a CNAME) would delete the CNAME
    ("POST", RRSETS, {"name": "api", "type": "A", "ttl": 60, "rdata": ["192.0.2.7"]},
     [f"api.{ZONE} CNAME"]),
    ("PUT", f"{RRSETS}/api/TXT", {"ttl": 60, "rdata": ['"x"']}, [f"api.{ZONE} CNAME"]),
    # a CNAME at the apex
    ("POST", RRSETS, {"name": "@", "type": "CNAME", "ttl": 60, "rdata": ["www"]},
     [f"{ZONE} MX", f"{ZONE} NS", f"{ZONE} SOA"]),
    # a static A at a DI's name would never be served
    ("POST", RRSETS, {"name": "app", "type": "A", "ttl": 60, "rdata": ["192.0.2.7"]},
     [f"the DI app.{ZONE}"]),
    ("PUT", f"{RRSETS}/shop/AAAA", {"ttl": 60, "rdata": ["2001:db8::7"]},
     [f"the DI shop.{ZONE}"]),
])
def test_edit_that_would_destroy_or_hide_data_is_409_and_changes_nothing(
        api: Api, method: str, path: str, body: dict[str, object],
        in_the_way: list[str]) -> None:
    """A clash with the records at a name (RFC 1034 §3.6.2, RFC 2181 §10.1) or with a DI is
    refused with 409 naming what is in the way; the file, the serial and the DNS answers
    stay as they were."""
    before_file = api.zone_file.read_bytes()
    before_serial = serial(api)
    answers = {(name, rdtype): api.ask(f"{name}.{ZONE}", rdtype) for name, rdtype in (
        ("mail", "A"), ("api", "CNAME"), ("app", "A"), ("shop", "AAAA"))}
    response = api.call(method, path, body)
    assert response.status_code == 409, response.text
    message = response.json()["error"]["message"]
    for record in in_the_way:
        assert record in message, message
    assert "nothing was changed" in message
    assert api.zone_file.read_bytes() == before_file
    assert serial(api) == before_serial
    for (name, rdtype), old in answers.items():
        assert old, (name, rdtype)
        assert api.ask(f"{name}.{ZONE}", rdtype) == old, (name, rdtype)


def test_a_record_beside_a_cname_companion_type_is_still_accepted(api: Api) -> None:
    """What the rules allow still works: a TXT beside an A at the same name."""
    response = api.call("POST", RRSETS, {"name": "mail", "type": "TXT", "ttl": 60,
                                         "rdata": ['"v=spf1 -all"']})
    assert response.status_code == 201, response.text
    assert api.ask(f"mail.{ZONE}") == ["192.0.2.25"]


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("PUT", f"{RRSETS}/www/A", {"ttl": 60, "rdata": ["192.0.2.1"], "tll": 5}, "body.tll"),
    ("POST", RRSETS, {"name": "n", "type": "A", "ttl": 60, "rdata": ["192.0.2.1"],
                      "comment": "x"}, "body.comment"),
])
def test_unknown_fields_are_422_naming_the_field(api: Api, method: str, path: str,
                                                  body: dict[str, object], field: str) -> None:
    """A misspelt or unknown field is refused, not dropped while the rest is applied."""
    before = api.zone_file.read_bytes()
    response = api.call(method, path, body)
    assert response.status_code == 422, response.text
    problems = response.json()["error"]["problems"]
    assert [p["path"] for p in problems] == [field]
    assert "unknown field" in problems[0]["message"]
    assert api.zone_file.read_bytes() == before
