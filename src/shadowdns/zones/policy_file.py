"""The declarative policy file `<origin>.policy.yaml`: load, validate, convert both ways.

A policy file declares a zone's locations, client regions, resources and destination
identifiers (DIs). This module turns one into the frozen model of `zones.policy` and back.
Validation collects every problem before failing, each with the file and the line of the
offending key or value, and raises one `PolicyError` (octoDNS style). The same checks serve
the YAML file (`load_policy`) and JSON-like data from the API or the store
(`policy_from_mapping`), which simply has no line numbers.

YAML is composed, not loaded, so that duplicate keys (which PyYAML silently lets the last one
win) are rejected and every value keeps its line. Where a string is expected, a plain YAML
scalar is read as the text written, so `NO` (Norway) stays `"NO"` instead of YAML 1.1's
`false`. The JSON Schema of the same shape ships as `shadowdns/data/policy.schema.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import ipaddress
import json
import math
import re
import socket
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import dns.exception
import dns.name
import yaml

from shadowdns.durations import parse_duration
from shadowdns.errors import PolicyError, Problem
from shadowdns.predictor.names import model_names
from shadowdns.zones.dis_lines import (
    DUMPER,
    LINE_SECTIONS,
    DiLine,
    Section,
    entry_line,
    split_sections,
)
from shadowdns.zones.policy import (
    CONTINENTS,
    DI,
    AllocationPolicy,
    HealthCheck,
    IPNetwork,
    Location,
    Policy,
    Regions,
    Resource,
    ResourceTable,
)

__all__ = [
    "POLICY_SUFFIX",
    "adopt_checked",
    "entry_to_mapping",
    "load_policy",
    "policy_from_mapping",
    "policy_json_schema",
    "policy_to_mapping",
]

POLICY_SUFFIX = ".policy.yaml"

# ISO 3166-1 alpha-2 (249 assigned codes) plus XK (Kosovo), which GeoIP databases use.
_COUNTRY_CODES = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO
    BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ
    DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP
    GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG
    KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML
    MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE
    PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL
    SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM
    US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK
"""
COUNTRIES = frozenset(_COUNTRY_CODES.split())
_CODE_HINTS = {"UK": "GB", "EL": "GR"}

MAX_TTL = 2**31 - 1
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_DEFAULT_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})

_TOP_KEYS = ("locations", "regions", "resources", "dis")
_LOCATION_KEYS = ("lat", "lon", "continent", "countries", "cidrs")
_REGIONS_KEYS = ("cidr", "map", "default")
_RESOURCE_KEYS = (
    "address",
    "address6",
    "location",
    "role",
    "capacity",
    "cost",
    "warmup",
    "check",
    "override",
)
_DI_KEYS = ("primaries", "standby", "ttl", "answers", "all_down", "policy")
_STANDBY_KEYS = ("ids", "within_km")
_ALLOCATION_KEYS = ("model", "threshold", "lead_time", "max_shadows", "min_hold", "quantile")
_CHECK_COMMON = ("type", "interval", "timeout", "rise", "fall")
_CHECK_KEYS: dict[str, tuple[str, ...]] = {
    "http": ("url", "expect_status", "expect_body", "host_header"),
    "https": ("url", "expect_status", "expect_body", "host_header"),
    "tcp": ("port", "host"),
    "dns": ("port", "host", "qname"),
    "command": ("command",),
}
_CHECK_REQUIRED = {"http": "url", "https": "url", "tcp": "port", "command": "command"}
_ALL_CHECK_KEYS = tuple(dict.fromkeys(k for keys in _CHECK_KEYS.values() for k in keys))
_CHECK_DEFAULTS = HealthCheck(type="tcp")


# --- the neutral tree: YAML nodes or plain data, each value with its line (or None) ---------


@dataclass(eq=False, slots=True)
class _Scalar:
    value: object
    line: int | None
    text: str | None = None  # what a plain YAML scalar said, before YAML 1.1 typed it


@dataclass(eq=False, slots=True)
class _Seq:
    line: int | None
    items: list[_Node] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Map:
    line: int | None
    pairs: list[tuple[_Node, _Node]] = field(default_factory=list)


_Node = _Scalar | _Seq | _Map


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _FromYAML:
    """Turns a composed YAML node graph into the neutral tree, once per node (aliases)."""

    def __init__(self, loader: yaml.SafeLoader, problems: list[Problem], source: str) -> None:
        self.loader = loader
        self.problems = problems
        self.source = source
        self.memo: dict[int, _Node] = {}

    def convert(self, node: yaml.Node) -> _Node:
        seen = self.memo.get(id(node))
        if seen is not None:
            return seen
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if node.tag not in _DEFAULT_COLLECTION_TAGS:
            self.problems.append(
                Problem(self.source, _line(node), f"YAML tag {node.tag} is not allowed here")
            )
        if isinstance(node, yaml.SequenceNode):
            seq = _Seq(_line(node))
            self.memo[id(node)] = seq
            seq.items = [self.convert(item) for item in node.value]
            return seq
        mapping = _Map(_line(node))
        self.memo[id(node)] = mapping
        mapping.pairs = self._pairs(cast(yaml.MappingNode, node))
        return mapping

    def _scalar(self, node: yaml.ScalarNode) -> _Scalar:
        # Plain scalars have style None in PyYAML and "" in libyaml.
        text = node.value if not node.style else None
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problems.append(Problem(self.source, _line(node), f"bad YAML value: {exc}"))
            value = node.value
        scalar = _Scalar(value, _line(node), text)
        self.memo[id(node)] = scalar
        return scalar

    def _key(self, node: yaml.Node) -> _Node:
        if isinstance(node, yaml.ScalarNode):  # keys are names and codes: keep the text as written
            return _Scalar(node.value, _line(node), node.value)
        return self.convert(node)

    def _pairs(self, node: yaml.MappingNode) -> list[tuple[_Node, _Node]]:
        own: list[tuple[_Node, _Node]] = []
        merged: list[tuple[_Node, _Node]] = []
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                merged.extend(self._merge_sources(value))
            else:
                own.append((self._key(key), self.convert(value)))
        if not merged:
            return own
        # `<<` merges: own keys override merged ones, earlier sources override later ones.
        taken = {k.value for k, _ in own if isinstance(k, _Scalar)}
        kept: list[tuple[_Node, _Node]] = []
        for key_node, value_node in merged:
            if isinstance(key_node, _Scalar) and key_node.value not in taken:
                taken.add(key_node.value)
                kept.append((key_node, value_node))
        return kept + own

    def _merge_sources(self, value: yaml.Node) -> Iterator[tuple[_Node, _Node]]:
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        for source in sources:
            converted = self.convert(source)
            if isinstance(converted, _Map):
                yield from converted.pairs
            else:
                self.problems.append(
                    Problem(self.source, _line(source), "a YAML merge (<<) needs a mapping")
                )


