"""allocator.yaml in a running server: SIGHUP and the API change the running allocator at
once, and a bad file or body is refused with the field named while the old settings run."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.integration.test_api_server import ask
from tests.integration.test_reload_failures import wait_status
from tests.unit.api.support import ZONE, ServedApi, served_api

APP = f"app.{ZONE}"
SHADOW_EU = "192.0.2.20"  # sb-eu-2, the standby in the loopback client's region
START = "allocator:\n  mode: active\n  window: 5m\n"
PIN = (START + "  pins:\n"
       f"    - {{di: {APP}, resource: sb-eu-2, region: eu-west}}\n")
BAD = "allocator:\n  window: 5m\n  mode: sometimes\n  pins: [{di: app}]\n"


def fast_standbys(zones: Path) -> None:
    """The demo's standbys ready as soon as allocated (no 60 s warm-up), and allocator.yaml
    as START."""
    policy = zones / f"{ZONE[:-1]}.policy.yaml"
    policy.write_text(policy.read_text().replace("warmup: 60", "warmup: 0"))
    (zones / "allocator.yaml").write_text(START)


def until(what: Callable[[], Any], limit: float = 20.0) -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def allocations(http: httpx.Client, served: ServedApi) -> list[dict[str, Any]]:
    response = http.get("/api/v1/allocations", headers=served.auth("reader"))
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def test_sighup_applies_a_new_pin_and_refuses_a_bad_file_keeping_the_old(tmp_path: Path
                                                                          ) -> None:
    """A pin added to allocator.yaml and a SIGHUP make a shadow that answers over DNS; a
    broken file and another SIGHUP are refused at file:line with every reason, /readyz and
    the status say so, and the pin's settings keep running."""
    with served_api(tmp_path, prepare=fast_standbys) as served, \
            httpx.Client(base_url=served.url) as http:
        doc = http.get("/api/v1/allocator", headers=served.auth("reader")).json()
        assert doc["allocator"]["pins"] == [] and doc["file"]["state"] == "applied", doc
        assert ask(served, APP) != [SHADOW_EU]

        (served.zones / "allocator.yaml").write_text(PIN)
        served.server.signal(signal.SIGHUP)
        pinned = until(lambda: [a for a in allocations(http, served)
                                if a["resource"] == "sb-eu-2" and a["pinned"]])
        assert pinned and pinned[0]["region"] == "eu-west", allocations(http, served)
        assert '"why":"pin"' in pinned[0]["reason"]
        assert until(lambda: ask(served, APP) == [SHADOW_EU]), ask(served, APP)

        (served.zones / "allocator.yaml").write_text(BAD)
        served.server.signal(signal.SIGHUP)
        status = wait_status(http, served, "degraded")
        error = status["reload"]["error"]
        assert "allocator.yaml:3: allocator.mode" in error, error
        assert "allocator.yaml:4: allocator.pins[0]: missing resource" in error, error
        ready = http.get("/readyz").json()
        assert "allocator.yaml:3" in ready["degraded"]["config_reload_failed"], ready
        doc = http.get("/api/v1/allocator", headers=served.auth("reader")).json()
        assert doc["file"]["state"] == "invalid", doc
        assert [p["resource"] for p in doc["allocator"]["pins"]] == ["sb-eu-2"], doc
        assert doc["allocator"]["mode"] == "active"
        assert ask(served, APP) == [SHADOW_EU]

        (served.zones / "allocator.yaml").write_text(PIN.replace("window: 5m", "window: 10m"))
        served.server.signal(signal.SIGHUP)
        assert wait_status(http, served, "ready")["status"] == "ready"
        doc = http.get("/api/v1/allocator", headers=served.auth("reader")).json()
        assert doc["allocator"]["window"] == 600 and doc["file"]["state"] == "applied", doc
        served.server.wait_log(r"allocator: new settings: active, window 600s, 1 pin")


