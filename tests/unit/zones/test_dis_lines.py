"""The line reader for big `dis:` sections gives exactly what the YAML path gives."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import dns.exception
import dns.name
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from shadowdns.errors import PolicyError
from shadowdns.resolver.commands import demo_zones_dir
from shadowdns.zones.dis_lines import LINE_SECTIONS, entry_line, split_dis, split_sections
from shadowdns.zones.policy import Policy
from shadowdns.zones.policy_file import (
    load_policy,
    mapping_text,
    policy_from_text,
    policy_to_mapping,
)

ORIGIN = dns.name.from_text("example.com.")
ROOT = Path(__file__).resolve().parents[3]

HEAD = """\
# generated
locations:
  eu-west: {lat: 52.37, lon: 4.90, continent: EU}
  us-east: {lat: 38.90, lon: -77.04, continent: NA}
regions:
  map: {EU: eu-west, NA: us-east}
  default: eu-west
resources:
  web-eu-1: {address: 192.0.2.10, location: eu-west, role: primary}
  web-us-1: {address: 198.51.100.10, address6: '2001:db8::1', location: us-east, role: primary}
  sb-us-1: {address: 198.51.100.20, location: us-east, role: standby}
"""

BODIES = [
    "{primaries: [web-eu-1, web-us-1]}",
    "{primaries: [web-us-1], ttl: 60}",
    "{primaries: [web-eu-1], standby: [sb-us-1], answers: 2, all_down: nodata}",
    "{primaries: [web-eu-1], standby: {within_km: 800}, policy: {threshold: 5, quantile: 0.5}}",
    "{primaries: [web-eu-1, web-us-1], ttl: 0x1e}",
]


def generated(n: int, tail: str = "") -> str:
    keys = ["app", "Www.Svc", "api-v2", "_srv", "x1.y2.z3"]
    lines = ["dis:  # the services"]
    for i in range(n):
        lines.append(f"  {keys[i % len(keys)]}{i}: {BODIES[i % len(BODIES)]}")
        if i % 7 == 0:
            lines.append("")
            lines.append("  # a comment inside the section")
    return HEAD + "\n".join(lines) + "\n" + tail


def write(tmp_path: Path, text: str, name: str = "example.com.policy.yaml",
          sub: str = "") -> Path:
    (tmp_path / sub).mkdir(exist_ok=True)
    path = tmp_path / sub / name
    path.write_text(text, encoding="utf-8")
    return path


def both_ways(tmp_path: Path, text: str) -> tuple[Policy, Policy]:
    """(load of the text, load of the same text forced through YAML by a document marker)."""
    assert split_dis(text) is not None
    assert split_dis("---\n" + text) is None
    fast = load_policy(write(tmp_path, text), ORIGIN)
    slow = load_policy(write(tmp_path, "---\n" + text, sub="slow"), ORIGIN)
    return fast, dataclasses.replace(slow, source=fast.source)


def test_generated_policy_is_the_same_both_ways(tmp_path: Path) -> None:
    fast, slow = both_ways(tmp_path, generated(500, "# trailing comment\n"))
    assert fast.dis == slow.dis
    assert list(fast.dis) == list(slow.dis)
    assert fast.resources == slow.resources
    assert len(fast.dis) == 500
    # The line reader ran (the YAML path would give equal but separate values): DIs with
    # the same body share one set of values, which is what keeps a million DIs small.
    one, other = (fast.dis[dns.name.from_text(n, ORIGIN)] for n in ("app0", "app25"))
    assert one.primaries is other.primaries
    one, other = (slow.dis[dns.name.from_text(n, ORIGIN)] for n in ("app0", "app25"))
    assert one.primaries is not other.primaries


def test_a_section_after_dis_is_still_read(tmp_path: Path) -> None:
    head, resources = HEAD.split("resources:\n")
    text = head + generated(20)[len(HEAD):] + "resources:\n" + resources
    fast, slow = both_ways(tmp_path, text)
    assert fast == slow
    assert len(fast.resources) == 3


def test_dis_before_the_other_sections(tmp_path: Path) -> None:
    dis_part = generated(30)[len(HEAD):]
    text = dis_part + HEAD
    fast, slow = both_ways(tmp_path, text)
    assert fast == slow
    assert len(fast.dis) == 30


@pytest.mark.parametrize("text", [
    HEAD + "dis:\n  a: &x {primaries: [web-eu-1]}\n  b: *x\n",
    HEAD + "dis:\n  'a': {primaries: [web-eu-1]}\n",
    HEAD + "dis:\n  a:\n    primaries: [web-eu-1]\n",
    HEAD + "dis:\n  a: {primaries: [web-eu-1],\n      ttl: 5}\n",
    HEAD + "dis:\n  a: {primaries: [web-eu-1]}\n    b: {primaries: [web-eu-1]}\n",
    HEAD + "dis:\n  a: {primaries: [web-eu-1]}\n\tb: {primaries: [web-eu-1]}\n",
    "---\n" + HEAD + "dis:\n  a: {primaries: [web-eu-1]}\n",
    HEAD + "dis: {a: {primaries: [web-eu-1]}}\n",
    HEAD + "dis:\n",
    HEAD + "dis:\n  a: {primaries: [web-eu-1]}\ndis:\n  b: {primaries: [web-eu-1]}\n",
    "{locations: {},\ndis:\n  a: {primaries: [web-eu-1]}}\n",
    HEAD + "dis:\n  a: {primaries: [\"web-eu-1\"]}\n",
])
def test_anything_unusual_goes_through_yaml(text: str) -> None:
    assert split_dis(text) is None


def test_blanked_text_keeps_every_line_number() -> None:
    text = generated(10)
    split = split_dis(text)
    assert split is not None
    rest, entries = split
    assert rest.count("\n") == text.count("\n")
    lines = text.split("\n")
    for entry in entries:
        assert lines[entry.line - 1].strip().startswith(entry.key)


@pytest.mark.parametrize(("change", "reason"), [
    ("{primaries: [web-eu-9]}", "unknown resource 'web-eu-9'"),
    ("{primaries: [sb-us-1]}", "sb-us-1 is a standby resource, not a primary"),
    ("{primaries: [web-eu-1], ttl: -1}", "ttl"),
    ("{primaries: [web-eu-1], tll: 5}", "unknown key 'tll'"),
])
def test_a_bad_line_among_many_is_reported_on_its_line(
    tmp_path: Path, change: str, reason: str
) -> None:
    text = generated(200)
    lines = text.split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("  api-v2152:"))
    lines[at] = f"  api-v2152: {change}"
    with pytest.raises(PolicyError) as info:
        load_policy(write(tmp_path, "\n".join(lines)), ORIGIN)
    problems = info.value.problems
    assert [p.line for p in problems] == [at + 1], problems
    assert reason in problems[0].reason


@pytest.mark.parametrize(("dis", "line", "reason"), [
    ("  app: {primaries: [web-eu-1]}\n  APP: {primaries: [web-us-1]}\n", 14, "declared twice"),
    ("  www.example.com: {primaries: [web-eu-1]}\n", 13, "absolute names end with a dot"),
    (f"  {'a' * 64}: {{primaries: [web-eu-1]}}\n", 13, "not a valid DNS name"),
], ids=["same-name-but-case", "repeats-the-origin", "label-too-long"])
def test_a_bad_name_is_reported_on_its_line(tmp_path: Path, dis: str, line: int,
                                            reason: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(write(tmp_path, HEAD + "dis:\n" + dis), ORIGIN)
    (problem,) = info.value.problems
    assert problem.line == line and reason in problem.reason, problem


# "example.com." takes 13 octets on the wire: a relative key of 241 characters fills 255.
LONGEST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 49])


@pytest.mark.parametrize("key", [LONGEST, "a" * 63, "Mixed.Case-1", "_srv._tcp", "x"])
def test_names_the_line_reader_makes_are_dnspythons(tmp_path: Path, key: str) -> None:
    """The reader makes DI names without `Name.__init__`: each equals (and hashes, prints
    and encodes as) the name dnspython makes of the same text, up to the longest."""
    text = HEAD + f"dis:\n  {key}: {{primaries: [web-eu-1]}}\n  other: {{primaries: [web-eu-1]}}\n"
    fast, slow = both_ways(tmp_path, text)
    (made, _), expected = fast.dis, dns.name.from_text(key, ORIGIN)
    assert made == expected and hash(made) == hash(expected)
    assert (made.labels, made.to_wire(), made.to_text()) == (
        expected.labels, expected.to_wire(), expected.to_text())
    assert fast.dis == slow.dis


@pytest.mark.parametrize("key", [LONGEST + "d", "a" * 64, "a..b", ".a"])
def test_a_name_dnspython_refuses_is_refused_on_its_line(tmp_path: Path, key: str) -> None:
    """One octet past 255, a label past 63 or an empty label: the file goes down the YAML
    path, which names the line."""
    with pytest.raises(dns.exception.DNSException):
        dns.name.from_text(key, ORIGIN)
    with pytest.raises(PolicyError) as info:
        load_policy(write(tmp_path, HEAD + f"dis:\n  ok: {{primaries: [web-eu-1]}}\n"
                                           f"  {key}: {{primaries: [web-eu-1]}}\n"), ORIGIN)
    (problem,) = info.value.problems
    assert problem.line == 14, problem


def test_a_problem_elsewhere_is_reported_with_those_in_dis(tmp_path: Path) -> None:
    text = generated(20).replace("default: eu-west", "default: eu-wst")
    text = text.replace("  app0: {primaries: [web-eu-1, web-us-1]}", "  app0: {primaries: []}")
    with pytest.raises(PolicyError) as info:
        load_policy(write(tmp_path, text), ORIGIN)
    reasons = [p.reason for p in info.value.problems]
    assert any("eu-wst" in r for r in reasons) and any("at least one primary" in r
                                                         for r in reasons), reasons


RESOURCE_BODIES = [
    "{address: 10.0.{i}.1, location: eu-west, role: primary}",
    "{address: 10.1.{i}.1, location: us-east, role: primary, capacity: 50, cost: 2}",
    "{location: us-east, address: 10.2.{i}.1, role: primary}",
    "{address: 10.3.{i}.1, location: us-east, role: standby, warmup: 30, override: down}",
    "{address: 10.4.{i}.1, address6: 2001:db8::{i}, location: eu-west, role: primary}",
    "{address6: 2001:db8::1:{i}, location: eu-west, role: primary}",
]


def distinct(n: int) -> str:
    """A policy whose every DI has its own resources (the million-DI benchmark's shape)."""
    head = HEAD.split("resources:\n")[0]
    res = ["resources:"]
    dis = ["dis:"]
    for i in range(n):
        ids = []
        for j, body in enumerate(RESOURCE_BODIES):
            res.append(f"  r{i}-{j}: {body.replace('{i}', str(i))}")
            if "standby" not in body:
                ids.append(f"r{i}-{j}")
        dis.append(f"  d{i}: {{primaries: [{', '.join(ids)}], ttl: {30 + i % 3}}}")
    return head + "\n".join(res + dis) + "\n"


def test_distinct_resources_are_the_same_both_ways(tmp_path: Path) -> None:
    """One-line resources (several shapes, IPv4 and IPv6) read without YAML equal YAML's,
    and each DI's primaries are its own resources' id strings (not a second copy)."""
    text = distinct(200)
    fast, slow = both_ways(tmp_path, text)
    assert fast.resources == slow.resources
    assert list(fast.resources) == list(slow.resources)
    assert fast.dis == slow.dis
    assert len(fast.resources) == 200 * len(RESOURCE_BODIES)
    di = fast.dis[dns.name.from_text("d7", ORIGIN)]
    assert all(rid is fast.resources[rid].id for rid in di.primaries)
    assert fast.resources["r7-4"].address6 == "2001:db8::7"


@pytest.mark.parametrize(("change", "reason"), [
    ("{address: 10.0.7.256, location: eu-west, role: primary}", "not an IP address"),
    ("{address: 10.0.07.1, location: eu-west, role: primary}", "not an IP address"),
    ("{address: 10.0.7.1, location: eu-wst, role: primary}", "eu-wst"),
    ("{address: 10.0.7.1, location: eu-west, role: primery}", "primery"),
    ("{address: 10.0.7.1, address: 10.0.7.2, location: eu-west, role: primary}", "duplicate"),
    ("{address: 2001:db8::1, location: eu-west, role: primary}", "IPv6"),
])
def test_a_bad_resource_line_is_reported_on_its_line(tmp_path: Path, change: str,
                                                     reason: str) -> None:
    """A resource line unlike the others gets the same problem, on its own line, as YAML
    would report."""
    lines = distinct(50).split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("  r7-0:"))
    lines[at] = f"  r7-0: {change}"
    with pytest.raises(PolicyError) as info:
        load_policy(write(tmp_path, "\n".join(lines)), ORIGIN)
    problems = info.value.problems
    assert problems[0].line == at + 1, problems
    assert reason in problems[0].reason, problems