def _from_data(data: object, memo: dict[int, _Node] | None = None) -> _Node:
    """Wrap JSON-like data (dicts, lists, scalars) without lines."""
    memo = {} if memo is None else memo
    seen = memo.get(id(data))
    if seen is not None:
        return seen
    if isinstance(data, Mapping):
        mapping = _Map(None)
        memo[id(data)] = mapping
        mapping.pairs = [(_Scalar(k, None), _from_data(v, memo)) for k, v in data.items()]
        return mapping
    if isinstance(data, list | tuple):
        seq = _Seq(None)
        memo[id(data)] = seq
        seq.items = [_from_data(item, memo) for item in data]
        return seq
    return _Scalar(data, None)


# --- validation ------------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    part = key if _ID.fullmatch(key) and "." not in key else json.dumps(key)
    if not path:
        return part
    return f"{path}.{part}" if not part.startswith('"') else f"{path}[{part}]"


def _suggest(word: str, choices: Collection[str], cutoff: float = 0.75) -> str:
    """A "did you mean" hint; keys are few and distinct, so they take a lower cutoff."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _kind(node: _Node) -> str:
    if isinstance(node, _Map):
        return "a mapping"
    if isinstance(node, _Seq):
        return "a list"
    value = node.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _first_at(node: _Node) -> str:
    return "" if node.line is None else f" (first at line {node.line})"


def _is_null(node: _Node) -> bool:
    return isinstance(node, _Scalar) and node.value is None


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class _Checker:
    """Walks the neutral tree once, collecting problems and building model values."""

    def __init__(self, source: str, origin: dns.name.Name, problems: list[Problem]) -> None:
        self.source = source
        self.origin = origin
        self.problems = problems

    def problem(self, node: _Node | None, path: str, reason: str) -> None:
        where = f"{path}: " if path else ""
        self.problems.append(
            Problem(self.source, None if node is None else node.line, where + reason)
        )

    def marker(self) -> int:
        return len(self.problems)

    # -- shapes --

    def entries(self, node: _Node, path: str) -> list[tuple[str, _Node, _Node]]:
        """Key/value pairs of a mapping (null is empty); duplicates and bad keys reported."""
        if _is_null(node):
            return []
        if not isinstance(node, _Map):
            self.problem(node, path, f"must be a mapping, got {_kind(node)}")
            return []
        first: dict[str, _Node] = {}
        out: list[tuple[str, _Node, _Node]] = []
        for key_node, value_node in node.pairs:
            if not isinstance(key_node, _Scalar) or not isinstance(key_node.value, str):
                self.problem(key_node, path, f"keys must be strings, got {_kind(key_node)}")
                continue
            key = key_node.value
            if key in first:
                self.problem(key_node, path, f"duplicate key {key!r}{_first_at(first[key])}")
                continue
            first[key] = key_node
            out.append((key, key_node, value_node))
        return out

    def fields(
        self,
        node: _Node,
        path: str,
        allowed: Sequence[str],
        required: Collection[str] = (),
        hint: Mapping[str, str] | None = None,
        at: _Node | None = None,
    ) -> dict[str, _Node] | None:
        """The known keys of a fixed-shape mapping; unknown and missing keys reported.

        `at` is the key that owns this mapping: missing keys are reported on its line.
        """
        if not isinstance(node, _Map):
            what = "" if path else "the policy "
            self.problem(node, path, f"{what}must be a mapping, got {_kind(node)}")
            return None
        found: dict[str, _Node] = {}
        for key, key_node, value_node in self.entries(node, path):
            if key in allowed:
                found[key] = value_node
            elif hint is not None and key in hint:
                self.problem(key_node, _join(path, key), hint[key])
            else:
                self.problem(key_node, path, f"unknown key {key!r}{_suggest(key, allowed, 0.6)}")
        for key in required:
            if key not in found:
                self.problem(at or node, path, f"missing required key {key!r}")
        return found

    def string(self, node: _Node, path: str) -> str | None:
        if isinstance(node, _Scalar):
            if isinstance(node.value, str):
                return node.value
            if node.text is not None and node.value is not None:
                return node.text  # YAML 1.1 read it as bool/number/date; keep what was written
        self.problem(node, path, f"must be a string, got {_kind(node)}")
        return None

    def ident(self, node: _Node, path: str, what: str) -> str | None:
        text = self.string(node, path)
        if text is not None and not _ID.fullmatch(text):
            self.problem(
                node,
                path,
                f"{what} {text!r} must be 1-63 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit",
            )
            return None
        return text

    def name_key(self, key: str, key_node: _Node, path: str, what: str) -> bool:
        if _ID.fullmatch(key):
            return True
        self.problem(
            key_node,
            _join(path, key),
            f"{what} must be 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
        )
        return False

    def number(
        self,
        node: _Node,
        path: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        above: float | None = None,
        below: float | None = None,
        integer: bool = False,
        duration: bool = False,
    ) -> float | None:
        value = node.value if isinstance(node, _Scalar) else None
        if duration and isinstance(value, str):  # `90s`, `15m`, `2h`, `1d`, as everywhere
            try:
                value = parse_duration(value)
            except ValueError:
                self.problem(node, path, "must be seconds or a duration like 90s, 15m, 2h, 1d, "
                             f"got {_shown(node)}")
                return None
        ok_type = (int,) if integer else (int, float)
        if (
            not isinstance(node, _Scalar)
            or isinstance(value, bool)
            or not isinstance(value, ok_type)
            or (isinstance(value, float) and not math.isfinite(value))
        ):
            want = ("an integer" if integer else "seconds or a duration like 90s, 15m, 2h"
                    if duration else "a finite number")
            self.problem(node, path, f"must be {want}, got {_kind(node)} {_shown(node)}".rstrip())
            return None
        number = int(cast(int, value)) if integer else float(cast(float, value))
        bounds = []
        if minimum is not None:
            bounds.append((number >= minimum, f">= {_fmt(minimum)}"))
        if above is not None:
            bounds.append((number > above, f"> {_fmt(above)}"))
        if maximum is not None:
            bounds.append((number <= maximum, f"<= {_fmt(maximum)}"))
        if below is not None:
            bounds.append((number < below, f"< {_fmt(below)}"))
        if not all(ok for ok, _ in bounds):
            rule = " and ".join(text for _, text in bounds)
            self.problem(node, path, f"must be {rule}, got {_fmt(number)}")
            return None
        return number

    def integer(
        self, node: _Node, path: str, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        number = self.number(node, path, minimum=minimum, maximum=maximum, integer=True)
        return None if number is None else int(number)

    def choice(self, node: _Node, path: str, choices: Sequence[str]) -> str | None:
        text = self.string(node, path)
        if text is None:
            return None
        if text not in choices:
            listed = " | ".join(choices)
            self.problem(
                node, path, f"must be one of {listed}, got {text!r}{_suggest(text, choices)}"
            )
            return None
        return text

    def items(self, node: _Node, path: str, *, allow_scalar: bool = False) -> list[_Node] | None:
        if isinstance(node, _Seq):
            return node.items
        if allow_scalar and isinstance(node, _Scalar) and node.value is not None:
            return [node]
        self.problem(node, path, f"must be a list, got {_kind(node)}")
        return None

    def network(self, node: _Node, path: str, text: str | None = None) -> IPNetwork | None:
        text = self.string(node, path) if text is None else text
        if text is None:
            return None
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            hint = ""
            with contextlib.suppress(ValueError):
                hint = f" (did you mean {str(ipaddress.ip_network(text, strict=False))!r}?)"
            reason = "has host bits set" if hint else f"is not a valid CIDR prefix ({exc})"
            self.problem(node, path, f"{text!r} {reason}{hint}")
            return None

    def code(
        self, node: _Node, path: str, *, countries: bool = True, continents: bool = False
    ) -> str | None:
        """A country code (ISO 3166-1 alpha-2) and/or a continent code, upper case."""
        text = self.string(node, path)
        if text is None:
            return None
        valid = (COUNTRIES if countries else frozenset()) | (
            CONTINENTS if continents else frozenset()
        )
        if text in valid:
            return text
        kinds = []
        if continents:
            kinds.append("a continent code (AF AN AS EU NA OC SA)")
        if countries:
            kinds.append("an ISO 3166-1 alpha-2 country code")
        upper = _CODE_HINTS.get(text.upper(), text.upper())
        hint = f" (did you mean {upper!r}?)" if upper in valid else ""
        self.problem(node, path, f"{text!r} is not {' or '.join(kinds)}{hint}")
        return None


def _value_of(node: _Node, key: str) -> _Node | None:
    """The value under `key` in a mapping node, if any (first occurrence)."""
    if isinstance(node, _Map):
        for key_node, value_node in node.pairs:
            if isinstance(key_node, _Scalar) and key_node.value == key:
                return value_node
    return None


def _key_of(node: _Node, key: str) -> _Node | None:
    """The key node `key` in a mapping node, if any (first occurrence)."""
    if isinstance(node, _Map):
        for key_node, _ in node.pairs:
            if isinstance(key_node, _Scalar) and key_node.value == key:
                return key_node
    return None


def _shown(node: _Node) -> str:
    if not isinstance(node, _Scalar) or node.value is None:
        return ""
    if isinstance(node.value, str):
        return repr(node.value)
    return node.text if node.text is not None else repr(node.value)


# --- the sections ------------------------------------------------------------------------


@dataclass(slots=True)
class _Refs:
    """Names defined in the file, for cross-references (defined even when their body is bad)."""

    locations: set[str] = field(default_factory=set)
    check_locations: bool = True  # False when the locations section itself is unusable
    check_resources: bool = True  # False when the resources section itself is unusable
    # resource id -> role (if valid); the line reader's resources answer through a view
    roles: Mapping[str, str | None] = field(default_factory=dict)
    countries: dict[str, str] = field(default_factory=dict)  # code -> location listing it
    cidrs: dict[IPNetwork, str] = field(default_factory=dict)  # prefix -> location listing it


def _locations(c: _Checker, node: _Node, refs: _Refs) -> dict[str, Location]:
    out: dict[str, Location] = {}
    for name, key_node, body in c.entries(node, "locations"):
        if not c.name_key(name, key_node, "locations", "a location name"):
            continue
        refs.locations.add(name)
        path = _join("locations", name)
        start = c.marker()
        found = c.fields(body, path, _LOCATION_KEYS, required=("lat", "lon"), at=key_node)
        if found is None:
            continue
        lat = (
            c.number(found["lat"], f"{path}.lat", minimum=-90, maximum=90)
            if "lat" in found
            else None
        )
        lon = (
            c.number(found["lon"], f"{path}.lon", minimum=-180, maximum=180)
            if "lon" in found
            else None
        )
        continent = None
        if "continent" in found:
            continent = c.code(
                found["continent"], f"{path}.continent", countries=False, continents=True
            )
        countries: list[str] = []
        if "countries" in found:
            for item in c.items(found["countries"], f"{path}.countries") or []:
                code = c.code(item, f"{path}.countries")
                if code is None:
                    continue
                other = refs.countries.setdefault(code, name)
                if other != name or code in countries:
                    where = "this location" if other == name else f"location {other!r}"
                    c.problem(item, f"{path}.countries", f"{code} is already listed for {where}")
                    continue
                countries.append(code)
        cidrs: list[IPNetwork] = []
        if "cidrs" in found:
            for item in c.items(found["cidrs"], f"{path}.cidrs") or []:
                net = c.network(item, f"{path}.cidrs")
                if net is None:
                    continue
                other = refs.cidrs.setdefault(net, name)
                if other != name or net in cidrs:
                    where = "this location" if other == name else f"location {other!r}"
                    c.problem(item, f"{path}.cidrs", f"{net} is already listed for {where}")
                    continue
                cidrs.append(net)
        if c.marker() == start and lat is not None and lon is not None:
            out[name] = Location(name, lat, lon, continent, tuple(countries), tuple(cidrs))
    return out


def _location_ref(c: _Checker, node: _Node, path: str, refs: _Refs) -> str | None:
    name = c.string(node, path)
    if name is None:
        return None
    if refs.check_locations and name not in refs.locations:
        c.problem(node, path, f"unknown location {name!r}{_suggest(name, refs.locations)}")
        return None
    return name


def _regions(c: _Checker, node: _Node, refs: _Refs, at: _Node | None) -> Regions | None:
    start = c.marker()
    found = c.fields(node, "regions", _REGIONS_KEYS, required=("default",), at=at)
    if found is None:
        return None
    cidr: list[tuple[IPNetwork, str]] = []
    seen: dict[IPNetwork, _Node] = {}
    null = _Scalar(None, None)
    for prefix, key_node, target in c.entries(found.get("cidr", null), "regions.cidr"):
        path = _join("regions.cidr", prefix)
        net = c.network(key_node, path, prefix)
        location = _location_ref(c, target, path, refs)
        if net is not None and net in seen:
            c.problem(key_node, path, f"{net} is listed twice{_first_at(seen[net])}")
            continue
        if net is not None:
            seen[net] = key_node
        if net is not None and location is not None:
            if _conflict(c, key_node, path, refs.cidrs.get(net), location, "cidrs"):
                continue
            cidr.append((net, location))
    codes: dict[str, str] = {}
    for code_text, key_node, target in c.entries(found.get("map", null), "regions.map"):
        path = _join("regions.map", code_text)
        code = c.code(key_node, path, continents=True)
        location = _location_ref(c, target, path, refs)
        if code is not None and location is not None:
            if _conflict(c, key_node, path, refs.countries.get(code), location, "countries"):
                continue
            codes[code] = location
    default = (
        _location_ref(c, found["default"], "regions.default", refs) if "default" in found else None
    )
    if c.marker() != start or default is None:
        return None
    return Regions(default=default, cidr=tuple(cidr), codes=codes)


def _conflict(
    c: _Checker, node: _Node, path: str, owner: str | None, location: str, key: str
) -> bool:
    """A regions entry that contradicts a location's own `countries` / `cidrs` list."""
    if owner is None or owner == location:
        return False
    claim = _join(_join("locations", owner), key)
    c.problem(node, path, f"points to {location!r} but {claim} claims it")
    return True


