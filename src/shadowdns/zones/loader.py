"""Reads RFC 1035 master files into `Zone`s, reporting every problem with file and line.

`serve`, `check` and reload share this one loader, so what `check` accepts is exactly
what the server will serve. dnspython parses the text; the semantic checks a DNS engineer
expects from Knot or NSD (one SOA at the apex, NS at the apex, no data outside the zone,
CNAME alone at its name) are added here because dnspython's zone silently resolves them.

`$INCLUDE` reads another file, so it is gated here, before dnspython opens anything: zone
text sent through the API may not use it at all (`includes=False`), and a file on disk may
include only regular files inside its own directory (the zones directory), at most
`MAX_INCLUDE_BYTES` each and `MAX_INCLUDE_DEPTH` deep. A target outside the directory is
refused before it is opened or even stat'ed, with one message whether it exists or not; a
device or FIFO is refused before it is opened, so nothing blocks or reads without end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import stat
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.node
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.tokenizer
import dns.zonefile

from shadowdns.errors import Problem, ZoneError
from shadowdns.zones.rules import node_conflicts
from shadowdns.zones.zone import Zone

ZONE_SUFFIX = ".zone"
MAX_INCLUDE_BYTES = 16 * 1024 * 1024  # one file named by $INCLUDE
MAX_INCLUDE_DEPTH = 8  # $INCLUDE inside included files (a file including itself stops here)
_ORIGIN_RE = re.compile(r"^\$ORIGIN\s+(\S+)", re.IGNORECASE)
_SYNTAX_RE = re.compile(r"^(?P<file>.*?):(?P<line>\d+): (?P<reason>.*)$", re.DOTALL)
# A file with more syntax errors than this is reported with the first ones only.
MAX_SYNTAX_PROBLEMS = 50


@dataclass(frozen=True, slots=True)
class _Record:
    rrset: dns.rrset.RRset
    line: int


class _LineTrackingTxn(dns.zonefile.RRsetsReaderTransaction):
    """Keeps every RRset the reader adds together with the line it came from."""

    line_of: Callable[[], int]
    records: list[_Record]
    # dnspython's version scans every rdataset for each record added (the CNAME check asks
    # for the node): quadratic in the zone size. Index by name instead.
    by_name: dict[dns.name.Name, dict[tuple[int, int], dns.rdataset.Rdataset]]

    def _get_node(self, name: dns.name.Name) -> dns.node.Node | None:
        found = self.by_name.get(name)
        if not found:
            return None
        node = dns.node.Node()  # type: ignore[no-untyped-call]
        node.rdatasets = list(found.values())
        return node

    def _put_rdataset(self, name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        super()._put_rdataset(name, rdataset)  # type: ignore[no-untyped-call]
        self.by_name.setdefault(name, {})[(int(rdataset.rdtype), int(rdataset.covers))] = \
            self.rdatasets[(name, rdataset.rdtype, rdataset.covers)]
        rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype, rdataset.covers)
        rrset.update(rdataset)  # type: ignore[no-untyped-call]
        self.records.append(_Record(rrset, self.line_of()))


    def check_put_rdataset(self, check: Callable[..., None]) -> None:
        """Drop the reader's CNAME check: it stops at the first clash, while `zones.rules`
        (applied in `_check`) reports every clash of the file, with its line."""


class _LineTrackingManager(dns.zonefile.RRSetsReaderManager):
    def writer(self, replacement: bool = False) -> _LineTrackingTxn:
        txn = _LineTrackingTxn(self, True, False)  # type: ignore[no-untyped-call]
        txn.records = []
        txn.by_name = {}
        return txn


def origin_for(path: Path) -> dns.name.Name:
    """The zone's origin: the first `$ORIGIN` before any record, else the file name."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for raw in fh:
                line = raw.split(";", 1)[0].strip()
                if not line:
                    continue
                match = _ORIGIN_RE.match(line)
                if match:
                    return dns.name.from_text(match.group(1))
                if line.startswith("$"):
                    continue
                break
    except OSError:
        pass
    stem = path.name[: -len(ZONE_SUFFIX)] if path.name.endswith(ZONE_SUFFIX) else path.name
    return dns.name.from_text(stem)