def test_a_resource_listed_twice_is_reported(tmp_path: Path) -> None:
    lines = distinct(5).split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("  r3-0:"))
    lines[at] = lines[at].replace("r3-0", "r2-0")
    with pytest.raises(PolicyError) as info:
        load_policy(write(tmp_path, "\n".join(lines)), ORIGIN)
    assert any(p.line == at + 1 and "duplicate" in p.reason for p in info.value.problems)


_TRICKY = ["yes", "off", "~", "null", "0x1e", "1_000", "1.5", ".5", "10.32.0.0", "2001:db8::1",
           "2001:db8::", "::1", "1:20", "a:b", "a: b", "#x", "'", '"', "", "\u2028", "\U0001f600"]
_SCALARS = (st.none() | st.booleans() | st.integers(-10**20, 10**20)
            | st.floats(allow_nan=False) | st.text(max_size=12)
            | st.sampled_from(_TRICKY))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


@given(key=st.text(min_size=1, max_size=8) | st.sampled_from([t for t in _TRICKY if t]),
       value=st.dictionaries(st.text(max_size=8), _VALUES, max_size=4))
def test_an_entry_line_reads_back_as_its_value(key: str, value: dict[str, object]) -> None:
    """Whatever the scalars (strings YAML would read as booleans, numbers or null, quotes,
    colons, any Unicode), the one line YAML reads is the value written."""
    line = entry_line(key, value)
    assert "\n" not in line
    assert yaml.safe_load("section:\n" + line + "\n") == {"section": {key: value}}