def _check(c: _Checker, node: _Node, path: str, at: _Node | None) -> HealthCheck | None:
    start = c.marker()
    type_node = _value_of(node, "type")
    kind = None if type_node is None else c.choice(type_node, f"{path}.type", tuple(_CHECK_KEYS))
    allowed = _CHECK_COMMON + (_CHECK_KEYS[kind] if kind is not None else _ALL_CHECK_KEYS)
    hint = None
    if kind is not None:
        hint = {k: f"does not apply to {kind} checks" for k in _ALL_CHECK_KEYS if k not in allowed}
    required = ("type", _CHECK_REQUIRED[kind]) if kind in _CHECK_REQUIRED else ("type",)
    found = c.fields(node, path, allowed, required=required, hint=hint, at=at)
    if found is None:
        return None
    values: dict[str, Any] = {}
    if "interval" in found:
        values["interval"] = c.number(found["interval"], f"{path}.interval", above=0,
                                      duration=True)
    if "timeout" in found:
        values["timeout"] = c.number(found["timeout"], f"{path}.timeout", above=0,
                                     duration=True)
    for key in ("rise", "fall"):
        if key in found:
            values[key] = c.integer(found[key], f"{path}.{key}", minimum=1)
    interval = values.get("interval", _CHECK_DEFAULTS.interval)
    timeout = values.get("timeout", _CHECK_DEFAULTS.timeout)
    if interval is not None and timeout is not None and timeout > interval:
        c.problem(
            found.get("timeout", found.get("interval")),
            f"{path}.timeout",
            f"must not exceed the interval ({_fmt(timeout)} > {_fmt(interval)})",
        )
    if "url" in found and kind is not None:
        values["url"] = _url(c, found["url"], f"{path}.url", kind)
    if "port" in found:
        values["port"] = c.integer(found["port"], f"{path}.port", minimum=1, maximum=65535)
    if "host" in found:
        values["host"] = c.string(found["host"], f"{path}.host")
        if values["host"] == "":
            c.problem(found["host"], f"{path}.host", "must not be empty")
    if "qname" in found:
        values["qname"] = c.string(found["qname"], f"{path}.qname")
        if values["qname"] is not None:
            try:
                dns.name.from_text(values["qname"])
            except dns.exception.DNSException as exc:
                c.problem(found["qname"], f"{path}.qname", f"not a valid DNS name: {exc}")
    if "expect_status" in found:
        values["expect_status"] = _statuses(c, found["expect_status"], f"{path}.expect_status")
    for key in ("expect_body", "host_header"):
        if key in found:
            values[key] = c.string(found[key], f"{path}.{key}")
    if "command" in found:
        values["command"] = _argv(c, found["command"], f"{path}.command")
    if c.marker() != start or kind is None:
        return None
    return HealthCheck(type=kind, **values)  # type: ignore[arg-type]