def _syntax_problem(path: Path, exc: Exception) -> Problem:
    text = str(exc)
    match = _SYNTAX_RE.match(text)
    if match:  # the file is the included one when the problem is inside a $INCLUDE
        return Problem(match.group("file"), int(match.group("line")), match.group("reason"))
    return Problem(str(path), None, text or type(exc).__name__)


def _with_text(problem: Problem) -> Problem:
    """The problem with the text of its line: dnspython's reasons ("Text input is
    malformed.") do not say which part of the record they mean."""
    if problem.line is None:
        return problem
    try:
        with open(problem.file, encoding="utf-8", errors="replace") as fh:
            for number, raw in enumerate(fh, 1):
                if number == problem.line:
                    text = raw.split(";", 1)[0].strip()
                    if not text or text.startswith("$"):  # directives name their file
                        return problem
                    shown = text if len(text) <= 80 else text[:77] + "..."
                    return Problem(problem.file, problem.line,
                                   f"{problem.reason.rstrip('.')}: {shown!r}")
    except OSError:
        pass
    return problem


def _refuse(reason: str) -> dns.exception.SyntaxError:
    return dns.exception.SyntaxError(reason)  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class _Includes:
    """What `$INCLUDE` may read: nothing (`directory` None), or files inside `directory`."""

    directory: str | None

    def allowed(self) -> None:
        if self.directory is None:
            raise _refuse("$INCLUDE is not accepted in zone text sent through the API "
                          "(it would read files on the server)")

    def resolve(self, name: str) -> str:
        """The real path of an allowed target; SyntaxError (the $INCLUDE line's) otherwise."""
        assert self.directory is not None
        if not name:
            raise _refuse("$INCLUDE needs a file name")
        target = os.path.realpath(os.path.join(self.directory, name))
        if target == self.directory or os.path.commonpath([self.directory, target]) \
                != self.directory:
            raise _refuse(f"$INCLUDE {name}: refused: only files inside the zones directory "
                          "may be included")
        try:
            info = os.stat(target)
        except OSError as exc:
            raise _refuse(f"$INCLUDE {name}: cannot read: {exc.strerror or exc}") from None
        if not stat.S_ISREG(info.st_mode):
            raise _refuse(f"$INCLUDE {name}: refused: not a regular file")
        if info.st_size > MAX_INCLUDE_BYTES:
            raise _refuse(f"$INCLUDE {name}: refused: larger than {MAX_INCLUDE_BYTES} bytes")
        return target


class _GatedTokenizer(dns.tokenizer.Tokenizer):
    """Sees a `$INCLUDE` directive before dnspython opens its file, and vets the file name.

    dnspython's reader asks for a line's first token with `get(True, True)`; when that is
    `$INCLUDE`, the next token is the file name, which this replaces with the vetted real
    path (or refuses).
    """

    def __init__(self, f: object, filename: str, includes: _Includes) -> None:
        super().__init__(f, filename)
        self.includes = includes
        self.expect_file = False
        self.record_line = 1  # where the entry being read began (its first token's line)

    def get(self, want_leading: bool = False, want_comment: bool = False,
            ) -> dns.tokenizer.Token:
        token = super().get(want_leading, want_comment)
        if want_leading and not token.is_eol_or_eof() and not token.is_comment():
            self.record_line = self.line_number
        if self.expect_file:
            self.expect_file = False
            if token.is_eol_or_eof():
                raise _refuse("$INCLUDE needs a file name")
            return dns.tokenizer.Token(dns.tokenizer.IDENTIFIER,
                                       self.includes.resolve(token.value))
        if want_leading and want_comment and token.is_identifier() \
                and token.value.upper() == "$INCLUDE":
            self.includes.allowed()
            self.expect_file = True
        return token


class _StrictReader(dns.zonefile.Reader):
    """dnspython skips records outside the origin in silence; we report them. It also opens
    `$INCLUDE` files itself and reads them to the end: every tokenizer it makes for one is
    swapped for a gated one over at most `MAX_INCLUDE_BYTES` of the (vetted) file."""

    includes: _Includes

    def __setattr__(self, name: str, value: object) -> None:
        if name == "tok" and type(value) is dns.tokenizer.Tokenizer:
            with value.file:  # read now and closed now, whatever comes next
                too_deep = len(self.saved_state) > MAX_INCLUDE_DEPTH
                text = "" if too_deep else value.file.read(MAX_INCLUDE_BYTES + 1)
            if too_deep:
                raise _refuse(f"$INCLUDE nested more than {MAX_INCLUDE_DEPTH} deep")
            if len(text) > MAX_INCLUDE_BYTES:
                raise _refuse(f"$INCLUDE {value.filename}: refused: larger than "
                              f"{MAX_INCLUDE_BYTES} bytes")
            value = _GatedTokenizer(io.StringIO(text), value.filename, self.includes)
        super().__setattr__(name, value)

    def _eat_line(self) -> None:
        name = self.last_name
        raise dns.exception.SyntaxError(  # type: ignore[no-untyped-call]
            f"{name} is outside the zone {self.zone_origin}"
        )


