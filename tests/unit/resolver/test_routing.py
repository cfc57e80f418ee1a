"""The routing decision: which resources answer a DI for one region, in the documented order."""

from __future__ import annotations

import dns.name
import pytest

from shadowdns.resolver.routing import Decision, Shadow, decide
from shadowdns.zones.policy import DI, Location, Policy, Regions, Resource

LOCS = {
    "eu": Location("eu", 50.1, 8.7),
    "us": Location("us", 38.9, -77.0),
    "jp": Location("jp", 35.7, 139.7),
    "kr": Location("kr", 37.6, 127.0),
    "br": Location("br", -23.5, -46.6),
}
RES = {
    "p-eu": Resource("p-eu", "eu", "primary", address="192.0.2.10", address6="2001:db8::10"),
    "p-us": Resource("p-us", "us", "primary", address="198.51.100.10"),
    "s-jp": Resource("s-jp", "jp", "standby", address="203.0.113.30"),
    "s-kr": Resource("s-kr", "kr", "standby", address="203.0.113.31"),
    "s-br": Resource("s-br", "br", "standby", address="203.0.113.40"),
    "s-eu": Resource("s-eu", "eu", "standby", address="192.0.2.20", override="down"),
    "s-up": Resource("s-up", "jp", "standby", address="203.0.113.50", override="up"),
}
NAME = dns.name.from_text("app.example.")
POLICY = Policy(
    origin=dns.name.from_text("example."),
    locations=LOCS,
    regions=Regions(default="eu"),
    resources=RES,
    dis={},
)


def di(**kw: object) -> DI:
    return DI(name=NAME, primaries=("p-eu", "p-us"), **kw)  # type: ignore[arg-type]


def shadows(*items: tuple[str, str]) -> list[Shadow]:
    return [Shadow("app.example.", res, region) for res, region in items]


@pytest.mark.parametrize(
    ("case", "region", "allocs", "down", "kw", "expect_ids", "kind"),
    [
        ("nearest primary, no shadows", "us", [], [], {}, ["p-us"], "primary"),
        ("default region for unknown names", "mars", [], [], {}, ["p-eu"], "primary"),
        ("local shadow wins", "jp", [("s-jp", "jp")], [], {}, ["s-jp"], "shadow"),
        ("local shadows nearest first, cut to answers", "jp",
         [("s-kr", "jp"), ("s-jp", "jp")], [], {"answers": 1}, ["s-jp"], "shadow"),
        ("two answers", "jp", [("s-kr", "jp"), ("s-jp", "jp")], [], {"answers": 2},
         ["s-jp", "s-kr"], "shadow"),
        ("down shadow skipped", "jp", [("s-jp", "jp")], ["s-jp"], {}, ["p-eu"], "primary"),
        ("override down beats healthy", "eu", [("s-eu", "eu")], [], {}, ["p-eu"], "primary"),
        ("override up beats probes", "jp", [("s-up", "jp")], ["s-up"], {}, ["s-up"], "shadow"),
        ("other region's shadow when nearer than primaries", "kr", [("s-jp", "jp")], [], {},
         ["s-jp"], "shadow"),
        ("other region's shadow ignored when a primary is nearer", "us", [("s-br", "br")], [],
         {}, ["p-us"], "primary"),
        ("down primary skipped", "us", [], ["p-us"], {}, ["p-eu"], "primary"),
        ("all down fails open", "us", [], ["p-us", "p-eu"], {}, ["p-eu", "p-us"], "fallback"),
        ("all down nodata", "us", [], ["p-us", "p-eu"], {"all_down": "nodata"}, [], "nodata"),
    ],
)
def test_decide_follows_the_documented_order(
    case: str, region: str, allocs: list[tuple[str, str]], down: list[str],
    kw: dict[str, object], expect_ids: list[str], kind: str,
) -> None:
    """Shadows for the region, then a nearer foreign shadow, then primaries, then all_down."""
    decision = decide(POLICY, di(**kw), region, shadows(*allocs), frozenset(down))
    assert sorted(r.id for r in decision.resources) == sorted(expect_ids), case
    assert decision.kind == kind, case
    assert decision.reason, case


def test_addresses_per_family_and_nodata_without_that_family() -> None:
    """A and AAAA come from the same resources; a resource without IPv6 gives no AAAA."""
    d = Decision((RES["p-eu"], RES["p-us"]), "fallback", "x")
    assert d.addresses(4) == ["192.0.2.10", "198.51.100.10"]
    assert d.addresses(6) == ["2001:db8::10"]
    assert Decision((RES["s-jp"],), "shadow", "x").addresses(6) == []