def _statuses(c: _Checker, node: _Node, path: str) -> tuple[int, ...]:
    statuses = []
    for item in c.items(node, path, allow_scalar=True) or []:
        status = c.integer(item, path, minimum=100, maximum=599)
        if status is not None:
            statuses.append(status)
    if isinstance(node, _Seq) and not node.items:
        c.problem(node, path, "must list at least one status code")
    return tuple(statuses)


def _argv(c: _Checker, node: _Node, path: str) -> tuple[str, ...]:
    if isinstance(node, _Scalar) and isinstance(node.value, str):
        c.problem(node, path, "must be a list of arguments, not a shell string")
        return ()
    argv = []
    for item in c.items(node, path) or []:
        arg = c.string(item, path)
        if arg is not None:
            argv.append(arg)
    if isinstance(node, _Seq) and not node.items:
        c.problem(node, path, "must not be empty")
    elif argv and not argv[0]:
        c.problem(node, path, "the program (first item) must not be empty")
    return tuple(argv)


def _url(c: _Checker, node: _Node, path: str, kind: str) -> str | None:
    url = c.string(node, path)
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        c.problem(node, path, f"{url!r} is not a valid URL ({exc})")
        return None
    if parts.scheme != kind:
        c.problem(node, path, f"{url!r} must use {kind}:// in {kind} checks")
        return None
    if not parts.hostname:
        c.problem(node, path, f"{url!r} has no host")
        return None
    return url


def _resources(c: _Checker, node: _Node, refs: _Refs) -> dict[str, Resource]:
    out: dict[str, Resource] = {}
    roles: dict[str, str | None] = dict(refs.roles)
    refs.roles = roles
    for rid, key_node, body in c.entries(node, "resources"):
        if not c.name_key(rid, key_node, "resources", "a resource id"):
            continue
        path = _join("resources", rid)
        roles[rid] = None
        start = c.marker()
        found = c.fields(body, path, _RESOURCE_KEYS, required=("location", "role"), at=key_node)
        if found is None:
            continue
        role = (
            c.choice(found["role"], f"{path}.role", ("primary", "standby"))
            if "role" in found
            else None
        )
        roles[rid] = role
        location = (
            _location_ref(c, found["location"], f"{path}.location", refs)
            if "location" in found
            else None
        )
        values: dict[str, Any] = {}
        for key, version in (("address", 4), ("address6", 6)):
            if key in found:
                values[key] = _address(c, found[key], f"{path}.{key}", version)
        if "address" not in values and "address6" not in values:
            c.problem(key_node, path, "needs an address (IPv4) or an address6 (IPv6), or both")
        if "capacity" in found:
            values["capacity"] = c.number(found["capacity"], f"{path}.capacity", above=0)
        if "cost" in found:
            values["cost"] = c.number(found["cost"], f"{path}.cost", minimum=0)
        if "warmup" in found:
            values["warmup"] = c.number(found["warmup"], f"{path}.warmup", minimum=0,
                                            duration=True)
        if "check" in found:
            values["check"] = _check(c, found["check"], f"{path}.check", _key_of(body, "check"))
        if "override" in found:
            values["override"] = c.choice(
                found["override"], f"{path}.override", ("obey", "up", "down")
            )
        if c.marker() == start and role is not None and location is not None:
            out[rid] = Resource(id=rid, location=location, role=role, **values)  # type: ignore[arg-type]
    return out


