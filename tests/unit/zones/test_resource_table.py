"""ResourceTable: compact rows read back as the same Resources a dict would hold."""

from __future__ import annotations

import socket

from shadowdns.zones.policy import HealthCheck, Resource, ResourceTable, resources_where

SHAPE = Resource(id="t", location="eu", role="primary", address="10.0.0.1", capacity=5)
WHOLE = Resource(id="sb-1", location="us", role="standby", address6="2001:db8::1",
                 check=HealthCheck(type="tcp", port=80))


def table() -> tuple[ResourceTable, dict[str, Resource]]:
    t = ResourceTable()
    t.add(SHAPE)
    shape = t.shape(SHAPE)
    expected = {"t": SHAPE}
    for i in range(3):
        rid = f"r{i}"
        t.add_shaped(rid, shape, socket.inet_aton(f"10.1.0.{i}"))
        expected[rid] = Resource(id=rid, location="eu", role="primary",
                                 address=f"10.1.0.{i}", capacity=5)
    t.add(WHOLE)
    expected["sb-1"] = WHOLE
    return t, expected


def test_rows_read_back_as_resources_in_order() -> None:
    t, expected = table()
    assert t == expected and expected == t
    assert list(t) == list(expected)
    assert len(t) == 5 and "r2" in t and "r9" not in t
    assert t.get("r9") is None and t["r1"].address == "10.1.0.1"
    assert t.role_of("sb-1") == "standby" and t.role_of("r9") is None


def test_ids_handed_out_are_the_tables_own() -> None:
    t, _ = table()
    asked = "".join(["r", "1"])  # an equal string, not the same object
    assert t.id_of(asked) is t["r1"].id and t.id_of(asked) is not asked


def test_ids_of_a_role_are_read_in_one_call_or_not_at_all() -> None:
    """`ids_if` is `id_if` of each id while every one is a resource of that role."""
    t, _ = table()
    asked = ["".join(["r", "1"]), "t", "r0"]
    got = t.ids_if(asked, "primary")
    assert got == asked and got[0] is t.id_of("r1") and got[0] is not asked[0]
    assert got == [t.id_if(rid, "primary") for rid in asked]
    assert t.ids_if(["r1", "sb-1"], "primary") is None  # sb-1 is a standby
    assert t.ids_if(["r1", "r9"], "primary") is None  # r9 is not there
    assert t.ids_if(["sb-1"], "standby") == ["sb-1"] and t.ids_if([], "primary") == []


def test_matching_asks_each_shape_and_finds_the_rows() -> None:
    t, expected = table()
    asked: list[str] = []

    def primary(res: Resource) -> bool:
        asked.append(res.id)
        return res.role == "primary"

    assert list(resources_where(t, primary)) == [r for r in expected.values()
                                                 if r.role == "primary"]
    assert len(asked) == 3  # the shape (twice: as itself and as a shape) and the whole one
    assert list(resources_where(t, lambda r: r.check is not None)) == [WHOLE]
    assert list(resources_where(expected, lambda r: r.role == "standby")) == [WHOLE]


def test_field_rows_are_the_resources_fields() -> None:
    t, expected = table()
    assert list(t.field_rows()) == [
        tuple(getattr(r, name) for name in Resource.__slots__) for r in expected.values()]


def test_row_keys_are_equal_exactly_when_the_resources_are() -> None:
    """Two tables read from two loads: equal resources give equal keys, whether shaped
    or whole; another address or another field gives another key; no row gives None."""
    a, _ = table()
    b, _ = table()
    assert all(a.row_key(rid) == b.row_key(rid) for rid in a)
    moved = ResourceTable()
    moved.add(SHAPE)
    shape = moved.shape(SHAPE)
    moved.add_shaped("r0", shape, socket.inet_aton("10.1.0.9"))
    bigger = Resource(id="t", location="eu", role="primary", address="10.0.0.1", capacity=6)
    moved.add_shaped("r1", moved.shape(bigger), socket.inet_aton("10.1.0.1"))
    assert moved.row_key("t") == a.row_key("t")
    assert moved.row_key("r0") != a.row_key("r0")
    assert moved.row_key("r1") != a.row_key("r1")
    assert moved.row_key("r9") is None
