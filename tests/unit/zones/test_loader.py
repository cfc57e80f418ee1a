"""The zone loader: what `serve`, `check` and reload accept, and how they report problems."""

from __future__ import annotations

from pathlib import Path

import dns.name
import dns.rrset
import pytest

from shadowdns.api.config_files import ConfigFiles, editable, rendered_rrsets
from shadowdns.errors import ZoneError
from shadowdns.zones.loader import adopt_rendered, load_zone_dir, load_zone_file, origin_for
from shadowdns.zones.zone import Zone

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
        ("sub SOA ns1 host 1 1 1 1 1\n", 5, "SOA below the apex"),
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


def test_every_bad_line_is_reported_not_only_the_first(tmp_path: Path) -> None:
    """Syntax errors and clashes further down the file are listed too, in line order, each
    with the text of its line (dnspython's own reason does not say which part it means)."""
    path = write(tmp_path, "example.com.zone", HEAD + (
        "www A 300.1.1.1\n"          # 5
        "ok A 192.0.2.7\n"           # 6
        "mail A 192.0.2.8\n"         # 7
        "mail CNAME ok\n"            # 8
        "bad BOGUS 1\n"              # 9
        "@ CNAME ok\n"))             # 10
    with pytest.raises(ZoneError) as info:
        load_zone_file(path)
    found = [(p.line, p.reason) for p in info.value.problems]
    assert [line for line, _ in found] == sorted(line for line, _ in found)
    reasons = dict(found)
    assert "'www A 300.1.1.1'" in reasons[5]
    assert reasons[8] == "CNAME at mail.example.com. beside other data (A)"
    assert "unknown rdatatype 'BOGUS'" in reasons[9]
    assert any(line == 10 and "CNAME at the zone apex" in r for line, r in found), found


@pytest.mark.parametrize("tail", [
    "mail CNAME ns1", "mail CNAME ns1 ; why", "mail CNAME (\n  ns1 )", "bad A 1.2.3",
    "sub SOA ns1 host 1 1 1 1 1", "www.example.org. A 192.0.2.9",
])
@pytest.mark.parametrize("newline", ["", "\n"])
def test_a_problem_is_on_the_line_its_record_starts(tmp_path: Path, tail: str,
                                                    newline: str) -> None:
    """The line is the record's first, whether the file ends in a newline or not (zone text
    sent through the API often does not) and whether the record spans lines."""
    path = write(tmp_path, "example.com.zone", HEAD + "mail A 192.0.2.8\n" + tail + newline)
    with pytest.raises(ZoneError) as info:
        load_zone_file(path)
    assert [p.line for p in info.value.problems] == [6], info.value.problems


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


# --- $INCLUDE: only regular files inside the zones directory, bounded ---------------------


def zones_with_include(tmp_path: Path, target: str) -> Path:
    zones = tmp_path / "zones"
    zones.mkdir()
    return write(zones, "example.com.zone", HEAD + f"$INCLUDE {target}\n")


def test_include_of_a_file_in_the_zones_directory_is_read(tmp_path: Path) -> None:
    """A relative $INCLUDE names a file of the zones directory (not of the current
    directory), and its records join the zone, also through a nested $INCLUDE."""
    path = zones_with_include(tmp_path, "part.inc")
    write(path.parent, "part.inc", "www A 192.0.2.8\n$INCLUDE sub/more.inc\n")
    (path.parent / "sub").mkdir()
    write(path.parent / "sub", "more.inc", "mail A 192.0.2.9\n")
    names = {n.to_text() for n in load_zone_file(path).nodes}
    assert {"www.example.com.", "mail.example.com."} <= names


@pytest.mark.timeout(30)
@pytest.mark.parametrize("target", ["/etc/passwd", "/etc/no-such-file-here", "/dev/zero",
                                    "../outside.inc", "/proc/self/environ"])
def test_include_outside_the_zones_directory_is_refused_alike(tmp_path: Path,
                                                              target: str) -> None:
    """Outside the zones directory, existing or not, device or file: one refusal at the
    $INCLUDE line, whose text does not tell whether the target exists."""
    write(tmp_path, "outside.inc", "www A 192.0.2.8\n")
    path = zones_with_include(tmp_path, target)
    with pytest.raises(ZoneError) as info:
        load_zone_file(path)
    [problem] = info.value.problems
    assert (problem.file, problem.line) == (str(path), 5)
    assert problem.reason == (f"$INCLUDE {target}: refused: only files inside the zones "
                              "directory may be included")


@pytest.mark.timeout(30)
def test_include_through_a_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    """A link inside the zones directory pointing out of it (here to /dev/zero) is outside."""
    path = zones_with_include(tmp_path, "zero.inc")
    (path.parent / "zero.inc").symlink_to("/dev/zero")
    with pytest.raises(ZoneError) as info:
        load_zone_file(path)
    assert "only files inside the zones directory" in info.value.problems[0].reason


