"""The policy graph: writing a Policy, its location distances, and standby selection."""

from __future__ import annotations

import dns.name
import pytest

from shadowdns.errors import StoreError
from shadowdns.geoip.distance import haversine_km
from shadowdns.store.base import NewAllocation, Store, ZoneRecord

from .conftest import ORIGIN, Backend, make_policy

APP = "app.example.com."
API = "api.example.com."


def test_replace_policy_stores_every_pairwise_distance(store: Store) -> None:
    """Every ordered pair of the zone's locations gets exactly the distance the resolver
    measures (one haversine, one Earth radius), so stored and routed "nearest" agree."""
    policy = make_policy()
    store.replace_policy(ORIGIN, policy)
    distances = store.location_distances(ORIGIN)
    locs = policy.locations
    assert set(distances) == {(a, b) for a in locs for b in locs}
    for (a, b), km in distances.items():
        la, lb = locs[a], locs[b]
        assert km == pytest.approx(haversine_km(la.lat, la.lon, lb.lat, lb.lon), rel=1e-12)
    assert 6000 < distances[("eu-west", "us-east")] < 6400


def test_replace_policy_replaces_only_its_own_zone(store: Store) -> None:
    """Writing a zone again drops what it no longer declares; other zones stay as they were."""
    store.replace_policy(ORIGIN, make_policy())
    store.replace_policy("example.net.", make_policy("example.net."))
    smaller = make_policy(
        locations={"eu-west": (52.37, 4.90), "us-east": (38.90, -77.04)},
        resources={"web-eu-1": ("eu-west", "primary", 1.0), "sb-us-1": ("us-east", "standby", 9.0)},
        dis={"app": (("web-eu-1",), ("sb-us-1",), None)},
    )
    store.replace_policy(ORIGIN, smaller)
    assert set(store.location_distances(ORIGIN)) == {
        ("eu-west", "eu-west"),
        ("eu-west", "us-east"),
        ("us-east", "eu-west"),
        ("us-east", "us-east"),
    }
    assert len(store.location_distances("example.net.")) == 16
    assert [c.resource for c in store.standby_within(APP, "eu-west", 20000)] == ["sb-us-1"]
    assert store.standby_within(API, "eu-west", 20000) == []  # api is gone


def test_replace_policy_failure_writes_nothing(store: Store, backend: Backend) -> None:
    """A policy whose DI already belongs to another zone is refused whole."""
    store.replace_policy(ORIGIN, make_policy())
    before = backend.dump()
    clash = make_policy("com.", dis={"app.example": (("web-eu-1",), (), None)})
    with pytest.raises(StoreError):
        store.replace_policy("com.", clash)
    assert backend.dump() == before


def test_replace_policy_with_the_stored_digest_writes_nothing(store: Store) -> None:
    """A restart with the same policy file leaves the graph (and the generation) alone; a
    different digest, or none, writes it again."""
    store.upsert_zone(ZoneRecord(ORIGIN, "example.com.zone", 1, 1.0))
    assert store.replace_policy(ORIGIN, make_policy(), "digest-1") is True
    generation = store.change_generation()
    smaller = make_policy(dis={"app": (("web-eu-1",), ("sb-us-1",), None)})
    assert store.replace_policy(ORIGIN, smaller, "digest-1") is False
    assert store.change_generation() == generation
    assert [c.resource for c in store.standby_within(API, "eu-west", 20000)] == ["sb-eu-1"]
    assert store.replace_policy(ORIGIN, smaller, "digest-2") is True
    assert store.standby_within(API, "eu-west", 20000) == []
    assert store.replace_policy(ORIGIN, make_policy()) is True
    assert store.replace_policy(ORIGIN, make_policy()) is True


def test_replace_policy_refuses_a_mismatched_origin(store: Store) -> None:
    """The origin given must be the policy's own."""
    with pytest.raises(ValueError, match="origin"):
        store.replace_policy("example.org.", make_policy())


@pytest.mark.parametrize(
    ("di", "location", "km", "expected"),
    [
        pytest.param(APP, "eu-west", 500, ["sb-eu-1"], id="nearby-only"),
        pytest.param(APP, "eu-west", 7000, ["sb-eu-1", "sb-us-1"], id="nearest-first"),
        pytest.param(APP, "eu-west", 20000, ["sb-eu-1", "sb-us-1", "sb-ap-1"], id="all"),
        pytest.param(APP, "ap-east", 20000, ["sb-ap-1", "sb-eu-1", "sb-us-1"], id="from-asia"),
        pytest.param(API, "eu-west", 20000, ["sb-eu-1"], id="selector-limits-to-1000km"),
        pytest.param(API, "us-east", 20000, ["sb-us-1"], id="selector-from-us"),
        pytest.param(API, "ap-east", 100, ["sb-ap-1"], id="selector-and-km"),
        pytest.param(APP, "mars", 20000, [], id="unknown-location"),
        pytest.param("nope.example.com.", "eu-west", 20000, [], id="unknown-di"),
    ],
)
def test_standby_within_lists_the_di_pool_near_a_location(
    store: Store, di: str, location: str, km: float, expected: list[str]
) -> None:
    """Only standby resources of the DI's pool within km of the location, nearest first."""
    store.replace_policy(ORIGIN, make_policy())
    candidates = store.standby_within(di, location, km)
    assert [c.resource for c in candidates] == expected
    assert [c.km for c in candidates] == sorted(c.km for c in candidates)
    assert all(c.km <= km for c in candidates)