def _line_now(tok: dns.tokenizer.Tokenizer) -> int:
    """The line being read: the tokenizer counts a newline it has only peeked at."""
    line: int = tok.line_number
    if tok.ungotten_char == "\n" or (
        tok.ungotten_token is not None and tok.ungotten_token.is_eol()
    ):
        line -= 1
    return max(1, line)


def _record_line(tok: dns.tokenizer.Tokenizer) -> int:
    line: int = getattr(tok, "record_line", None) or max(1, tok.line_number - 1)
    return line


def _read_records(path: Path, origin: dns.name.Name, includes: bool,
                  skip: frozenset[int] = frozenset(),
                  data: bytes | None = None) -> list[_Record]:
    """The file's records; `skip` lists lines read as blank (ones already reported)."""
    manager = _LineTrackingManager(origin, False, dns.rdataclass.IN)
    gate = _Includes(os.path.realpath(path.parent) if includes else None)
    with _open_skipping(path, skip, data) as fh:
        with manager.writer(True) as txn:
            tok = _GatedTokenizer(fh, str(path), gate)
            reader = _StrictReader(tok, dns.rdataclass.IN, txn, allow_include=includes)
            reader.includes = gate
            # The line a record starts on: the same whether the file ends in a newline or
            # not, and the first line of a record in parentheses.
            txn.line_of = lambda: _record_line(reader.tok)
            try:
                reader.read()
            except dns.exception.SyntaxError as exc:
                _drop_frames(exc)
                match = _SYNTAX_RE.match(str(exc))
                reason = match.group("reason") if match else str(exc)
                where = reader.tok  # an included file's own tokenizer while inside it
                raise dns.exception.SyntaxError(  # type: ignore[no-untyped-call]
                    f"{where.filename}:{_line_now(where)}: {reason}"
                ) from None
            except (dns.zonefile.CNAMEAndOtherData, ValueError) as exc:
                _drop_frames(exc)
                # Semantic refusals raised while adding a record (CNAME beside data, SOA
                # away from the apex) come after its line has been read.
                line = _record_line(reader.tok)
                reason = str(exc)
                if "non-origin SOA" in reason:  # dnspython's words for it
                    reason = f"SOA below the apex: only the apex {origin} may have one"
                raise dns.exception.SyntaxError(  # type: ignore[no-untyped-call]
                    f"{path}:{line}: {reason}"
                ) from None
            finally:
                # `line_of` closes over the reader, which holds the transaction: a cycle
                # that would keep the whole parse (every RRset) for the cyclic collector.
                # Broken here, reference counting frees it (see `gcwatch`).
                del txn.line_of
        records: list[_Record] = txn.records
    return records


def _drop_frames(exc: BaseException) -> None:
    """Clear the locals of the frames `exc` passed through: dnspython's reader keeps the
    traceback of the error it re-raises in its own frame, a cycle that would hold the
    tokenizer, the transaction and every RRset read so far for the cyclic collector."""
    traceback.clear_frames(exc.__traceback__)


def _open_skipping(path: Path, skip: frozenset[int], data: bytes | None) -> io.TextIOBase:
    """The text to parse: `data` (the file's bytes, when already read) or the file."""
    if data is None:
        if not skip:
            return path.open(encoding="utf-8")
        with path.open(encoding="utf-8") as fh:
            lines = fh.readlines()
    else:  # newline=None: \r\n and \r read as \n, as from the file in text mode
        text = io.StringIO(data.decode("utf-8"), newline=None)
        if not skip:
            return text
        lines = text.readlines()
    for line in skip:
        if 0 < line <= len(lines):
            lines[line - 1] = "\n"
    return io.StringIO("".join(lines))