@pytest.mark.timeout(30)
def test_include_of_a_fifo_or_a_directory_is_refused_before_opening(tmp_path: Path) -> None:
    """A FIFO inside the zones directory would block on open: refused as not regular."""
    import os

    path = zones_with_include(tmp_path, "pipe.inc")
    os.mkfifo(path.parent / "pipe.inc")
    with pytest.raises(ZoneError) as info:
        load_zone_file(path)
    assert info.value.problems[0].reason == "$INCLUDE pipe.inc: refused: not a regular file"
    dir_path = write(path.parent, "example.com.zone", HEAD + "$INCLUDE .\n")
    with pytest.raises(ZoneError) as info:
        load_zone_file(dir_path)
    assert "refused" in info.value.problems[0].reason


def test_include_larger_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    """An included file over MAX_INCLUDE_BYTES is refused by its size (a sparse file here)."""
    from shadowdns.zones.loader import MAX_INCLUDE_BYTES

    path = zones_with_include(tmp_path, "big.inc")
    with open(path.parent / "big.inc", "wb") as fh:
        fh.truncate(MAX_INCLUDE_BYTES + 1)
    with pytest.raises(ZoneError) as info:
        load_zone_file(path)
    assert info.value.problems[0].reason == \
        f"$INCLUDE big.inc: refused: larger than {MAX_INCLUDE_BYTES} bytes"


def test_include_of_itself_stops_at_the_depth_limit(tmp_path: Path) -> None:
    """A file including itself is refused at MAX_INCLUDE_DEPTH, not looped forever."""
    path = zones_with_include(tmp_path, "example.com.zone")
    with pytest.raises(ZoneError) as info:
        load_zone_file(path)
    assert "nested more than" in info.value.problems[0].reason


def test_problems_inside_an_included_file_name_that_file(tmp_path: Path) -> None:
    """A bad record or a refused $INCLUDE inside an included file gives its own file:line."""
    path = zones_with_include(tmp_path, "part.inc")
    part = write(path.parent, "part.inc", "www A 192.0.2.8\n$INCLUDE /etc/hostname\n")
    with pytest.raises(ZoneError) as info:
        load_zone_file(path)
    [problem] = info.value.problems
    assert (Path(problem.file).name, problem.line) == (part.name, 2)
    assert "only files inside the zones directory" in problem.reason


def test_include_in_text_from_the_api_is_refused_at_its_line(tmp_path: Path) -> None:
    """With includes=False (zone text sent through the API) any $INCLUDE is refused at its
    line, even of a file in the zones directory, and nothing is read."""
    path = zones_with_include(tmp_path, "part.inc")
    write(path.parent, "part.inc", "www A 192.0.2.8\n")
    with pytest.raises(ZoneError) as info:
        load_zone_file(path, includes=False)
    [problem] = info.value.problems
    assert problem.line == 5
    assert problem.reason.startswith("$INCLUDE is not accepted in zone text sent through the API")


@pytest.mark.timeout(30)
def test_a_zone_path_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    """Loading a FIFO or device as a zone file is refused, not blocked on."""
    with pytest.raises(ZoneError) as info:
        load_zone_file(Path("/dev/zero"), dns.name.from_text("example.com."))
    assert info.value.problems[0].reason == "not a regular file"


# --- one parse for the same bytes ----------------------------------------------------------


def test_the_same_bytes_are_parsed_once_wherever_they_are(tmp_path: Path) -> None:
    """An API edit checks its text in a scratch file, then the reload reads the same bytes
    from the zone file: the second load is the first's parse, named after its own file."""
    text = "$ORIGIN cached.test.\n" + HEAD + "www A 192.0.2.7\n"
    first = load_zone_file(write(tmp_path, "scratch.zone", text))
    second = load_zone_file(write(tmp_path, "cached.test.zone", text))
    assert second.nodes is first.nodes
    assert second.file == str(tmp_path / "cached.test.zone")
    changed = load_zone_file(write(tmp_path, "cached.test.zone", text + "mail A 192.0.2.9\n"))
    assert changed.nodes is not first.nodes
    assert dns.name.from_text("mail.cached.test.") in changed.nodes


def test_a_file_with_include_is_read_again_each_time(tmp_path: Path) -> None:
    """The digest covers the file, not what it includes: such files are never kept."""
    path = zones_with_include(tmp_path, "part.inc")
    write(path.parent, "part.inc", "www A 192.0.2.8\n")
    assert dns.name.from_text("www.example.com.") in load_zone_file(path).nodes
    write(path.parent, "part.inc", "web A 192.0.2.8\n")
    names = load_zone_file(path).nodes
    assert dns.name.from_text("web.example.com.") in names
    assert dns.name.from_text("www.example.com.") not in names