def test_standby_within_subtracts_the_load_of_non_released_allocations(
    store: Store,
) -> None:
    """available = capacity - sum(demand) of the resource's allocations not yet released."""
    store.replace_policy(ORIGIN, make_policy())
    base = {"valid_from": 0.0, "generation": 1, "created_at": 0.0}
    store.add_allocations(
        [
            NewAllocation(APP, "sb-eu-1", "EU", demand=100.0, **base),  # type: ignore[arg-type]
            NewAllocation(API, "sb-eu-1", "EU", state="ready", demand=50.0, **base),  # type: ignore[arg-type]
            NewAllocation(APP, "sb-eu-1", "NA", state="released", demand=70.0, **base),  # type: ignore[arg-type]
            NewAllocation(APP, "sb-us-1", "NA", state="draining", demand=1.5, **base),  # type: ignore[arg-type]
        ]
    )
    found = {c.resource: c for c in store.standby_within(APP, "eu-west", 20000)}
    assert (found["sb-eu-1"].capacity, found["sb-eu-1"].load) == (300.0, 150.0)
    assert found["sb-eu-1"].available == 150.0
    assert found["sb-us-1"].available == 398.5
    assert found["sb-ap-1"].available == 500.0


def test_a_di_dropped_from_its_policy_is_retired(store: Store) -> None:
    """A DI the zone no longer declares loses its demand series, forecasts and model choices
    and its active allocations are released; the DIs still declared keep all of theirs."""
    from shadowdns.store.base import DemandRow, Forecast, ForecastPoint, ModelChoice

    store.replace_policy(ORIGIN, make_policy())
    for di in (APP, API):
        store.add_demand([DemandRow(di, "eu-west", 600 + i * 60, "primary", 5) for i in range(5)])
        store.write_forecasts([Forecast(di, "eu-west", "5m", 700.0, "ets",
                                        (ForecastPoint(900, 1.0, 2.0),))])
        store.write_model_choices([ModelChoice(di, "eu-west", "ets", 0.5, 700.0)])
        store.add_allocation(NewAllocation(di, "sb-ap-1", "eu-west", 0.0, 1, 0.0,
                                           state="ready"))
    store.rollup(1200.0)
    store.replace_policy(ORIGIN, make_policy(dis={"api": (("web-eu-1",), (), 1000.0)}))
    assert set(store.demand_series("minute", 0, 2000)) == {(API, "eu-west")}
    assert set(store.demand_series("5m", 0, 2000)) == {(API, "eu-west")}
    assert [c.di for c in store.read_model_choices()] == [API]
    assert {f.di for f in store.read_forecasts("5m")} == {API}
    active = store.list_allocations()
    assert [a.di for a in active] == [API]


GRAPH = ("locations", "location_distances", "resources", "dis", "di_resources")


def _graph(backend: Backend) -> list[str]:
    """The policy graph's rows, in an order that does not depend on how they were written."""
    marks = tuple(mark for table in GRAPH for mark in (f'INSERT INTO "{table}" ', f"{table}: "))
    return sorted(line for line in backend.dump() if line.startswith(marks))


EDITED = {
    "resources": {
        "web-eu-1": ("eu-west", "primary", 1000.0),
        "web-us-1": ("us-east", "primary", 1000.0),
        "sb-ap-2": ("ap-east", "standby", 50.0),  # new (sb-eu-1's address); sb-eu-1 is gone
        "sb-us-1": ("us-east", "standby", 900.0),  # its capacity changed
        "sb-ap-1": ("ap-east", "standby", 500.0),
    },
    "dis": {
        "app": (("web-eu-1", "web-us-1"), ("sb-ap-2", "sb-us-1"), None),  # changed
        "www": (("web-us-1",), ("sb-ap-1",), 300.0),  # new; api is gone
    },
}


def test_update_policy_writes_what_a_whole_replace_writes(store: Store, backend: Backend) -> None:
    """Rewriting only the DIs and resources an edit touched (changed, added, gone) leaves
    the graph a whole replace of the edited policy leaves, and retires the DI that went."""
    store.upsert_zone(ZoneRecord(ORIGIN, "example.com.zone", 1, 1.0))
    store.replace_policy(ORIGIN, make_policy(), "digest-1")
    store.add_allocation(NewAllocation(API, "sb-ap-1", "eu-west", 0.0, 1, 0.0, state="ready"))
    before = _graph(backend)
    generation = store.change_generation()
    edited = make_policy(**EDITED)  # type: ignore[arg-type]
    touched = [dns.name.from_text(name) for name in (APP, API, "www.example.com.")]
    assert store.update_policy(ORIGIN, edited, "digest-2", "digest-1", touched,
                               {"sb-us-1", "sb-eu-1", "sb-ap-2"}) is True
    assert store.change_generation() > generation
    updated = _graph(backend)
    assert updated != before
    assert store.list_allocations() == []  # api's shadow released with it
    assert store.replace_policy(ORIGIN, edited, "digest-3") is True
    assert _graph(backend) == updated
    # the digest it wrote is the graph's: the same file again writes nothing
    assert store.update_policy(ORIGIN, edited, "digest-3", "digest-2", touched, ()) is False


def test_update_policy_over_another_graph_replaces_it_whole(store: Store,
                                                             backend: Backend) -> None:
    """When the store holds a graph other than the one the edit was made against (another
    node or process wrote it), the parts alone would not make the edited policy: the whole
    graph is written."""
    store.upsert_zone(ZoneRecord(ORIGIN, "example.com.zone", 1, 1.0))
    store.replace_policy(ORIGIN, make_policy(), "digest-other")
    edited = make_policy(**EDITED)  # type: ignore[arg-type]
    assert store.update_policy(ORIGIN, edited, "digest-2", "digest-1",
                               [dns.name.from_text(APP)], {"sb-us-1"}) is True
    partial = _graph(backend)
    store.replace_policy(ORIGIN, edited, "digest-3")
    assert _graph(backend) == partial
    assert {c.resource for c in store.standby_within(API, "eu-west", 20000)} == set()