def _address(c: _Checker, node: _Node, path: str, version: int) -> str | None:
    text = c.string(node, path)
    if text is None:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        c.problem(node, path, f"{text!r} is not an IP address")
        return None
    if address.version != version:
        other = "address6" if version == 4 else "address"
        c.problem(node, path, f"{text!r} is an IPv{address.version} address; put it in {other}")
        return None
    return str(address)


def _di_name(c: _Checker, text: str, key_node: _Node, path: str) -> dns.name.Name | None:
    if not text:
        c.problem(key_node, path, "a DI name must not be empty (use '@' for the zone apex)")
        return None
    try:
        name = dns.name.from_text(text, origin=c.origin)
    except dns.exception.DNSException as exc:
        c.problem(key_node, path, f"{text!r} is not a valid DNS name: {exc}")
        return None
    origin_text = c.origin.to_text(omit_final_dot=True).lower()
    if not text.endswith(".") and (
        text.lower() == origin_text or text.lower().endswith("." + origin_text)
    ):
        c.problem(
            key_node,
            path,
            f"{text!r} is relative, so it means {name}; "
            f"did you mean {text + '.'!r} (absolute names end with a dot)?",
        )
        return None
    if not name.is_subdomain(c.origin):
        c.problem(key_node, path, f"{name} is outside the zone {c.origin}")
        return None
    if name.is_wild():
        c.problem(key_node, path, f"{name}: a wildcard name cannot be a DI")
        return None
    return name


def _resource_refs(
    c: _Checker, node: _Node, path: str, refs: _Refs, role: str
) -> tuple[str, ...] | None:
    items = c.items(node, path)
    if items is None:
        return None
    start = c.marker()
    ids: list[str] = []
    for item in items:
        rid = c.string(item, path)
        if rid is None:
            continue
        known = not refs.check_resources or rid in refs.roles
        if not known:
            c.problem(item, path, f"unknown resource {rid!r}{_suggest(rid, refs.roles)}")
        elif refs.roles.get(rid) not in (None, role):
            c.problem(item, path, f"{rid} is a {refs.roles[rid]} resource, not a {role}")
        elif rid in ids:
            c.problem(item, path, f"{rid} is listed twice")
        else:
            ids.append(rid)
    return tuple(ids) if c.marker() == start else None


def _allocation(c: _Checker, node: _Node, path: str) -> AllocationPolicy | None:
    start = c.marker()
    found = c.fields(node, path, _ALLOCATION_KEYS)
    if found is None:
        return None
    values: dict[str, Any] = {}
    if "model" in found:
        values["model"] = c.choice(found["model"], f"{path}.model", model_names())
    for key in ("threshold", "lead_time", "min_hold"):
        if key in found:
            values[key] = c.number(found[key], f"{path}.{key}", minimum=0,
                                   duration=key != "threshold")
    if "max_shadows" in found:
        values["max_shadows"] = c.integer(found["max_shadows"], f"{path}.max_shadows", minimum=0)
    if "quantile" in found:
        values["quantile"] = c.number(found["quantile"], f"{path}.quantile", above=0, below=1)
    if c.marker() != start:
        return None
    return AllocationPolicy(**values)


def _di_values(
    c: _Checker, body: _Node, path: str, refs: _Refs, key_node: _Node
) -> dict[str, Any] | None:
    """The DI's fields other than its name (as `DI` keyword arguments), or None if bad."""
    start = c.marker()
    found = c.fields(body, path, _DI_KEYS, required=("primaries",), at=key_node)
    if found is None:
        return None
    primaries = None
    if "primaries" in found:
        primaries = _resource_refs(c, found["primaries"], f"{path}.primaries", refs, "primary")
        if primaries == ():
            c.problem(found["primaries"], f"{path}.primaries", "must list at least one primary")
    values: dict[str, Any] = {"primaries": primaries}
    if "standby" in found:
        standby_node = found["standby"]
        spath = f"{path}.standby"
        if isinstance(standby_node, _Map):
            sfound = c.fields(standby_node, spath, _STANDBY_KEYS) or {}
            if not sfound:
                c.problem(standby_node, spath, "needs within_km or ids")
            if "within_km" in sfound:
                values["standby_within_km"] = c.number(
                    sfound["within_km"], f"{spath}.within_km", above=0
                )
            if "ids" in sfound:
                values["standby"] = _resource_refs(
                    c, sfound["ids"], f"{spath}.ids", refs, "standby"
                )
        else:
            values["standby"] = _resource_refs(c, standby_node, spath, refs, "standby")
    if "ttl" in found:
        values["ttl"] = c.integer(found["ttl"], f"{path}.ttl", minimum=0, maximum=MAX_TTL)
    if "answers" in found:
        values["answers"] = c.integer(found["answers"], f"{path}.answers", minimum=1)
    if "all_down" in found:
        values["all_down"] = c.choice(
            found["all_down"], f"{path}.all_down", ("primaries", "nodata")
        )
    if "policy" in found:
        values["policy"] = _allocation(c, found["policy"], f"{path}.policy")
    if c.marker() != start or not primaries:
        return None
    return values


def _dis(c: _Checker, node: _Node, refs: _Refs) -> dict[dns.name.Name, DI]:
    out: dict[dns.name.Name, DI] = {}
    first_line: dict[dns.name.Name, _Node] = {}
    for text, key_node, body in c.entries(node, "dis"):
        path = _join("dis", text)
        start = c.marker()
        name = _di_name(c, text, key_node, path)
        if name is not None and name in first_line:
            c.problem(key_node, path, f"{name} is declared twice{_first_at(first_line[name])}")
            continue
        if name is not None:
            first_line[name] = key_node
        values = _di_values(c, body, path, refs, key_node)
        if values is not None and c.marker() == start and name is not None:
            out[name] = DI(name=name, **values)
    return out


class _SlowPath(Exception):
    """The line reader's entries need the full YAML path (to report their problems)."""