def test_a_refused_text_is_not_kept(tmp_path: Path) -> None:
    text = "$ORIGIN bad.test.\n" + HEAD + "www A 192.0.2.300\n"
    for _ in range(2):
        with pytest.raises(ZoneError) as refused:
            load_zone_file(write(tmp_path, "bad.test.zone", text))
        assert refused.value.problems[0].line == 6


MANY_TYPES = HEAD + """www 60 A 192.0.2.10
www 60 A 192.0.2.11
www AAAA 2001:db8::10
alias CNAME www
mail MX 10 mx1
mx1 A 192.0.2.20
txt TXT "v=spf1 -all" "two strings"
_sip._tcp SRV 10 5 5060 sip
sip A 192.0.2.30
*.wild 120 A 192.0.2.40
caa CAA 0 issue "ca.example.net"
sub NS ns.sub
ns.sub A 192.0.2.3
"""


def parsed_again(tmp_path: Path, origin: dns.name.Name, text: str) -> Zone:
    path = tmp_path / "again" / "z.zone"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text + "; not the digest kept\n")
    return load_zone_file(path, origin)


def rendered(path: Path) -> tuple[dns.name.Name, list[dns.rrset.RRset], str]:
    """A loaded zone as the API edits and writes it: its dnspython copy and that text."""
    loaded = load_zone_file(path)
    zone = editable(loaded)
    text = ConfigFiles.zone_text(zone, bump=True)
    return loaded.origin, rendered_rrsets(zone), text


@pytest.mark.parametrize("source", ["many", "geo", "diff"])
def test_a_zone_adopted_from_its_rendering_equals_the_parse_of_that_text(
        tmp_path: Path, source: str) -> None:
    """What the API skips parsing is what the parse would give: same owners, types, rdata
    and TTLs; and the reload of the written file gets that zone without a parse."""
    data = Path(__file__).resolve().parents[2] / "data" / "zones"
    path = {"many": write(tmp_path, "example.com.zone", MANY_TYPES),
            "geo": data / "geo" / "geo.test.zone",
            "diff": data / "diff" / "diff.test.zone"}[source]
    origin, rrsets, text = rendered(path)
    adopted = adopt_rendered(origin, rrsets, text.encode(), "<api>")
    assert adopted is not None
    written = tmp_path / "written" / path.name
    written.parent.mkdir()
    written.write_text(text)
    assert load_zone_file(written, origin).nodes is adopted.nodes  # kept, not parsed again
    parsed = parsed_again(tmp_path, origin, text)

    def table(zone: Zone) -> dict[tuple[str, int], tuple[int, list[str]]]:
        return {(r.name.to_text(), int(r.rdtype)): (r.ttl, sorted(x.to_text() for x in r))
                for r in zone.rrsets()}

    assert table(adopted) == table(parsed)
    assert [(r.name.to_wire(), r.rdtype) for r in adopted.rrsets()] == [  # case, order
        (r.name.to_wire(), r.rdtype) for r in parsed.rrsets()]
    assert (adopted.names, adopted.cuts, adopted.wildcards) == (
        parsed.names, parsed.cuts, parsed.wildcards)


def test_a_rendering_the_check_refuses_or_with_include_is_left_to_the_parse(
        tmp_path: Path) -> None:
    """A problem the loader's check finds (a wildcard delegation) or `$INCLUDE` anywhere
    in the text: nothing is adopted, so the parse reports it with its line."""
    path = write(tmp_path, "example.com.zone", HEAD + "*.w NS ns1\n")
    with pytest.raises(ZoneError, match="wildcard delegation"):
        load_zone_file(path)
    path = write(tmp_path, "example.com.zone", HEAD + 'w TXT "$INCLUDE /etc/passwd"\n')
    origin, rrsets, text = rendered(path)
    assert adopt_rendered(origin, rrsets, text.encode(), "<api>") is None
    bad = [*rrsets, dns.rrset.from_text("*.w.example.com.", 60, "IN", "NS", "ns1.example.com.")]
    assert adopt_rendered(origin, bad, text.encode(), "<api>") is None


def test_a_name_typed_in_another_case_than_the_origin_is_left_to_the_parse(
        tmp_path: Path) -> None:
    """An edit naming the origin in upper case (owner or SRV target): the file will hold
    the origin's case, so the edit's RRsets are not adopted as its parse."""
    path = write(tmp_path, "example.com.zone", MANY_TYPES)
    origin, rrsets, text = rendered(path)
    owner = dns.rrset.from_text("_x._tcp.EXAMPLE.COM.", 60, "IN", "SRV", "1 2 3 srv.example.com.")
    target = dns.rrset.from_text("_y._tcp.example.com.", 60, "IN", "SRV", "1 2 3 Srv.EXAMPLE.COM.")
    for extra in (owner, target):
        assert adopt_rendered(origin, [*rrsets, extra], text.encode(), "<api>") is None
    assert adopt_rendered(origin, rrsets, text.encode(), "<api>") is not None
