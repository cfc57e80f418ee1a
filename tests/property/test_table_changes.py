"""Property test of the answer table under change: after any sequence of changes (shadows
allocated and released, resources going down and up, TTL cuts, zone edits, edits of DI
entries and resources that recompile only their DIs), every answer
the fast path gives from its table — kept across live changes, dropped only for the DIs a
change touches, filled ahead by the prewarm or compiled on a miss — is byte for byte the
answer of the dnspython slow path and of a fresh engine that never saw the earlier states.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dns.edns
import dns.message
import dns.name
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowdns.resolver.engine import QueryEngine
from shadowdns.resolver.prewarm import Prewarm
from shadowdns.resolver.reload_scope import reload_scope
from shadowdns.resolver.routing import Shadow
from shadowdns.resolver.snapshot import (
    Config,
    LiveState,
    ResourceUsers,
    build_snapshot,
    load_config,
)

ZONE = """\
$ORIGIN ch.test.
$TTL 300
@ SOA ns hostmaster 1 3600 600 86400 60
@ NS ns
ns A 192.0.2.53
www A {www}
mail A 192.0.2.25
@ MX 10 mail
alias CNAME d0
deep.er TXT "ent above"
*.wild A 192.0.2.77
"""
POLICY = """\
locations:
  eu: {lat: 52.37, lon: 4.9, continent: EU}
  na: {lat: 38.9, lon: -77.04, continent: NA}
  ap: {lat: 35.68, lon: 139.69, continent: AS}
regions:
  cidr: {"10.1.0.0/16": eu, "10.2.0.0/16": na, "10.3.0.0/16": ap}
  default: eu
resources:
  p0-eu: {address: 192.0.2.10, address6: "2001:db8::10", location: eu, role: primary}
  p0-na: {address: 198.51.100.10, address6: "2001:db8::11", location: na, role: primary}
  p1-eu: {address: 192.0.2.20, location: eu, role: primary}
  p1-ap: {address: 203.0.113.20, address6: "2001:db8::21", location: ap, role: primary}
  p2-na: {address: 198.51.100.30, location: na, role: primary}
  p3-eu: {address: 192.0.2.40, address6: "2001:db8::40", location: eu, role: primary}
  p3-ap: {address: 203.0.113.40, address6: "2001:db8::41", location: ap, role: primary}
  s-ap: {address: 203.0.113.99, address6: "2001:db8::99", location: ap, role: standby}
  s-na: {address: 198.51.100.99, location: na, role: standby}
dis:
  d0: {primaries: [p0-eu, p0-na], standby: [s-ap, s-na], ttl: 60}
  d1: {primaries: [p1-eu, p1-ap], standby: [s-na], ttl: 30, all_down: nodata}
  d2: {primaries: [p2-na], standby: [s-ap], ttl: 45, answers: 2}
  d3: {primaries: [p3-eu, p3-ap], standby: [s-ap, s-na], ttl: 60, answers: 2}