def _dis_from_lines(c: _Checker, entries: Iterable[DiLine], refs: _Refs,
                    resources: Mapping[str, Resource]) -> dict[dns.name.Name, DI]:
    """DIs of `dis_lines` entries: each distinct shape of body (the body with its
    primaries' ids left out) is composed and checked once; the ids are checked per line.

    Any problem (a bad body, id or name, a duplicate) raises `_SlowPath`: the whole file is
    then read as YAML, which reports every problem with its line as usual.
    """
    origin = c.origin
    origin_text = origin.to_text(omit_final_dot=True).lower()
    suffix = "." + origin_text
    tail = origin.labels
    room = _MAX_WIRE - sum(len(label) + 1 for label in tail) - 1  # the key's (`_name`)
    # `DI` arguments after the name (positional: ~1 µs a DI less than keywords).
    shapes: dict[str, tuple[Any, ...]] = {}
    # DIs with the same body share one set of values (a bounded memo: bodies that differ
    # in their primaries only repeat when resources are shared).
    bodies: dict[str, tuple[Any, ...]] = {}
    out: dict[dns.name.Name, DI] = {}
    find_primaries = _PRIMARIES.search
    for entry in entries:
        body = entry.body
        args = bodies.get(body)
        if args is None:
            found = find_primaries(body)
            shape = body if found is None else body[: found.start(1)] + body[found.end(1):]
            args = shapes.get(shape)
            if args is None:
                made = DI(name=origin, **_body_values(c, entry, refs))
                args = shapes[shape] = tuple(getattr(made, key) for key in _DI_ARGS)
            elif found is not None:
                args = (_primary_ids(found[1], resources), *args[1:])
            if len(bodies) < _BODY_MEMO:
                bodies[body] = args
        key = entry.key
        lowered = key.lower()
        if lowered == origin_text or lowered.endswith(suffix):
            raise _SlowPath  # looks relative-but-meant-absolute: let the full path explain
        name = _name(key, tail, room)
        before = len(out)
        out[name] = DI(name, *args)
        if len(out) == before:  # declared twice (one hash of the name, not two)
            raise _SlowPath
    return out


_DI_FIELDS = tuple(f.name for f in dataclasses.fields(DI))
if _DI_FIELDS[:2] != ("name", "primaries"):  # what `_dis_from_lines` passes positionally
    raise ImportError(f"DI's fields begin {_DI_FIELDS[:2]}, not (name, primaries)")
_DI_ARGS = _DI_FIELDS[1:]
_MAX_WIRE = 255  # octets of a name on the wire (RFC 1035 §3.1)
_NEW: Callable[[type[dns.name.Name]], dns.name.Name] = object.__new__
_SET: Callable[[object, str, object], None] = object.__setattr__


def _name(key: str, tail: tuple[bytes, ...], room: int) -> dns.name.Name:
    """`dns.name.Name` of the relative `key` in the zone whose labels are `tail`, with
    `room` octets of wire length left for the key. Made without `Name.__init__`, whose
    immutability context costs ~1 µs a name (a second at a million DIs), after the checks
    it makes; where it would raise, `_SlowPath` is raised."""
    raw = key.encode()
    labels = raw.split(b".")
    if len(raw) > room or not all(0 < len(label) < 64 for label in labels):
        raise _SlowPath
    name = _NEW(dns.name.Name)
    _SET(name, "labels", (*labels, *tail))
    return name


_BODY_MEMO = 4096
# `primaries: [a, b]` inside a one-line body; the ids group is what varies between DIs.
_PRIMARIES = re.compile(r"(?:^\{|,)[ \t]*primaries[ \t]*:[ \t]*\[([^\]\[{}]*)\]")
# Plain scalars YAML would read as something other than the text written.
_NOT_AN_ID = frozenset({"", "~", "null", "Null", "NULL"})


def _primary_ids(text: str, resources: Mapping[str, Resource]) -> tuple[str, ...]:
    """The ids of a flow sequence of primaries, each a known primary listed once; the
    strings are the resources' own, so a million DIs do not hold a second copy of them."""
    parts = [part.strip() for part in text.split(",")]
    ids: list[str] | None
    if isinstance(resources, ResourceTable):
        ids = resources.ids_if(parts, "primary")
    else:
        made = [resources.get(rid) for rid in parts]
        ids = [r.id for r in made if r is not None and r.role == "primary"]
    if not ids or len(ids) != len(parts) or len(set(ids)) != len(ids) \
            or not _NOT_AN_ID.isdisjoint(ids):
        raise _SlowPath
    return tuple(ids)


def _compose_body(c: _Checker, entry: DiLine, problems: list[Problem]) -> _Node:
    loader = _Loader(entry.body)
    try:
        node = loader.get_single_node()
        if node is None:
            raise _SlowPath
        return _FromYAML(loader, problems, c.source).convert(node)
    except yaml.YAMLError:
        raise _SlowPath from None
    finally:
        loader.dispose()


def _body_values(c: _Checker, entry: DiLine, refs: _Refs) -> dict[str, Any]:
    problems: list[Problem] = []
    checker = _Checker(c.source, c.origin, problems)
    body = _compose_body(c, entry, problems)
    key = _Scalar(entry.key, entry.line, entry.key)
    values = _di_values(checker, body, _join("dis", entry.key), refs, key)
    if values is None or problems:
        raise _SlowPath
    return values


