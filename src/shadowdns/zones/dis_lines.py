"""Finds the one-line entries of a policy file's `dis:` section without YAML.

A policy with a million DIs is a million lines of the same shape
(`  name: {primaries: [a, b], ttl: 30}`). Composing that through YAML keeps a node (with
two marks) for every scalar and takes minutes and gigabytes; this reads such a section
line by line so the policy loader can validate each distinct body once and build the DIs
directly. It only says yes when the text's structure is unambiguous: a block mapping at
column 0 with one `dis:` key, whose every entry is a single line holding a plain name key
and a flow mapping made of plain characters, all at the same indentation. Anything else
(anchors, quotes, block values, multi-document files, odd indentation) returns None, and the
loader composes the whole file as YAML, so the results never differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DiLine", "split_dis"]

_DIS_KEY = re.compile(r"dis:[ \t]*(?:#.*)?")
_TOP_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*:(?:[ \t]|$)")
_ENTRY = re.compile(
    r"( +)([A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)[ \t]*:[ \t]+"
    r"(\{[A-Za-z0-9_.,:\[\]{} \t-]*\})[ \t]*(?:#.*)?"
)
_MARKER = re.compile(r"(?:---|\.\.\.|%)")


@dataclass(frozen=True, slots=True)
class DiLine:
    """One `name: {…}` entry: its 1-based line, the key as written and the body text."""

    line: int
    key: str
    body: str


def _significant(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def split_dis(text: str) -> tuple[str, list[DiLine]] | None:
    """(the text with the entries blanked, the entries), or None to compose it all as YAML.

    Blanked lines stay as empty lines, so every other problem keeps its line number, and
    `dis:` reads as an empty section.
    """
    lines = text.split("\n")
    start = None
    first = True
    for i, raw in enumerate(lines):
        line = raw.rstrip("\r")
        if _MARKER.match(line):
            return None
        if not _significant(line):
            continue
        if first and not _TOP_KEY.match(line):
            return None
        first = False
        if _DIS_KEY.fullmatch(line):
            if start is not None:
                return None
            start = i
    if start is None:
        return None
    entries: list[DiLine] = []
    indent = None
    end = start + 1
    for end in range(start + 1, len(lines) + 1):
        if end == len(lines):
            break
        line = lines[end].rstrip("\r")
        if not _significant(line):
            continue
        if not line.startswith((" ", "\t")):
            if not _TOP_KEY.match(line):
                return None
            break
        match = _ENTRY.fullmatch(line)
        if match is None:
            return None
        if indent is None:
            indent = len(match[1])
        elif len(match[1]) != indent:
            return None
        entries.append(DiLine(end + 1, match[2], match[3]))
        lines[end] = ""
    if not entries:
        return None
    return "\n".join(lines), entries