"""
# Edits of DI entries and resources alone (`reload_scope`: only their DIs recompile); each
# op turns one on or off.
EDITS: dict[str, tuple[str, str]] = {
    "ttl": ("  d2: {primaries: [p2-na], standby: [s-ap], ttl: 45, answers: 2}\n",
            "  d2: {primaries: [p2-na], standby: [s-ap], ttl: 90, answers: 2}\n"),
    "answers": ("  d0: {primaries: [p0-eu, p0-na], standby: [s-ap, s-na], ttl: 60}\n",
                "  d0: {primaries: [p0-eu, p0-na], standby: [s-ap, s-na], ttl: 60, "
                "answers: 2}\n"),
    "address": ("  p2-na: {address: 198.51.100.30,", "  p2-na: {address: 198.51.100.31,"),
    "standby": ("  s-ap: {address: 203.0.113.99,", "  s-ap: {address: 203.0.113.98,"),
    "remove": ("  d3: {primaries: [p3-eu, p3-ap], standby: [s-ap, s-na], ttl: 60, answers: 2}\n",
               ""),
    "add": ("dis:\n", "dis:\n  d4: {primaries: [p1-ap, p0-na], ttl: 20}\n"),
    "cname": ("  d0: {primaries: [p0-eu, p0-na], standby: [s-ap, s-na], ttl: 60}\n", ""),
    "wild": ("dis:\n", "dis:\n  a.wild: {primaries: [p2-na], ttl: 20}\n"),
    "case": ("  d1: {", "  D1: {"),
}
# edits after which everything recompiles: d0 is alias's CNAME target, a.wild is below a
# wildcard's parent (x.a.wild stops being synthesised), D1 is d1 in other letters (equal
# names, other text: the store's rows are rewritten whole)
WHOLE = {"cname", "wild", "case"}


def policy_text(edits: frozenset[str]) -> str:
    text = POLICY
    for name in sorted(edits, key=lambda e: e != "cname"):  # d0 gone: "answers" is moot
        old, new = EDITS[name]
        if old in text:
            text = text.replace(old, new)
    return text


DIS = ["d0.ch.test.", "d1.ch.test.", "d2.ch.test.", "d3.ch.test."]
RESOURCES = ["p0-eu", "p0-na", "p1-eu", "p1-ap", "p2-na", "p3-eu", "p3-ap", "s-ap", "s-na"]
REGIONS = ["eu", "na", "ap"]
SUBNETS = [None, "10.1.7.0/24", "10.2.7.0/24", "10.3.7.0/24"]
NAMES = [*DIS, "d4.ch.test.", "a.wild.ch.test.", "x.a.wild.ch.test.", "alias.ch.test.",
         "www.ch.test.", "ch.test.", "mail.ch.test.", "er.ch.test.", "nx.ch.test.",
         "nx.deep.er.ch.test.", "D0.CH.test."]
QTYPES = ["A", "AAAA", "MX", "TXT"]

change = st.one_of(
    st.tuples(st.just("shadow"), st.sampled_from(DIS), st.sampled_from(["s-ap", "s-na"]),
              st.sampled_from(REGIONS)),
    st.tuples(st.just("down"), st.sampled_from(RESOURCES)),
    st.tuples(st.just("ttl"), st.sampled_from(DIS), st.sampled_from(REGIONS),
              st.sampled_from([None, 5, 10])),
    st.tuples(st.just("edit"), st.sampled_from(["192.0.2.80", "192.0.2.81"])),
    st.tuples(st.just("policy"), st.sampled_from(sorted(EDITS))),
)


def queries() -> list[bytes]:
    out = []
    for name in NAMES:
        for qtype in QTYPES:
            for subnet in SUBNETS:
                options = [] if subnet is None else [
                    dns.edns.ECSOption(subnet.split("/")[0], int(subnet.split("/")[1]))]
                out.append(dns.message.make_query(name, qtype, use_edns=0,
                                                  options=options).to_wire())
            out.append(dns.message.make_query(name, qtype).to_wire())  # no EDNS
    return out


QUERIES = queries()


def _apply(op: tuple[object, ...], live: LiveState) -> LiveState:
    if op[0] == "shadow":
        _, di, resource, region = op
        shadows = {k: list(v) for k, v in live.shadows.items()}
        chosen = shadows.setdefault(str(di), [])
        shadow = Shadow(str(di), str(resource), str(region))
        if shadow in chosen:
            chosen.remove(shadow)
        else:
            chosen.append(shadow)
        return replace(live, shadows={k: tuple(v) for k, v in shadows.items() if v})
    if op[0] == "down":
        return replace(live, down=live.down ^ {str(op[1])})
    _, di, region, ttl = op
    ttls = dict(live.ttls)
    if ttl is None:
        ttls.pop((str(di), str(region)), None)
    else:
        ttls[(str(di), str(region))] = int(str(ttl))
    return replace(live, ttls=ttls)


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("changes")
    (path / "ch.test.zone").write_text(ZONE.format(www="192.0.2.80"))
    (path / "ch.test.policy.yaml").write_text(POLICY)
    return path


def _warm_engine(zones: Path) -> tuple[Config, LiveState, QueryEngine, Prewarm]:
    """The test zone as first written, in an engine whose table the prewarm filled."""
    (zones / "ch.test.zone").write_text(ZONE.format(www="192.0.2.80"))
    (zones / "ch.test.policy.yaml").write_text(POLICY)
    config = load_config(zones)
    live = LiveState()
    engine = QueryEngine(build_snapshot(config, live))
    prewarm = Prewarm(engine)
    prewarm.restart()
    prewarm.fill(60.0)
    return config, live, engine, prewarm


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(change, st.booleans()), min_size=1, max_size=8))
def test_table_answers_match_the_slow_path_after_any_changes(
        zones: Path, ops: list[tuple[tuple[object, ...], bool]]) -> None:
    """Whatever changed, and whether the prewarm caught up or answers compiled on a miss,
    the table answers exactly as the slow path and as a fresh engine do."""
    config, live, engine, prewarm = _warm_engine(zones)
    users = ResourceUsers(config)
    addr = ("10.9.0.1", 5353)
    for wire in QUERIES:  # fill the table with every shape
        engine.respond(wire, addr)
    edits: frozenset[str] = frozenset()
    for op, catch_up in ops:
        if op[0] == "edit":
            (zones / "ch.test.zone").write_text(ZONE.format(www=op[1]))
            config = load_config(zones)
            users = ResourceUsers(config)
            engine.swap(build_snapshot(config, live, previous=engine.snapshot))
            prewarm.restart()
        elif op[0] == "policy":
            edits = edits ^ {str(op[1])}
            (zones / "ch.test.policy.yaml").write_text(policy_text(edits))
            before, config = config, load_config(zones)
            users = ResourceUsers(config)
            scope = reload_scope(before, config)
            assert (scope is None) == (op[1] in WHOLE), op
            snapshot = build_snapshot(config, live, previous=engine.snapshot)
            if scope is None:
                engine.swap(snapshot)
                prewarm.restart()
            else:
                dropped = engine.swap(snapshot, scope.touched(live), scope.names)
                prewarm.push(dropped, renamed=bool(scope.names))
        else:
            new = _apply(op, live)
            touched = users.touched(live, new)
            live = new
            dropped = engine.swap(build_snapshot(config, live, previous=engine.snapshot),
                                  touched)
            prewarm.push(dropped)
        if catch_up:
            prewarm.fill(60.0)
        fresh = QueryEngine(build_snapshot(config, live))
        for wire in QUERIES:
            got = engine.respond(wire, addr)
            assert got == engine._slow(wire, False, addr), (op, dns.message.from_wire(wire))
            assert got == fresh.respond(wire, addr), (op, dns.message.from_wire(wire))


def test_a_live_change_drops_only_the_dis_it_touches(zones: Path) -> None:
    """A shadow for d0 and a resource of d2 going down drop d0's and d2's answers (and
    the CNAME that ends at d0) and keep every other entry of the table as it was."""
    config, live, engine, prewarm = _warm_engine(zones)
    for wire in QUERIES:
        engine.respond(wire, ("10.9.0.1", 5353))
    before = dict(engine.table.base)
    shapes_before = [dict(t) for t in engine.table.tables]
    new = replace(live, shadows={"d0.ch.test.": (Shadow("d0.ch.test.", "s-ap", "ap"),)},
                  down=frozenset({"p2-na"}))
    touched = ResourceUsers(config).touched(live, new)
    assert touched == {"d0.ch.test.", "d2.ch.test."}
    table = engine.table
    dropped = engine.swap(build_snapshot(config, new, previous=engine.snapshot), touched)
    assert engine.table is table  # not a new table
    names = {dns.name.from_wire(k, 0)[0].to_text().lower() for k in dropped}
    assert names == {"d0.ch.test.", "d2.ch.test.", "alias.ch.test."}
    for key, entry in before.items():
        if key not in dropped:
            assert table.base[key] is entry
    for shaped, old in zip(table.tables, shapes_before, strict=True):
        assert set(old) - set(shaped) <= set(dropped)
        assert all(shaped[k] is v for k, v in old.items() if k not in dropped)
    # and what was dropped answers the new state once compiled again
    prewarm.push(dropped)
    prewarm.fill(60.0)
    reply = dns.message.from_wire(engine.respond(dns.message.make_query(
        "d0.ch.test.", "A", use_edns=0,
        options=[dns.edns.ECSOption("10.3.7.0", 24)]).to_wire(), ("10.9.0.1", 5353)) or b"")
    assert [r.to_text() for r in reply.answer[0]] == ["203.0.113.99"]


def test_an_edit_of_di_entries_drops_only_those_dis(zones: Path) -> None:
    """A reload that changes d2's TTL, adds d4 and removes d3 keeps the table: only those
    three DIs' entries go, every other entry stays the same object (now pointing at the
    new policy's context, so the old policy is not kept alive), and d4 answers once the
    prewarm ran."""
    config, live, engine, prewarm = _warm_engine(zones)
    for wire in QUERIES:
        engine.respond(wire, ("10.9.0.1", 5353))
    before = dict(engine.table.base)
    compact_before = dict(engine.table.compact)
    (zones / "ch.test.policy.yaml").write_text(policy_text(frozenset({"ttl", "add",
                                                                       "remove"})))
    new_config = load_config(zones)
    scope = reload_scope(config, new_config)
    assert scope is not None
    assert scope.dis == {"d2.ch.test.", "d3.ch.test.", "d4.ch.test."}
    assert {n.to_text() for n in scope.names} == {"d3.ch.test.", "d4.ch.test."}
    table = engine.table
    snapshot = build_snapshot(new_config, live, previous=engine.snapshot)
    dropped = engine.swap(snapshot, scope.touched(live), scope.names)
    assert engine.table is table and engine.rebuilds == 0
    names = {dns.name.from_wire(k, 0)[0].to_text().lower() for k in dropped}
    assert names == {"d2.ch.test.", "d3.ch.test.", "d4.ch.test."}
    for key, entry in before.items():
        if key not in dropped:
            assert table.base[key] is entry
    (policy,) = new_config.policies.values()
    for wire, entry in compact_before.items():
        if dns.name.from_wire(wire, 0)[0].to_text() not in scope.dis:
            assert table.compact[wire] is entry and entry.ctx.policy is policy
    prewarm.push(dropped, renamed=True)
    prewarm.fill(60.0)
    reply = dns.message.from_wire(engine.respond(dns.message.make_query(
        "d4.ch.test.", "A").to_wire(), ("10.9.0.1", 5353)) or b"")
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer[0].ttl == 20
    gone = dns.message.from_wire(engine.respond(dns.message.make_query(
        "d3.ch.test.", "MX").to_wire(), ("10.9.0.1", 5353)) or b"")
    assert gone.rcode() == dns.rcode.NXDOMAIN
