"""Finds the one-line entries of a policy file's `dis:` and `resources:` sections without YAML.

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

import re
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["DiLine", "Section", "split_dis", "split_sections"]

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