def test_a_policy_the_api_writes_is_read_without_yaml_and_is_the_same() -> None:
    """`mapping_text` of a policy (the demo's: health checks, standby pools, allocation
    policies) is one line per resource and DI, which the line reader takes, and loads as
    the policy it was made from."""
    path = next(demo_zones_dir().glob("*.policy.yaml"))
    origin = dns.name.from_text(path.name.removesuffix(".policy.yaml") + ".")
    policy = load_policy(path, origin)
    text = mapping_text(policy_to_mapping(policy))
    split = split_sections(text, LINE_SECTIONS)
    assert split is not None and set(split[1]) == set(LINE_SECTIONS)
    assert sum(s.size for s in split[1].values()) == len(policy.resources) + len(policy.dis)
    again = policy_from_text(text, origin, policy.source)
    assert policy_to_mapping(again) == policy_to_mapping(policy)


def test_a_file_changed_between_two_reads_is_loaded_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the line reader gives up and the file is read again for YAML, a file that
    changed in between (an editor's save) is loaded again from the start: the policy comes
    with the digest of the bytes it was made of, never those of the earlier read."""
    import shadowdns.zones.policy_file as policy_file

    bad = HEAD + "dis:\n  a: {primaries: [nowhere]}\n"
    good = HEAD + "dis:\n  b: {primaries: [web-eu-1]}\n"
    path = write(tmp_path, bad)
    real = policy_file._read_bytes
    reads: list[bytes] = []

    def read_while_an_editor_saves(at: Path, source: str) -> bytes:
        if len(reads) == 1:
            at.write_text(good, encoding="utf-8")
        reads.append(real(at, source))
        return reads[-1]

    monkeypatch.setattr(policy_file, "_read_bytes", read_while_an_editor_saves)
    policy = load_policy(path, ORIGIN)
    assert [bytes(r) for r in reads] == [bad.encode(), good.encode(), good.encode()]
    assert list(policy.dis) == [dns.name.from_text("b", ORIGIN)]
    assert policy.digest == hashlib.sha256(good.encode()).hexdigest()