def test_the_api_edits_allocator_yaml_and_the_running_allocator_follows(tmp_path: Path
                                                                         ) -> None:
    """PUT /api/v1/allocator checks If-Match, names bad fields (422) and new hook commands
    (403) and writes nothing for them; a good one is written to the file, audited and run.
    A calendar event added through /allocator/events makes a shadow with the event as its
    reason; deleting it is a 204, then a 404."""
    with served_api(tmp_path, prepare=fast_standbys) as served, \
            httpx.Client(base_url=served.url) as http:
        op = served.auth("operator")
        got = http.get("/api/v1/allocator", headers=served.auth("reader"))
        etag, doc = got.headers["ETag"], got.json()["allocator"]
        assert http.put("/api/v1/allocator", json=doc,
                        headers=served.auth("reader")).status_code == 403
        stale = http.put("/api/v1/allocator", json=doc, headers={**op, "If-Match": '"x"'})
        assert stale.status_code == 412, stale.text

        bad = http.put("/api/v1/allocator", headers=op,
                       json={**doc, "window": "soon", "cost_caps": {"global": "lots"}})
        assert bad.status_code == 422, bad.text
        paths = {p["path"] for p in bad.json()["error"]["problems"]}
        assert paths == {"body.window", "body.cost_caps.global"}, bad.text
        hook = http.put("/api/v1/allocator", headers=op, json={
            **doc, "hooks": {"warmup": {"command": ["/bin/sh", "-c", "id"]}}})
        assert hook.status_code == 403, hook.text
        assert hook.json()["error"]["problems"][0]["path"] == "body.hooks.warmup.command"
        assert (served.zones / "allocator.yaml").read_text() == START

        good = http.put("/api/v1/allocator", headers={**op, "If-Match": etag},
                        json={**doc, "cost_caps": {"regions": {"sa-east": 4}}})
        assert good.status_code == 200, good.text
        assert good.headers["ETag"] != etag
        assert good.json()["allocator"]["cost_caps"] == {"regions": {"sa-east": 4.0}}
        assert good.json()["file"]["state"] == "applied"
        assert "sa-east: 4.0" in (served.zones / "allocator.yaml").read_text()
        audit = http.get("/api/v1/audit", headers=served.auth("admin")).json()
        assert any(e["action"] == "allocator.replace" for e in audit), audit

        missing = http.post("/api/v1/allocator/events", headers=op,
                            json={"di": APP, "region": "sa-east"})
        assert missing.status_code == 422, missing.text
        assert missing.json()["error"]["problems"][0]["path"] == "body"
        assert "missing start" in missing.text
        now = time.time()
        event = {"di": APP, "region": "sa-east", "start": now - 60, "end": now + 86400,
                 "demand": 100}
        added = http.post("/api/v1/allocator/events", headers=op, json=event)
        assert added.status_code == 201, added.text
        item = added.json()
        assert http.post("/api/v1/allocator/events", headers=op,
                         json=event).status_code == 409
        listed = http.get("/api/v1/allocator/events", headers=served.auth("reader")).json()
        assert listed == [item]
        shadow = until(lambda: [a for a in allocations(http, served)
                                if a["region"] == "sa-east" and '"why":"event"' in a["reason"]])
        assert shadow and shadow[0]["resource"] == "sb-sa-1", allocations(http, served)

        gone = http.delete(f"/api/v1/allocator/events/{item['id']}", headers=op)
        assert gone.status_code == 204, gone.text
        assert http.delete(f"/api/v1/allocator/events/{item['id']}",
                           headers=op).status_code == 404
        assert http.get("/api/v1/allocator/events", headers=served.auth("reader")).json() == []
        assert "events" not in (served.zones / "allocator.yaml").read_text()

        unknown = http.post("/api/v1/allocator/pins", headers=op,
                            json={"di": APP, "resource": "sb-xx", "region": "mars"})
        assert unknown.status_code == 422, unknown.text
        assert {p["path"] for p in unknown.json()["error"]["problems"]} == {
            "body.resource", "body.region"}
        pin = http.post("/api/v1/allocator/pins", headers=op,
                        json={"di": APP, "resource": "sb-eu-2", "region": "eu-west"})
        assert pin.status_code == 201, pin.text
        assert until(lambda: ask(served, APP) == [SHADOW_EU]), ask(served, APP)
        unpinned = http.delete(f"/api/v1/allocator/pins/{pin.json()['id']}", headers=op)
        assert unpinned.status_code == 204, unpinned.text
        assert until(lambda: [a for a in allocations(http, served)
                              if a["resource"] == "sb-eu-2" and a["state"] == "draining"])
