"""Finds the one-line entries of a policy file's `dis:` and `resources:` sections without
YAML, and writes entries in that shape (`entry_line`), so a policy the API rewrites is read
the fast way too.

A policy with a million DIs is a million lines of the same shape
(`  name: {primaries: [a, b], ttl: 30}`), and with their own resources five million
resource lines. Composing that through YAML keeps a node (with two marks) for every scalar
and takes minutes and gigabytes; this reads such a section line by line so the policy
loader can validate each distinct shape of body once and build the values directly. It
only says yes when the text's structure is unambiguous: a block mapping at column 0 with
one key of that section, whose every entry is a single line holding a plain name key and a
flow mapping made of plain characters, all at the same indentation. Anything else
(anchors, quotes, block values, multi-document files, odd indentation) leaves the section
to YAML (`split_dis`: returns None), so the results never differ.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import yaml

__all__ = [
    "DUMPER", "LINE_SECTIONS", "DiLine", "Section", "entry_line", "split_dis", "split_sections",
]

LINE_SECTIONS = ("resources", "dis")
"""The policy sections whose one-line entries are read without YAML, in file order."""

_DIS_KEY = re.compile(r"dis:[ \t]*(?:#.*)?")
_TOP_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*:(?:[ \t]|$)")
_ENTRY = re.compile(
    r"( +)([A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)[ \t]*:[ \t]+"
    r"(\{[A-Za-z0-9_.,:\[\]{} \t-]*\})[ \t]*(?:#.*)?"
)
_MARKER = re.compile(r"(?:---|\.\.\.|%)")


class DiLine(NamedTuple):
    """One `name: {…}` entry: its 1-based line, the key as written and the body text."""

    line: int
    key: str
    body: str


def _significant(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


class Section:
    """The one-line entries of a section, read again from the lines as they are iterated:
    holding six million `DiLine`s at once would cost more than the file itself. `consume`
    lets each line go once it was read (one pass only), so the values made from them
    replace the text instead of adding to it."""

    __slots__ = ("_end", "_lines", "_start", "size")

    def __init__(self, lines: list[str], start: int, end: int, size: int) -> None:
        self._lines = lines
        self._start = start
        self._end = end
        self.size = size  # entries

    def __iter__(self) -> Iterator[DiLine]:
        return self._read(consume=False)

    def consume(self) -> Iterator[DiLine]:
        return self._read(consume=True)

    def _read(self, consume: bool) -> Iterator[DiLine]:
        match_entry = _ENTRY.fullmatch
        lines = self._lines
        for i in range(self._start, self._end):
            match = match_entry(lines[i].removesuffix("\r"))
            if consume:
                lines[i] = ""
            if match is not None:
                yield DiLine(i + 1, match[2], match[3])


def split_dis(text: str) -> tuple[str, list[DiLine]] | None:
    """(the text with the `dis:` entries blanked, the entries), or None to compose it all."""
    split = split_sections(text, ("dis",))
    if split is None or "dis" not in split[1]:
        return None
    return split[0], list(split[1]["dis"])


def split_sections(text: str, keys: tuple[str, ...]
                   ) -> tuple[str, dict[str, Section]] | None:
    """(the text with the entries of the readable sections among `keys` blanked, their
    entries by section), or None when the file's structure is not plain enough for any.

    Blanked lines stay as empty lines, so every other problem keeps its line number, and a
    blanked section reads as empty. A section that is not all one-line entries is left in
    the text, for YAML.
    """
    lines = text.split("\n")
    starts: dict[str, int] = {}
    first = True
    for i, raw in enumerate(lines):
        if not raw or raw[0] in " \t#":
            if first and _significant(raw):
                return None
            continue
        line = raw.rstrip("\r")
        if _MARKER.match(line):
            return None
        if not _significant(line):
            continue
        if first and not _TOP_KEY.match(line):
            return None
        first = False
        for key in keys:
            if line.startswith(key) and _section_key(key).fullmatch(line):
                if key in starts:
                    return None
                starts[key] = i
    found: dict[str, Section] = {}
    rest = list(lines)
    for key, start in starts.items():
        section = _entries(lines, start)
        if section is not None and section.size:
            for i in range(section._start, section._end):
                rest[i] = ""
            found[key] = section
    if not found:
        return None
    return "\n".join(rest), found


def _section_key(key: str) -> re.Pattern[str]:
    return _DIS_KEY if key == "dis" else re.compile(re.escape(key) + r":[ \t]*(?:#.*)?")


def _entries(lines: list[str], start: int) -> Section | None:
    """The section's entries from the line after `start`, or None if one is not plain."""
    indent = None
    size = 0
    match_entry = _ENTRY.fullmatch
    end = len(lines)
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line.endswith("\r"):
            line = line[:-1]
        match = match_entry(line)
        if match is None:
            if not _significant(line):
                continue
            if not line.startswith((" ", "\t")):
                if not _TOP_KEY.match(line):
                    return None
                end = i
                break
            return None
        if indent is None:
            indent = len(match[1])
        elif len(match[1]) != indent:
            return None
        size += 1
    return Section(lines, start + 1, end, size)


# A scalar written without quotes: characters `_ENTRY` reads in a body. A `:` (IPv6
# addresses) is kept plain only where YAML's flow scanner reads it back (`_reads_back`).
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
"""libyaml's safe dumper where it is built: the pure-Python one takes seconds on big policies."""
_NO_FOLD = 1 << 30  # a quoted scalar folded over two lines would end the entry's line


def entry_line(key: str, value: Mapping[str, Any]) -> str:
    """`  key: {…}`: one entry of a `resources:` or `dis:` section as a single line that
    YAML reads back as `value` (and `split_sections` reads without YAML when every scalar
    is plain). Strings YAML would take for something else, or with characters a line
    body cannot hold, are double-quoted by libyaml, whose escapes keep them on one line."""
    return f"  {_scalar(key)}: {_flow(value)}"


def _flow(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_scalar(str(k))}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
        text = repr(value)  # the shortest text that reads back as the same float
        mantissa, e, exponent = text.partition("e")
        if not e:
            return text
        # YAML 1.1 reads an exponent as a float only with a dot and a signed exponent
        if "." not in mantissa:
            mantissa += ".0"
        return f"{mantissa}e{'' if exponent[0] in '+-' else '+'}{exponent}"
    return _scalar(str(value))


@functools.lru_cache(maxsize=65536)
def _scalar(text: str) -> str:
    # ids, locations and roles repeat across thousands of entries: decided once each
    if _PLAIN.fullmatch(text) and _RESOLVER.resolve(  # type: ignore[no-untyped-call]
            yaml.ScalarNode, text, (True, False)) == _STR_TAG and _reads_back(text):
        return text
    quoted: str = yaml.dump(text, Dumper=DUMPER, default_style='"', width=_NO_FOLD,
                            allow_unicode=True)
    return quoted.rstrip("\n")


def _reads_back(text: str) -> bool:
    if ":" not in text:
        return True
    try:  # `2001:db8::` ends in an indicator, `1:2:3` is a base-60 number: quoted
        read: object = yaml.load(f"{{k: [{text}]}}", Loader=_LOADER)
        return read == {"k": [text]}
    except yaml.YAMLError:
        return False