def _check(path: Path, origin: dns.name.Name, records: list[_Record]) -> list[Problem]:
    problems: list[Problem] = []
    file = str(path)
    types_at: dict[dns.name.Name, dict[int, int]] = {}
    soa_lines: list[int] = []
    for rec in records:
        name = rec.rrset.name
        rdtype = rec.rrset.rdtype
        if not name.is_subdomain(origin):
            problems.append(Problem(file, rec.line, f"{name} is outside the zone {origin}"))
            continue
        types_at.setdefault(name, {}).setdefault(int(rdtype), rec.line)
        if rdtype == dns.rdatatype.SOA:
            if name != origin:
                problems.append(Problem(file, rec.line, f"SOA at {name}, not at the apex {origin}"))
            else:
                soa_lines.extend([rec.line] * len(rec.rrset))
        if rdtype == dns.rdatatype.NS and name != origin and name.is_wild():
            problems.append(Problem(file, rec.line, f"wildcard delegation {name}"))
    if not soa_lines:
        problems.append(Problem(file, None, f"no SOA record at the apex {origin}"))
    elif len(soa_lines) > 1:
        problems.append(Problem(file, soa_lines[1], "more than one SOA record at the apex"))
    if int(dns.rdatatype.NS) not in types_at.get(origin, {}):
        problems.append(Problem(file, None, f"no NS records at the apex {origin}"))
    for name, types in types_at.items():
        if len(types) == 1 and name != origin:
            continue  # one type alone breaks no rule: skip the call for most names
        for conflict in node_conflicts(origin, name, types):
            # at the line that completes the clash, as a reader going down the file meets it
            line = max(types[t] for t in (conflict.rdtype, *conflict.others))
            problems.append(Problem(file, line, conflict.reason))
    for rec in records:
        if rec.rrset.rdtype == dns.rdatatype.CNAME and len(rec.rrset) > 1:
            problems.append(Problem(file, rec.line, f"more than one CNAME at {rec.rrset.name}"))
    return problems


# The last zone parsed per origin, by the digest of its file's bytes: an API edit checks
# its new text, then the reload reads the same bytes from the file, and the next edit reads
# that file again; parsing a 10,000-RRset zone takes a second or more each time. `Zone` is
# immutable, so the one parse serves them all. Files with `$INCLUDE` are never kept (the
# digest does not cover what they include), nor files that failed.
_PARSED: dict[dns.name.Name, tuple[bytes, Zone]] = {}


def _read(path: Path) -> tuple[bytes | None, bytes | None]:
    """The file's bytes (None if unreadable: the parse reports it, in the loader's words)
    and their digest when their parse may be kept (no `$INCLUDE`)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None, None
    if b"$INCLUDE" in data.upper():
        return data, None
    return data, hashlib.sha256(data).digest()


def load_zone_file(path: Path, origin: dns.name.Name | None = None, *,
                   includes: bool = True) -> Zone:
    """Load and validate one master file; raise ZoneError listing every problem.

    With `includes` False (zone text from the API), `$INCLUDE` is refused at its line.
    """
    if path.exists() and not path.is_file():  # a FIFO or device would block or never end
        raise ZoneError([Problem(str(path), None, "not a regular file")])
    if origin is None:
        origin = origin_for(path)
    data, digest = _read(path)
    kept = _PARSED.get(origin)
    if digest is not None and kept is not None and kept[0] == digest:
        return dataclasses.replace(kept[1], file=str(path))
    zone = _parse_zone_file(path, origin, includes, data)  # the bytes digested, not a reread
    if digest is not None:
        _PARSED[origin] = (digest, zone)
    return zone


def adopt_rendered(origin: dns.name.Name, rrsets: Iterable[dns.rrset.RRset], data: bytes,
                   file: str) -> Zone | None:
    """The zone `data` loads as, built from the RRsets `data` was rendered from (an API
    edit: dnspython's text of a zone round-trips), and kept as that text's parse, so the
    check and the reload skip parsing it (seconds for a 10,000-RRset zone). None when the
    text must be parsed after all: it has `$INCLUDE`, or the check finds a problem, which
    the parse then reports with its line."""
    if b"$INCLUDE" in data.upper():
        return None
    records = [_Record(rrset, 0) for rrset in rrsets]
    if not all(_reads_back(r.rrset, origin) for r in records) \
            or _check(Path(file), origin, records):
        return None
    zone = Zone.build(origin, (r.rrset for r in records), file=file)
    _PARSED[origin] = (hashlib.sha256(data).digest(), zone)
    return zone


def _reads_back(rrset: dns.rrset.RRset, origin: dns.name.Name) -> bool:
    """Whether the parse of this RRset's text (names relative to `origin`, as `zone_text`
    writes them) gives the same bytes, letter case included: a name typed with the
    origin in another case comes back with the origin's, as the file will hold it."""
    name = rrset.name
    if name.is_subdomain(origin) and \
            name.relativize(origin).derelativize(origin).labels != name.labels:
        return False
    if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return True  # no names in their data: most of a big zone, checked for nothing
    for rdata in rrset:
        again = dns.rdata.from_text(rrset.rdclass, rrset.rdtype,
                                    rdata.to_text(origin=origin, relativize=True),
                                    origin=origin, relativize=False)
        if again.to_wire() != rdata.to_wire():
            return False
    return True