# A dotted quad without leading zeros: its own canonical text.
_QUAD = (r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
         r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")
# The regular one-line resource body: such an IPv4 `address` first, then plain
# `key: value` pairs (no nesting, no `:` in values); group 2 is what DIs' resources share.
_REGULAR = re.compile(r"\{address:[ \t]+(" + _QUAD + r"),[ \t]*"
                      r"([^{}\[\]:,]+:[ \t]+[^{}\[\]:,]+(?:,[^{}\[\]:,]+:[ \t]+[^{}\[\]:,]+)*)\}")


class _Roles(Mapping[str, "str | None"]):
    """Resource id -> role, read from the resources the line reader made (no second dict
    of millions of entries)."""

    __slots__ = ("_resources",)

    def __init__(self, resources: ResourceTable) -> None:
        self._resources = resources

    def __getitem__(self, rid: str) -> str | None:
        if rid not in self._resources:
            raise KeyError(rid)
        return self._resources.role_of(rid)

    def __iter__(self) -> Iterator[str]:
        return iter(self._resources)

    def __len__(self) -> int:
        return len(self._resources)

    def __contains__(self, rid: object) -> bool:
        return rid in self._resources


def _resources_from_lines(c: _Checker, entries: Iterable[DiLine], refs: _Refs
                          ) -> ResourceTable:
    """Resources of `dis_lines` entries. A regular body (`_REGULAR`) that differs from one
    seen before only in its address reuses what that one's checks made, and is kept as a
    row of a `ResourceTable`; any other body is composed and checked alone. Any problem
    raises `_SlowPath` (see `_dis_from_lines`)."""
    table = ResourceTable()
    shapes: dict[str, int] = {}
    regular = _REGULAR.fullmatch
    valid_id = _ID.fullmatch
    pack = socket.inet_aton
    add_shaped = table.add_shaped
    for line, rid, body in entries:
        if not valid_id(rid):
            raise _SlowPath
        match = regular(body)
        try:
            if match is not None:
                shape = shapes.get(match[2])
                if shape is not None:
                    # the rest was checked with the first resource of this shape
                    add_shaped(rid, shape, pack(match[1]))
                    continue
            if rid in table:
                raise ValueError(rid)
            made = _one_resource(c, DiLine(line, rid, body), refs)
            table.add(made)
        except ValueError:  # declared twice
            raise _SlowPath from None
        if match is not None and "address" not in match[2] and made.address == match[1]:
            shapes.setdefault(match[2], table.shape(made))
    return table


def _one_resource(c: _Checker, entry: DiLine, refs: _Refs) -> Resource:
    problems: list[Problem] = []
    checker = _Checker(c.source, c.origin, problems)
    body = _compose_body(c, entry, problems)
    key = _Scalar(entry.key, entry.line, entry.key)
    section = _Map(entry.line, [(key, body)])
    saved = refs.roles
    made = _resources(checker, section, refs)
    refs.roles = saved
    if problems or entry.key not in made:
        raise _SlowPath
    return made[entry.key]


def _usable(section: _Node | None) -> bool:
    """Whether a section can be trusted to say which names exist (a mapping, or empty)."""
    return section is not None and (isinstance(section, _Map) or _is_null(section))


def _policy(
    root: _Node | None, origin: dns.name.Name, source: str, problems: list[Problem],
    lines: Mapping[str, Section] | None = None,
) -> Policy:
    c = _Checker(source, origin, problems)
    if root is None or _is_null(root):
        c.problems.append(Problem(source, 1, "the policy is empty (needs locations and regions)"))
        raise PolicyError(problems)
    found = c.fields(root, "", _TOP_KEYS, required=("locations", "regions"))
    if found is None:
        problems.sort(key=lambda p: (p.line is None, p.line or 0))
        raise PolicyError(problems)
    null = _Scalar(None, None)
    refs = _Refs(
        check_locations=_usable(found.get("locations")),
        check_resources=_usable(found.get("resources", null)),
    )
    locations = _locations(c, found.get("locations", null), refs)
    regions = None
    if "regions" in found:
        regions = _regions(c, found["regions"], refs, _key_of(root, "regions"))
    resources: Mapping[str, Resource] = _resources(c, found.get("resources", null), refs)
    if lines is not None and "resources" in lines:
        if problems or resources:
            raise _SlowPath
        table = _resources_from_lines(c, lines["resources"].consume(), refs)
        refs.roles = _Roles(table)
        resources = table
    dis = _dis(c, found.get("dis", null), refs)
    if lines is not None and "dis" in lines:
        if problems or dis:
            raise _SlowPath
        dis = _dis_from_lines(c, lines["dis"].consume(), refs, resources)
    if problems or regions is None:
        problems.sort(key=lambda p: (p.line is None, p.line or 0))
        raise PolicyError(problems)
    return Policy(origin, locations, regions, resources, dis, source)


# --- public API ------------------------------------------------------------------------------


# The last policy read from each file, by its bytes' digest: a reload and the API's reads
# of a file that has not changed since (a 10,000-DI file takes 0.3 s to read, a
# 1,000,000-DI one 35 s) get that Policy again. Policies are immutable. Held weakly: a
# policy nothing serves any more (its zone removed) is not kept for the cache's sake.
_LAST_READ: weakref.WeakValueDictionary[tuple[str, dns.name.Name], Policy] = \
    weakref.WeakValueDictionary()
# What the API checked and is writing (`adopt_checked`), held until the next read of the
# file, which takes it if the bytes match and drops it if not (an edit refused, undone).
_ADOPTED: dict[tuple[str, dns.name.Name], Policy] = {}


def load_policy(path: Path, origin: dns.name.Name) -> Policy:
    """Load and validate `<origin>.policy.yaml`; raise `PolicyError` listing every problem."""
    for _ in range(_READS - 1):
        with contextlib.suppress(_Changed):
            return _load_policy(path, origin)
    return _load_policy(path, origin)


class _Changed(Exception):
    """The policy file changed between two reads of one load (`policy_from_text`)."""


_READS = 3  # loads of a file that keeps changing under them before one fails


def _load_policy(path: Path, origin: dns.name.Name) -> Policy:
    source = str(path)
    raw = _read_bytes(path, source)
    digest = hashlib.sha256(raw).hexdigest()  # 0.2 s for 400 MB
    key = (source, origin)
    last = _ADOPTED.pop(key, None) or _LAST_READ.get(key)
    if last is not None and last.digest == digest:
        return last
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError([Problem(source, line, "the policy file is not valid UTF-8")]) from exc
    del raw  # half a gigabyte at a million DIs
    policy = dataclasses.replace(policy_from_text(text, origin, source, path, digest),
                                 digest=digest)
    _LAST_READ[(source, origin)] = policy
    return policy


def adopt_checked(path: Path, text: str, policy: Policy) -> Policy:
    """`policy`, which `text` reads as (`policy_from_text`), kept as the read of `path`
    once that file holds `text` (written UTF-8, as the API writes it), so the reload that
    follows an API edit does not read it again; returned as that read."""
    adopted = dataclasses.replace(policy, source=str(path),
                                  digest=hashlib.sha256(text.encode("utf-8")).hexdigest())
    _ADOPTED[(str(path), policy.origin)] = _LAST_READ[(str(path), policy.origin)] = adopted
    return adopted


def policy_from_text(text: str, origin: dns.name.Name, source: str = "<text>",
                     path: Path | None = None, digest: str | None = None) -> Policy:
    """Validate policy file text (`load_policy` without the file; `path`: read again
    from there, rather than kept, when the one-line sections need YAML after all, and
    `digest`: that of the bytes `text` was, which the second read must have too)."""
    split = split_sections(text, LINE_SECTIONS)
    if split is not None:
        # Big generated policies: one-line resources and DIs are read without YAML (see
        # `dis_lines`). Any problem at all sends the file down the full path, which
        # reports them.
        rest, lines = split
        del split
        if path is not None:
            del text  # the sections hold the lines; the text is read again if needed
        problems: list[Problem] = []
        with contextlib.suppress(_SlowPath, PolicyError):
            return _policy(_compose(rest, source, problems), origin, source, problems, lines)
        del rest, lines
        if path is not None:
            raw = _read_bytes(path, source)
            if digest is not None and hashlib.sha256(raw).hexdigest() != digest:
                raise _Changed  # what was digested is not what would be parsed
            text = raw.decode("utf-8-sig")
    problems = []
    return _policy(_compose(text, source, problems), origin, source, problems)


def _read_bytes(path: Path, source: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        reason = f"cannot read policy file: {exc.strerror or exc}"
        raise PolicyError([Problem(source, None, reason)]) from exc


def _compose(text: str, source: str, problems: list[Problem]) -> _Node | None:
    """The YAML text as the neutral tree; syntax errors raise `PolicyError` with the line."""
    try:
        # libyaml's parser when PyYAML has it: composing a million-DI file in pure Python
        # takes minutes. Both keep node marks, so problems still carry their lines.
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise PolicyError([Problem(source, line, f"YAML error: {exc.reason}")]) from exc
    try:
        try:
            node = loader.get_single_node()
        except yaml.reader.ReaderError as exc:  # libyaml reads lazily, so it comes here
            line = text[: exc.position].count("\n") + 1
            raise PolicyError([Problem(source, line, f"YAML error: {exc.reason}")]) from exc
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            at = None if mark is None else mark.line + 1
            reason = " ".join(part for part in (exc.context, exc.problem) if part)
            raise PolicyError([Problem(source, at, f"YAML syntax error: {reason}")]) from exc
        except yaml.YAMLError as exc:
            raise PolicyError([Problem(source, None, f"YAML error: {exc}")]) from exc
        root = None if node is None else _FromYAML(loader, problems, source).convert(node)
    finally:
        loader.dispose()
    return root


def policy_from_mapping(data: object, origin: dns.name.Name, source: str = "<api>") -> Policy:
    """Validate JSON-like data of the policy file's shape (from the API or the store)."""
    return _policy(None if data is None else _from_data(data), origin, source, [])


def policy_to_mapping(policy: Policy) -> dict[str, Any]:
    """The policy as plain data in the file's shape; keys holding their default are left out.

    `policy_from_mapping(policy_to_mapping(p), p.origin, p.source) == p` for every policy this
    module produces. The result is JSON- and YAML-serialisable.
    """
    out: dict[str, Any] = {
        "locations": {name: _location_to(loc) for name, loc in policy.locations.items()},
        "regions": _regions_to(policy.regions),
    }
    if policy.resources:
        out["resources"] = {rid: _resource_to(r) for rid, r in policy.resources.items()}
    if policy.dis:
        out["dis"] = {
            name.relativize(policy.origin).to_text(): _di_to(di) for name, di in policy.dis.items()
        }
    return out


def entry_to_mapping(policy: Policy, kind: str, key: str) -> dict[str, Any] | None:
    """One entry of `policy_to_mapping(policy)[kind]` (None if absent), without the rest:
    `kind` is "locations", "resources" or "dis" (keyed relative to the origin)."""
    if kind == "locations":
        loc = policy.locations.get(key)
        return None if loc is None else _location_to(loc)
    if kind == "resources":
        res = policy.resources.get(key)
        return None if res is None else _resource_to(res)
    if kind == "dis":
        try:
            name = dns.name.from_text(key, policy.origin)
        except dns.exception.DNSException:
            return None
        di = policy.dis.get(name)
        return None if di is None else _di_to(di)
    raise ValueError(f"no policy section {kind!r}")


def mapping_text(data: Mapping[str, Any]) -> str:
    """Policy file text of data in the file's shape: the small sections as block YAML,
    then each resource and DI on one line, the shape `load_policy` reads without YAML
    (block YAML for those too took 10 s to write and 10 s to read at 10,000 DIs). A
    section with an entry that is not a mapping is written as block YAML, for the loader
    to report."""
    block = {key: value for key, value in data.items() if key not in LINE_SECTIONS}
    lines: list[str] = []
    for key in LINE_SECTIONS:
        entries = data.get(key)
        if (isinstance(entries, Mapping) and entries
                and all(isinstance(v, Mapping) for v in entries.values())):
            lines.append(f"{key}:\n")
            lines.extend(entry_line(str(name), value) + "\n" for name, value in entries.items())
        elif key in data:
            block[key] = entries
    head = yaml.dump(block, Dumper=DUMPER, sort_keys=False, default_flow_style=False,
                     allow_unicode=True) if block else ""
    return head + "".join(lines)


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the policy file, as shipped in `shadowdns/data`."""
    text = resources.files("shadowdns").joinpath("data/policy.schema.json").read_text("utf-8")
    return cast(dict[str, Any], json.loads(text))


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _location_to(loc: Location) -> dict[str, Any]:
    out: dict[str, Any] = {"lat": _num(loc.lat), "lon": _num(loc.lon)}
    if loc.continent is not None:
        out["continent"] = loc.continent
    if loc.countries:
        out["countries"] = list(loc.countries)
    if loc.cidrs:
        out["cidrs"] = [str(net) for net in loc.cidrs]
    return out


def _regions_to(regions: Regions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if regions.cidr:
        out["cidr"] = {str(net): location for net, location in regions.cidr}
    if regions.codes:
        out["map"] = dict(regions.codes)
    out["default"] = regions.default
    return out


def _non_default(value: object, defaults: object, keys: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        mine = getattr(value, key)
        if mine != getattr(defaults, key):
            out[key] = _num(mine) if isinstance(mine, float) else mine
    return out


_RESOURCE_DEFAULTS = Resource(id="-", location="-", role="primary", address="0.0.0.0")
_DI_DEFAULTS = DI(name=dns.name.root, primaries=())


def _resource_to(res: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if res.address is not None:
        out["address"] = res.address
    if res.address6 is not None:
        out["address6"] = res.address6
    out["location"] = res.location
    out["role"] = res.role
    out.update(_non_default(res, _RESOURCE_DEFAULTS, ("capacity", "cost", "warmup", "override")))
    if res.check is not None:
        out["check"] = check_to_mapping(res.check)
    return out


def check_to_mapping(check: HealthCheck) -> dict[str, Any]:
    """A health check as the policy file writes it (only what differs from defaults)."""
    defaults = HealthCheck(type=check.type)
    keys = (*_CHECK_COMMON[1:], *_CHECK_KEYS[check.type])
    out: dict[str, Any] = {"type": check.type}
    for key, value in _non_default(check, defaults, keys).items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _di_to(di: DI) -> dict[str, Any]:
    out: dict[str, Any] = {"primaries": list(di.primaries)}
    if di.standby_within_km is not None:
        standby: dict[str, Any] = {"within_km": _num(di.standby_within_km)}
        if di.standby:
            standby["ids"] = list(di.standby)
        out["standby"] = standby
    elif di.standby:
        out["standby"] = list(di.standby)
    out.update(_non_default(di, _DI_DEFAULTS, ("ttl", "answers", "all_down")))
    policy = _non_default(di.policy, AllocationPolicy(), _ALLOCATION_KEYS)
    if policy:
        out["policy"] = policy
    return out
