"""End to end: the forecast, not observed demand, puts a shadow in place before a surge.

The real server runs with minute buckets and a one-second allocation window (legitimate
configuration that compresses time). Its store holds six hours of a timer-driven service's
demand from Japan: two busy minutes every quarter hour, nothing in between. The server is
started in a quiet stretch five minutes before the next surge, with a lead time of five
minutes: the last bucket it observed is quiet, so the reactive rule sees nothing to do. The
demand book finds the 15-minute period, forecasts the surge, and the allocator lends the
Japanese standby ahead of it; the shadow warms up, turns ready and answers over the wire
long before the surge arrives, and its recorded reason says it was the forecast. With
`plan_on: observed` (forecasts off), the same server keeps answering from the primary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from shadowdns.store import DemandRow, open_store
from tests.integration.test_failover_e2e import (
    JP,
    P_HOME,
    POLICY,
    S_JP,
    Backend,
    answer,
    serve,
    wait_answer,
)

LEAD = 300
PERIOD = 15  # minutes
START_BY = 45  # second of the minute the history is written by (the server starts in it)


def setup(tmp: Path, backend: Backend, tcp: int, plan_on: str) -> tuple[Path, Path, int]:
    """Zones, allocator settings and a state with periodic history; returns the start of
    the next surge (epoch seconds)."""
    zones = tmp / "zones"
    zones.mkdir()
    (zones / "fo.test.zone").write_text(
        "$ORIGIN fo.test.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n"
        "@ NS ns1\nns1 A 192.0.2.1\n")
    policy = POLICY.format(p_home=P_HOME, s_jp=S_JP, tcp=tcp, http=backend.port, i=0.5,
                           rise=1, fall=2)
    (zones / "fo.test.policy.yaml").write_text(
        policy.replace("lead_time: 0", f"lead_time: {LEAD}"))
    (zones / "allocator.yaml").write_text(
        "allocator:\n  mode: active\n  window: 1s\n  bucket: 1m\n  tick: 0.2\n"
        f"  plan_on: {plan_on}\n  hooks:\n"
        f"    warmup: {{url: \"http://127.0.0.1:{backend.port}/warmup\"}}\n")
    if time.time() % 60 > START_BY:
        # started later, the server would plan in the surge's second minute: its shadow,
        # ready a lead time later, could serve only that minute, too little to pay
        time.sleep(60.5 - time.time() % 60)
    now = time.time()
    this_minute = int(now // 60) * 60
    # the surge's first minute is the one the lead time points into now; its second
    # minute keeps [now + lead, ...] inside the surge for at least a minute
    surge = int((now + LEAD) // 60) * 60
    state = tmp / "state.db"
    store = open_store(str(state))
    rows = []
    for minutes_ago in range(1, 6 * 60):
        start = this_minute - 60 * minutes_ago
        phase = ((surge - start) // 60) % PERIOD
        busy = phase in (0, PERIOD - 1)  # the surge minute and the one after it
        rows.append(DemandRow("app.fo.test.", "jp", start, "primary", 300 if busy else 0))
    try:
        store.add_demand([r for r in rows if r.queries])
    finally:
        store.close()
    return zones, state, surge


def allocations(state: Path) -> list[dict[str, object]]:
    store = open_store(str(state))
    try:
        return [{"resource": a.resource, "region": a.region, "state": a.state,
                 "reason": json.loads(a.reason)} for a in store.list_allocations(True, None)]
    finally:
        store.close()


def test_the_forecast_places_the_shadow_before_the_surge(
        tmp_path: Path, backend: Backend, tcp_listener: int) -> None:
    zones, state, surge = setup(tmp_path, backend, tcp_listener, "forecast")
    assert time.time() < surge - 60 * 3  # the test starts in the quiet stretch
    server = serve(zones, state)
    try:
        wait_answer(server, JP, [S_JP], 60)
        answered = time.time()
        [shadow] = [a for a in allocations(state) if a["resource"] == "s-jp"]
        reason = shadow["reason"]
        assert isinstance(reason, dict)
        assert reason["why"] == "forecast", reason
        assert reason["observed"] == 0.0, reason  # the last bucket was quiet
        assert float(reason["predicted"]) >= 50, reason
        window_start = reason["window"][0]  # type: ignore[index]
        assert surge - 60 <= window_start < surge + 120, (reason, surge)
        assert answered < surge - 60, "the shadow answered less than a minute before the surge"
        assert backend.posts and backend.posts[0]["resource"] == "s-jp"  # warmed up first
    finally:
        server.stop()


def test_without_forecasts_nothing_moves_before_the_surge(
        tmp_path: Path, backend: Backend, tcp_listener: int) -> None:
    zones, state, surge = setup(tmp_path, backend, tcp_listener, "observed")
    server = serve(zones, state)
    try:
        server.wait_log(r"allocator: active")
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert answer(server, JP) == [P_HOME]
            time.sleep(0.25)
        assert time.time() < surge - 60
        assert not [a for a in allocations(state) if a["resource"] == "s-jp"]
    finally:
        server.stop()