def _parse_zone_file(path: Path, origin: dns.name.Name, includes: bool,
                     data: bytes | None) -> Zone:
    problems: list[Problem] = []
    skip: set[int] = set()
    records: list[_Record] = []
    while True:  # after a syntax error, read again without its line, to report the next
        try:
            records = _read_records(path, origin, includes, frozenset(skip), data)
            break
        except dns.exception.DNSException as exc:
            problem = _with_text(_syntax_problem(path, exc))
            problems.append(problem)
            if problem.file != str(path) or problem.line is None or problem.line in skip \
                    or len(problems) >= MAX_SYNTAX_PROBLEMS:
                raise ZoneError(problems) from None
            skip.add(problem.line)
        except (OSError, UnicodeDecodeError) as exc:
            raise ZoneError([Problem(str(path), None, f"cannot read: {exc}")]) from None
    checked = _check(path, origin, records)
    # without the lines refused above, "no SOA" and the like may be only their echo
    problems.extend(p for p in checked if not skip or p.line is not None)
    if problems:
        raise ZoneError(sorted(problems, key=lambda p: (p.file, p.line or 0)))
    return Zone.build(origin, (r.rrset for r in records), file=str(path))


def record_lines(path: Path, origin: dns.name.Name) -> dict[tuple[dns.name.Name, int], int]:
    """The line of each (owner, type) of a master file that loads; for problems found after
    loading (a static record at a DI's name), so they too can point at their line."""
    try:
        records = _read_records(path, origin, True)
    except (dns.exception.DNSException, OSError, UnicodeDecodeError):
        return {}
    lines: dict[tuple[dns.name.Name, int], int] = {}
    for rec in records:
        lines.setdefault((rec.rrset.name, int(rec.rrset.rdtype)), rec.line)
    return lines


def zone_files(directory: Path) -> list[Path]:
    """The master files a zones directory holds, in a stable order."""
    if not directory.is_dir():
        raise ZoneError([Problem(str(directory), None, "not a directory")])
    return sorted(p for p in directory.iterdir() if p.name.endswith(ZONE_SUFFIX) and p.is_file())


def load_zone_dir(directory: Path) -> dict[dns.name.Name, Zone]:
    """Load every `*.zone` in a directory; all files are checked before anything is returned."""
    problems: list[Problem] = []
    zones: dict[dns.name.Name, Zone] = {}
    for path in zone_files(directory):
        try:
            zone = load_zone_file(path)
        except ZoneError as exc:
            problems.extend(exc.problems)
            continue
        if zone.origin in zones:
            problems.append(
                Problem(str(path), None, f"zone {zone.origin} is also served from "
                        f"{zones[zone.origin].file}")
            )
            continue
        zones[zone.origin] = zone
    if problems:
        raise ZoneError(problems)
    for gone in _PARSED.keys() - zones.keys():  # zones no longer served
        _PARSED.pop(gone, None)
    return zones


def zones_from_text(items: Iterable[tuple[str, str]]) -> dict[dns.name.Name, Zone]:
    """Build zones from (origin, master-file text) pairs, e.g. for tests and the API."""
    import tempfile

    zones: dict[dns.name.Name, Zone] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for origin_text, text in items:
            origin = dns.name.from_text(origin_text)
            path = Path(tmp) / f"{origin.to_text(omit_final_dot=True) or 'root'}{ZONE_SUFFIX}"
            path.write_text(text, encoding="utf-8")
            zones[origin] = load_zone_file(path, origin)
    return zones

