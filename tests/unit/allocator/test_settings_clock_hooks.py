"""allocator.yaml validation, the simulated clock, and command hooks."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from shadowdns.allocator.hooks import HookPayload, HookRunner
from shadowdns.allocator.settings import AllocatorSettings, Hook, parse_duration
from shadowdns.clock import SimulatedClock
from shadowdns.errors import ConfigError


def test_settings_file_is_read_with_durations_pins_events_and_hooks(tmp_path: Path) -> None:
    """A full allocator.yaml turns into the values it says; no file means defaults."""
    assert AllocatorSettings.load(tmp_path) == AllocatorSettings()
    (tmp_path / "allocator.yaml").write_text(
        "allocator:\n"
        "  mode: preview\n  window: 2m\n  bucket: 1m\n  topup_after: 2\n"
        "  cost_caps: {global: 10, regions: {jp: 3}}\n"
        "  hooks: {warmup: {url: 'http://127.0.0.1:9/w', command: [/bin/true]}}\n"
        "  pins: [{di: app.example.com, resource: s-jp, region: jp}]\n"
        "  events: [{di: app.example.com., region: br, start: '2026-01-01T10:00:00',"
        " end: '2026-01-01T12:00:00', demand: 500}]\n")
    s = AllocatorSettings.load(tmp_path)
    assert (s.mode, s.window, s.bucket, s.topup_after) == ("preview", 120.0, 60, 2)
    assert s.global_cost_cap == 10 and s.region_cost_caps == {"jp": 3.0}
    assert s.warmup_hook == Hook("http://127.0.0.1:9/w", ("/bin/true",))
    assert s.pins[0].di == "app.example.com." and s.events[0].demand == 500
    assert s.events[0].end - s.events[0].start == 7200


def test_every_problem_of_the_settings_is_listed() -> None:
    """Unknown keys, bad durations and modes are all reported in one error."""
    with pytest.raises(ConfigError) as err:
        AllocatorSettings.from_mapping({"allocator": {"mode": "on", "window": "soon",
                                                      "colour": 1}}, "a.yaml")
    text = str(err.value)
    assert "allocator.mode" in text and "allocator.window" in text and "colour" in text
    assert [parse_duration(v) for v in (90, "90s", "15m", "2h", "1d")] == [
        90, 90, 900, 7200, 86400]


def test_simulated_clock_wakes_sleepers_in_order() -> None:
    """Sleepers wake when time passes their deadline, in deadline order; time never
    moves on its own."""
    clock = SimulatedClock(100.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    async def scenario() -> None:
        tasks = [asyncio.create_task(sleeper("b", 5)), asyncio.create_task(sleeper("a", 2))]
        await asyncio.sleep(0)
        assert clock.sleepers == 2
        await clock.advance(3)
        assert woke == [("a", 102.0)] and clock.now() == 103.0
        await clock.advance(10)
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert woke == [("a", 102.0), ("b", 105.0)]
    with pytest.raises(ValueError):
        clock.set(0)


def test_command_hook_gets_json_and_environment(tmp_path: Path) -> None:
    """A command hook receives the payload as JSON on stdin and SHADOWDNS_* variables;
    a failing one is recorded, not raised."""
    out = tmp_path / "out.json"
    script = ("import json, os, sys; d = json.load(sys.stdin); "
              f"d['env'] = os.environ['SHADOWDNS_RESOURCE']; open({str(out)!r}, 'w')"
              ".write(json.dumps(d))")
    runner = HookRunner()

    async def scenario() -> None:
        runner.fire(Hook(command=(sys.executable, "-c", script)),
                    HookPayload("warmup", "app.", "s-jp", "jp", 7, 1000.0, 3))
        runner.fire(Hook(command=(sys.executable, "-c", "raise SystemExit(2)")),
                    HookPayload("drain", "app.", "s-jp", "jp", 7, None, 3))
        await runner.drain()

    asyncio.run(scenario())
    assert json.loads(out.read_text()) == {
        "event": "warmup", "di": "app.", "resource": "s-jp", "region": "jp", "allocation": 7,
        "ready_by": 1000.0, "generation": 3, "env": "s-jp"}
    assert sorted((c.event, c.ok) for c in runner.calls) == [("drain", False), ("warmup", True)]


@pytest.mark.parametrize("raw", [
    {},
    {"mode": "preview", "window": "2m", "cost_caps": {"global": 10, "regions": {"jp": 3}},
     "hooks": {"warmup": {"url": "http://127.0.0.1:9/w", "command": ["/bin/true"]}},
     "pins": [{"di": "app.example.com", "resource": "s", "region": "jp",
               "until": "2026-12-01T00:00:00"}],
     "events": [{"di": "a.example.", "region": "br", "start": 1_700_000_000,
                 "end": "2026-01-01T12:00:00Z", "demand": 5}]},
], ids=["defaults", "everything"])
def test_settings_round_trip_through_their_config(raw: dict[str, object]) -> None:
    """`to_config` (every key, or only those off the defaults) reads back to the same
    settings: what the API shows can be sent back unchanged."""
    settings = AllocatorSettings.from_mapping({"allocator": raw})
    for defaults in (True, False):
        assert AllocatorSettings.from_mapping(settings.to_config(defaults)) == settings


@pytest.mark.parametrize(("raw", "reason"), [
    ({"serve_well_km": float("nan")}, "allocator.serve_well_km: nan is not a finite number"),
    ({"cost_caps": {"global": float("inf")}}, "allocator.cost_caps.global"),
    ({"events": [{"di": "a" * 70, "region": "x", "start": 1, "end": 2}]},
     "allocator.events[0]: " + repr("a" * 70) + " is not a DNS name"),
    ({"hooks": {"drain": {"command": 5}}}, "allocator.hooks.drain.command"),
    ({"hooks": {"drain": {"url": "file:///etc/passwd"}}}, "allocator.hooks.drain.url"),
    ({"pins": [{"di": "a."}]}, "allocator.pins[0]: missing resource"),
], ids=["nan", "infinite-cap", "long-label", "command-not-list", "url-scheme", "missing"])
def test_bad_values_are_problems_not_crashes(raw: dict[str, object], reason: str) -> None:
    """Input the API or a file can carry is reported as a problem naming its key."""
    with pytest.raises(ConfigError) as err:
        AllocatorSettings.from_mapping(raw)
    assert reason in str(err.value)


def test_problems_in_list_items_carry_the_line_of_the_item(tmp_path: Path) -> None:
    """A bad pin or event is reported at its own line of allocator.yaml."""
    (tmp_path / "allocator.yaml").write_text(
        "allocator:\n  pins:\n    - {di: a., resource: r, region: x}\n    - {di: b.}\n")
    with pytest.raises(ConfigError) as err:
        AllocatorSettings.load(tmp_path)
    assert [(p.line, p.reason) for p in err.value.problems] == [
        (4, "allocator.pins[1]: missing resource")]


def test_a_bare_off_is_mode_off(tmp_path: Path) -> None:
    """`mode: off` unquoted (YAML reads it as false) means off, as the docs write it."""
    (tmp_path / "allocator.yaml").write_text("allocator: {mode: off}\n")
    assert AllocatorSettings.load(tmp_path).mode == "off"
