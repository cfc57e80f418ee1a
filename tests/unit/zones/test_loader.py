"""The zone loader: what `serve`, `check` and reload accept, and how they report problems."""

from __future__ import annotations

from pathlib import Path

import dns.name
import pytest

from shadowdns.errors import ZoneError
from shadowdns.zones.loader import load_zone_dir, load_zone_file, origin_for

HEAD = "$TTL 300\n@ SOA ns1 host 1 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.1\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_zone_indexes_names_ents_and_cuts(tmp_path: Path) -> None:
    """Every owner, every empty non-terminal above it, and delegation points are indexed."""
    path = write(tmp_path, "example.com.zone",
                 HEAD + "a.b.c A 192.0.2.2\nsub NS ns.sub\nns.sub A 192.0.2.3\n")
    zone = load_zone_file(path)
    names = {n.to_text() for n in zone.names}
    assert {"b.c.example.com.", "c.example.com.", "a.b.c.example.com."} <= names
    assert {c.to_text() for c in zone.cuts} == {"sub.example.com."}
    assert zone.serial == 1


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        ("www A 300.1.1.1\n", 5, "malformed"),
        ("www A 300.1.1.1\nok A 192.0.2.7\n", 5, "malformed"),
        ("www BOGUS 1\n", 5, "unknown rdatatype"),
        ("www CNAME x\nwww A 192.0.2.9\n", 6, "CNAME"),
        ("www.example.org. A 192.0.2.9\n", 5, "outside the zone"),
        ("sub SOA ns1 host 1 1 1 1 1\n", 5, "non-origin SOA"),
        ("@ CNAME x\n", 5, "CNAME"),
    ],
)
def test_bad_records_are_reported_with_file_and_line(tmp_path: Path, body: str, line: int,
                                                     reason: str) -> None:
    """A bad record gives file, line and reason."""
    path = write(tmp_path, "example.com.zone", HEAD + body)
    with pytest.raises(ZoneError) as info:
        load_zone_file(path)
    problems = info.value.problems
    assert any(p.file == str(path) and p.line == line and reason in p.reason for p in problems), \
        problems


def test_missing_soa_and_ns_are_both_reported(tmp_path: Path) -> None:
    """A zone without SOA and NS at the apex lists both problems."""
    path = write(tmp_path, "example.com.zone", "$TTL 300\nwww A 192.0.2.1\n")
    with pytest.raises(ZoneError) as info:
        load_zone_file(path)
    reasons = " | ".join(p.reason for p in info.value.problems)
    assert "no SOA" in reasons and "no NS" in reasons


def test_directory_reports_every_bad_file_and_loads_nothing(tmp_path: Path) -> None:
    """One bad file among good ones fails the whole load, listing each bad file."""
    write(tmp_path, "good.test.zone", HEAD)
    write(tmp_path, "bad1.test.zone", HEAD + "x A nope\n")
    write(tmp_path, "bad2.test.zone", HEAD + "y AAAA 1.2.3.4\n")
    with pytest.raises(ZoneError) as info:
        load_zone_dir(tmp_path)
    files = {Path(p.file).name for p in info.value.problems}
    assert files == {"bad1.test.zone", "bad2.test.zone"}


def test_origin_comes_from_dollar_origin_else_the_file_name(tmp_path: Path) -> None:
    """`$ORIGIN` before the first record wins over the file name."""
    assert origin_for(write(tmp_path, "a.test.zone", HEAD)) == dns.name.from_text("a.test.")
    path = write(tmp_path, "whatever.zone", "; comment\n$ORIGIN real.test.\n" + HEAD)
    assert origin_for(path) == dns.name.from_text("real.test.")
    assert load_zone_file(path).origin == dns.name.from_text("real.test.")
