"""The query path: bytes in, bytes out, from one immutable snapshot of what to answer.

`QueryEngine.respond` is what both listeners call for every message. Its first half is a
hand-written parser for the common query shape (one question, at most one OPT with
ordinary options) because dnspython costs ~50 µs per packet and the budget is a few
microseconds; a hit in the answer table costs a dict lookup and a few byte joins. Anything
unusual (other counts, compression, unknown EDNS version, malformed input) falls back to
`_slow`, which parses with dnspython and turns every failure into an rcode or a drop; that
fallback is the reference the fast path is tested against.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import logging
import socket
import struct
from collections.abc import Callable, Collection, Sequence

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from shadowdns.resolver import render, signing
from shadowdns.resolver.authority import Result, negative_soa, resolve
from shadowdns.resolver.counters import DemandCounters
from shadowdns.resolver.render import (
    SHAPE_COUNT,
    SHAPE_DO,
    SHAPE_EDNS,
    SHAPE_NSID,
    SHAPE_RD,
    Identity,
    Template,
)
from shadowdns.resolver.snapshot import DITable, GeoContext, Snapshot
from shadowdns.resolver.transfer import TransferConfig, Transfers
from shadowdns.zones.policy import DI
from shadowdns.zones.zone import Zone

log = logging.getLogger(__name__)

_COUNTS_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_COUNTS_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_OPT_HEAD = b"\x00\x00\x29"
MAX_UDP_PLAIN = 512
MAX_CACHED = 1_500_000  # shape entries (~600 B each with their base): ~0.9 GB at most
MAX_ECS_OPTS = 100_000  # per shape: client subnets whose echoed OPT is kept
MAX_NEGATIVE = 10_000  # shared negative templates (zones x apex offsets x rcodes x qtypes)
MAX_SIGNED_MISSING = 100_000  # signed denials of missing names, per (question, shape)
MAX_SHARED_BLOBS = 100_000  # distinct record blobs of compact DI answers kept for sharing
IN = int(dns.rdataclass.IN)
CH = int(dns.rdataclass.CH)
_TRANSFER = {int(dns.rdatatype.AXFR), int(dns.rdatatype.IXFR)}
_A = int(dns.rdatatype.A)
_AAAA = int(dns.rdatatype.AAAA)
_A_IN = b"\x00\x01\x00\x01"  # type A, class IN as they end a question
_AAAA_IN = b"\x00\x1c\x00\x01"
_ADDRESS = {_A, _AAAA}
_META = {int(dns.rdatatype.OPT), int(dns.rdatatype.TSIG), int(dns.rdatatype.TKEY),
         int(dns.rdatatype.MAILA), int(dns.rdatatype.MAILB)}
# A DI's routing decisions as its own answers read them (`QueryEngine._di_rows`): its
# name as text, per region (IPv4 addresses, IPv6 addresses, kind), per region TTL, kinds.
DIRows = tuple[str, list[tuple[tuple[str, ...], tuple[str, ...], str]], list[int],
               tuple[str, ...]]
# A DI's own A/AAAA question as the prewarm knows it: (name, DI, its context, DIRows).
ToldDI = tuple[dns.name.Name, DI, GeoContext, DIRows]

class LatencyHistogram:
    """Cumulative-bucket histogram of sampled answer times (Prometheus layout)."""

    BOUNDS = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1)

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1
        self.total += seconds

    def snapshot(self) -> tuple[tuple[float, ...], list[int], float]:
        """(upper bounds, cumulative counts per bound plus +Inf, sum of seconds)."""
        cumulative = list(itertools.accumulate(self.counts))
        return self.BOUNDS, cumulative, self.total


class Regional:
    """A DI answer that depends on the client's region: one template per region.

    Variants are compiled on first use (and shared between DIs that get the same bytes);
    the DI's demand counter for region i is `first + i`; `uniform` is set when every region
    gets the same bytes, so the ECS scope is 0.
    """

    __slots__ = ("ctx", "first", "uniform", "variants")

    def __init__(self, ctx: GeoContext, variants: tuple[Template, ...], first: int,
                 uniform: bool) -> None:
        self.ctx = ctx
        self.variants = variants
        self.first = first
        self.uniform = uniform


class Layout:
    """What DIs routed alike share in a compact answer: per region the header (flags and
    counts) with its query counter, where its records sit in the DI's blob, whether every
    region gets the same bytes; and, filled on first use, each shape's headers."""

    __slots__ = ("heads", "shaped", "spans", "uniform")

    def __init__(self, heads: tuple[Template, ...], spans: tuple[int, ...],
                 uniform: bool) -> None:
        self.heads = heads  # base templates: hdr and stat, no body
        self.spans = spans  # region i's records are blob[spans[2i]:spans[2i + 1]]
        self.uniform = uniform
        self.shaped: list[tuple[Template, ...] | None] = [None] * SHAPE_COUNT


class Compact:
    """A DI's own A and AAAA answers, kept as only what differs between DIs: the record
    bytes of each region (`*_blob`, addresses and TTLs) and a shared `Layout`. One per DI
    name serves every unsigned shape, so a million DIs with their own addresses fit in
    a few hundred bytes each; the reply is the header, question, records and OPT joined
    at query time. `first` is the DI's first demand counter (as in `Regional`)."""

    __slots__ = ("a", "a_blob", "aaaa", "aaaa_blob", "ctx", "first")

    def __init__(self, ctx: GeoContext, first: int, a: Layout, a_blob: bytes,
                 aaaa: Layout, aaaa_blob: bytes) -> None:
        self.ctx = ctx
        self.first = first
        self.a = a
        self.a_blob = a_blob
        self.aaaa = aaaa
        self.aaaa_blob = aaaa_blob


class AnswerTable:
    """Templates per shape and question, filled on first use and thrown away with the snapshot.

    One dict per shape avoids building a tuple key per packet. Answers compress the owner
    name against the question, so the bytes after the question are often the same for many
    names (every DI routed to the same addresses): templates and per-region variant tuples
    are interned, and a million DIs share a few thousand templates. A DI's own A and AAAA
    answers are one `Compact` entry per name instead (`compact`), looked up when the shape
    table misses.
    """

    __slots__ = ("apexes", "base", "blobs", "compact", "deps", "existing", "layouts",
                 "negative", "no_family", "nodata", "nxdomain", "qtcs", "shared",
                 "shared_variants", "signed", "signed_missing", "size", "tables")

    def __init__(self) -> None:
        self.tables: list[dict[bytes, Template | Regional]] = [{} for _ in range(SHAPE_COUNT)]
        # Per question: the answer rendered once, without EDNS and RD, that every shape's
        # template is derived from.
        self.base: dict[bytes, Template | Regional] = {}
        # The same with RRSIGs and denial records, that DO shapes derive from (signed
        # zones only): each variant is signed once, when it is compiled.
        self.signed: dict[bytes, Template | Regional] = {}
        # question + shape byte -> signed denial of a name that does not exist
        self.signed_missing: dict[bytes, Template] = {}
        # DI name (lowercase wire) -> its own A and AAAA answers for unsigned shapes
        # (compiled by `_compile_di`; counted in `size`, one per DI).
        self.compact: dict[bytes, Compact] = {}
        self.layouts: dict[tuple[tuple[Template, ...], tuple[int, ...], bool], Layout] = {}
        # record blobs of DIs routed to the same addresses, shared (up to MAX_SHARED_BLOBS:
        # DIs with addresses of their own share none)
        self.blobs: dict[bytes, bytes] = {}
        # (NODATA, kinds, TTLs) -> the layout and blob of a family no region has
        self.no_family: dict[tuple[Template, tuple[str, ...], tuple[int, ...]],
                             tuple[Layout, bytes]] = {}
        # (zone, question length, qtype) -> a DI's NODATA and the labels it is not for
        self.nodata: dict[tuple[dns.name.Name, int, int], tuple[Template, frozenset[bytes]]] = {}
        self.shared: dict[Template, Template] = {}
        self.shared_variants: dict[tuple[Template, ...], tuple[Template, ...]] = {}
        # DI name -> base keys whose answer is that DI's routing decision: what a change of
        # its shadows, health or TTL must recompile (and nothing else).
        self.deps: dict[str, list[bytes]] = {}
        # (zone, apex offset in the question, rcode, qtype) -> base template of a negative
        # answer: NXDOMAIN/NODATA bodies differ only by where the apex sits in the question,
        # so random names never fill the table and never cost a render.
        self.negative: dict[tuple[dns.name.Name, int, int, int], Template] = {}
        # Every existing name (empty non-terminals included) as lowercase wire bytes, once
        # the prewarm has listed them all (None before): a name not in it is NXDOMAIN in a
        # zone without delegations, DNAMEs or wildcards, told with a few bytes lookups.
        self.existing: set[bytes] | None = None
        # apex wire bytes -> (origin, zone is plain, labels the SOA's names have above the
        # apex: a question with one of those there compresses differently)
        self.apexes: dict[bytes, tuple[dns.name.Name, bool, frozenset[bytes]]] = {}
        # (origin, apex offset, qtype, shape) -> the NXDOMAIN template of that shape
        self.nxdomain: dict[tuple[dns.name.Name, int, int, int], Template] = {}
        # the type and class bytes of every question with a base: what a name that comes
        # or goes may have entries for (`drop_name`)
        self.qtcs: set[bytes] = set()
        self.size = 0

    def drop(self, key: bytes) -> bool:
        """Forget every shape's entry of one question; True if it had a base."""
        for table in self.tables:
            if table.pop(key, None) is not None:
                self.size -= 1
        self.signed.pop(key, None)
        return self.base.pop(key, None) is not None

    def drop_name(self, wire: bytes) -> list[bytes]:
        """Forget every question of one name (lowercase wire); the ones that had a base."""
        return [wire + qtc for qtc in self.qtcs if self.drop(wire + qtc)]

    def drop_signed(self) -> None:
        """Forget every signed entry (DO shapes), keeping the unsigned ones."""
        self.signed.clear()
        self.signed_missing.clear()
        for shape, table in enumerate(self.tables):
            if shape & SHAPE_DO:
                self.size -= len(table)
                table.clear()
        self.nxdomain = {k: v for k, v in self.nxdomain.items() if not k[3] & SHAPE_DO}

    def intern(self, template: Template) -> Template:
        return self.shared.setdefault(template, template)

    def intern_variants(self, variants: tuple[Template, ...]) -> tuple[Template, ...]:
        return self.shared_variants.setdefault(variants, variants)


class QueryEngine:
    """Answers DNS messages from the current snapshot."""

    def __init__(self, snapshot: Snapshot, counters: DemandCounters | None = None,
                 transfers: Transfers | None = None, max_cached: int = MAX_CACHED,
                 ecs_trust: Sequence[str] | None = None) -> None:
        self.snapshot = snapshot
        self.max_cached = max_cached
        # Sources whose ECS option is believed (None: every source, RFC 7871's default for
        # an authoritative server); from others the source address locates the client.
        self._ecs_trust = (None if ecs_trust is None else
                           [ipaddress.ip_network(c, strict=False) for c in ecs_trust])
        self._trusted: dict[str, bool] = {}
        self.transfers = transfers or Transfers(TransferConfig())
        self.table = AnswerTable()
        # Shapes queries have come in: the table is filled ahead for these (see prewarm).
        self.shapes_seen: set[int] = set()
        self.on_new_shape: Callable[[], None] | None = None
        self.counters = counters or DemandCounters()
        self._opt_plain = [b""] * SHAPE_COUNT
        self._opt_ecs_head = [b""] * SHAPE_COUNT
        self._set_identity(snapshot.identity)
        self.stats_hits = 0
        self.stats_misses = 0
        self.rebuilds = 0  # whole tables dropped since start (a change a swap cannot narrow)
        self.stats_slow = 0
        self.latency = LatencyHistogram()
        # Queries answered per (qtype, rcode, kind, region): one list increment per packet,
        # the labels fixed when a template is compiled. Slot 0 collects the slow path.
        self._stat_index: dict[tuple[int, int, str, str], int] = {}
        self._stat_keys: list[tuple[int, int, str, str]] = [(0, 0, "slow", "-")]
        self.stat_counts: list[int] = [0]
        self._region_stat: dict[tuple[int, str, str], int] = {}  # (qtype, kind, region)
        # per-region answer kinds, shared: a million DIs have a handful of distinct ones
        self._kinds: dict[tuple[str, ...], tuple[str, ...]] = {}
        # compact answers' parts DIs share: (qtype, kind, region, answers) -> header with
        # its counter; (qtype, TTL) -> the bytes before an address
        self._compact_heads: dict[tuple[int, str, str, int], Template] = {}
        self._rr_prefix: dict[tuple[int, int], bytes] = {}

    def _set_identity(self, identity: Identity) -> None:
        self._payload = identity.payload
        self._ecs_opts: list[dict[bytes, tuple[int, bytes]]] = [{} for _ in range(SHAPE_COUNT)]
        for shape in range(SHAPE_COUNT):
            if not shape & SHAPE_EDNS:
                continue
            opts = render.options_wire(render.opt_options(shape, identity))
            prefix = render.opt_prefix(shape, identity)
            self._opt_plain[shape] = prefix + struct.pack("!H", len(opts)) + opts
            self._opt_ecs_head[shape] = prefix  # RDLENGTH added per query
        self._nsid_wire = [
            render.options_wire(render.opt_options(s, identity)) for s in range(SHAPE_COUNT)
        ]

    def latency_histogram(self) -> tuple[tuple[float, ...], list[int], float]:
        return self.latency.snapshot()

    def stat_slot(self, qtype: int, rcode: int, kind: str, region: str) -> int:
        key = (qtype, rcode, kind, region)
        idx = self._stat_index.get(key)
        if idx is None:
            idx = len(self._stat_keys)
            self._stat_index[key] = idx
            self._stat_keys.append(key)
            self.stat_counts.append(0)
        return idx

    def query_stats(self) -> list[tuple[tuple[int, int, str, str], int]]:
        """((qtype, rcode, kind, region), queries) since start; kind is static, shadow,
        primary, fallback, nodata, or slow (answers built outside the table)."""
        return list(zip(self._stat_keys, self.stat_counts, strict=True))

    def swap(self, snapshot: Snapshot, touched: Collection[str] | None = None,
             names: Collection[dns.name.Name] = ()) -> list[bytes]:
        """Publish a new snapshot.

        `touched` names the DIs whose answers may differ in it (the rest of the table stays
        valid: a change of shadows, health or TTL cuts of the same configuration, or a
        reload that changed DI entries alone, see `reload_scope`); None means anything may
        differ and the table starts empty. `names`: DI names that appeared or went away
        (with `touched`): every question of theirs is dropped and the index of existing
        names follows. Returns the questions dropped, for the caller to compile again
        first.
        """
        same_identity = snapshot.identity == self.snapshot.identity
        previous = self.snapshot
        self.snapshot = snapshot
        if touched is None or not same_identity:
            self.table = AnswerTable()
            self.rebuilds += 1
            self._set_identity(snapshot.identity)
            return []
        table = self.table
        self._rebind(previous, snapshot)
        dropped: list[bytes] = []
        compact = table.compact
        for di in touched:
            for key in table.deps.pop(di, ()):
                if table.drop(key):
                    dropped.append(key)
            try:
                wire = dns.name.from_text(di).canonicalize().to_wire()
            except dns.exception.DNSException:
                continue
            assert wire is not None
            if compact.pop(wire, None) is not None:
                table.size -= 1
                dropped += (wire + _A_IN, wire + _AAAA_IN)
        for name in names:
            wire = name.canonicalize().to_wire()
            assert wire is not None
            dropped += table.drop_name(wire)
            zone = snapshot.zones.find(name)
            exists = zone is not None and name in zone.names
            if table.existing is not None:
                if exists:
                    table.existing.add(wire)
                else:
                    table.existing.discard(wire)
            if exists and name in snapshot.dis:
                dropped += (wire + _A_IN, wire + _AAAA_IN)  # a new DI: compiled ahead
        if names:
            table.signed_missing.clear()  # denials of names that may exist now
        return dropped

    def _rebind(self, previous: Snapshot, snapshot: Snapshot) -> None:
        """After a reload that kept the table, point the DI entries it keeps at the new
        policies' contexts (same regions and locations, so they locate clients alike):
        an entry holding the old context would keep the whole old policy alive."""
        if not (isinstance(snapshot.dis, DITable) and isinstance(previous.dis, DITable)):
            return
        new = {ctx.policy.origin: ctx for ctx in snapshot.dis.contexts()}
        if all(new.get(ctx.policy.origin, ctx).policy is ctx.policy
               for ctx in previous.dis.contexts()):
            return  # a live change: the same policies
        table = self.table
        entries = itertools.chain(table.compact.values(), table.base.values(),
                                  *(t.values() for t in table.tables))
        for entry in entries:
            if entry.__class__ is Template:
                continue
            ctx = entry.ctx  # type: ignore[union-attr]
            entry.ctx = new.get(ctx.policy.origin, ctx)  # type: ignore[union-attr]

    def refresh_signatures(self) -> bool:
        """Renew signatures when their validity is half spent: only the signed entries are
        dropped (prewarm and the query path sign them again); True if they were."""
        signer = self.snapshot.signer
        if signer is None or not signer.refresh():
            return False
        self.table.drop_signed()
        return True

    # -- the query path ------------------------------------------------------------------

    def respond_stream(self, data: bytes, addr: tuple[str, int] | None) -> list[bytes]:
        """Answer one message received over TCP: a zone transfer may take many messages."""
        if _is_transfer(data):
            return self.transfers.handle(data, addr, self.snapshot.zones.zones,
                                         self._answer_message, tcp=True)
        reply = self.respond(data, addr, tcp=True)
        return [] if reply is None else [reply]

    def respond(self, data: bytes, addr: tuple[str, int] | None = None,
                tcp: bool = False) -> bytes | None:
        """Answer one message from `addr`; None means send nothing."""
        try:
            return self._fast(data, addr, tcp)
        except Exception:  # never let a packet take the listener down
            log.exception("internal error answering a query")
            if len(data) >= 12 and not data[2] & 0x80:
                return render.error_response(data, dns.rcode.SERVFAIL)
            return None

    def _fast(self, data: bytes, addr: tuple[str, int] | None, tcp: bool) -> bytes | None:
        # Hand-written on purpose: this is the hot path (see module docstring).
        n = len(data)
        if n < 17 or data[2] & 0xF8:  # short, QR set, or opcode != QUERY
            return self._slow(data, tcp, addr)
        counts = data[4:12]
        if counts == _COUNTS_PLAIN:
            edns = False
        elif counts == _COUNTS_OPT:
            edns = True
        else:
            return self._slow(data, tcp, addr)
        i = 12
        length = data[12]
        while length:
            if length > 63:
                return self._slow(data, tcp, addr)
            i += length + 1
            if i >= n:
                return self._slow(data, tcp, addr)
            length = data[i]
        qend = i + 5
        if qend > n or i - 12 > 254:
            return self._slow(data, tcp, addr)
        shape = (1 if data[2] & 1 else 0) | (2 if data[3] & 0x10 else 0)
        ecs = b""
        if edns:
            if data[qend : qend + 3] != _OPT_HEAD or qend + 11 > n or data[qend + 6]:
                return self._slow(data, tcp, addr)
            payload = data[qend + 3] << 8 | data[qend + 4]
            if data[qend + 7] & 0x80:
                shape |= SHAPE_DO
            shape |= SHAPE_EDNS
            j = qend + 11
            if j + (data[qend + 9] << 8 | data[qend + 10]) != n:
                return self._slow(data, tcp, addr)
            while j < n:
                if j + 4 > n:
                    return self._slow(data, tcp, addr)
                code = data[j] << 8 | data[j + 1]
                olen = data[j + 2] << 8 | data[j + 3]
                end = j + 4 + olen
                if end > n:
                    return self._slow(data, tcp, addr)
                if code == 8:
                    if ecs:
                        return self._slow(data, tcp, addr)
                    ecs = data[j + 4 : end]
                elif code == 3:
                    shape |= SHAPE_NSID
                j = end
            cap = self._payload
            limit = 65535 if tcp else (payload if payload < cap else cap)
            if limit < 512:
                limit = 512
        else:
            if qend != n:
                return self._slow(data, tcp, addr)
            limit = 65535 if tcp else MAX_UDP_PLAIN
        lname = data[12 : i + 1].lower()  # the name with its root label
        qtc = data[i + 1 : qend]
        table = self.table
        # A DI's own A or AAAA (most questions) is its compact entry, looked up first.
        layout: Layout | None = None
        placed = table.compact.get(lname)
        if placed is not None and not (shape & SHAPE_DO and self.snapshot.signer is not None):
            if qtc == _A_IN:
                layout = placed.a
                blob = placed.a_blob
            elif qtc == _AAAA_IN:
                layout = placed.aaaa
                blob = placed.aaaa_blob
        tpl: Template | Regional | Compact | None = None
        if layout is None:
            key = lname + qtc
            tpl = table.tables[shape].get(key)
            if tpl is None:
                self.stats_misses += 1
                if shape not in self.shapes_seen:
                    self.shapes_seen.add(shape)
                    if self.on_new_shape is not None:
                        self.on_new_shape()
                tpl = self._compile(key, shape)
                if tpl is None:
                    return self._slow(data, tcp, addr)
                if tpl.__class__ is Compact:
                    # compiled just now: answered from the table it went into
                    if self.table.compact.get(lname) is not tpl:
                        return self._slow(data, tcp, addr)
                    return self._fast(data, addr, tcp)
            else:
                self.stats_hits += 1
        else:
            self.stats_hits += 1
        scope = 0
        records = b""
        regional: Regional | Compact | None = (
            placed if layout is not None else
            tpl if tpl.__class__ is Regional else None)
        if regional is not None:
            ctx = regional.ctx
            counted = b""
            if ecs and ecs[2] and (self._ecs_trust is None or self._trusts(addr)):
                # a client subnet with a non-zero source prefix, from a trusted source
                counted = ecs
                hit = ctx.ecs_cache.get(ecs)  # holds valid options only
                if hit is None:
                    if not _ecs_valid(ecs):
                        return render.error_response(data, dns.rcode.FORMERR, qend - 12)
                    hit = ctx.locate_ecs(ecs)
                    if hit is None:
                        return render.error_response(data, dns.rcode.FORMERR, qend - 12)
                ridx, scope = hit
            else:  # no client information: the source address decides (RFC 7871 §7.1.2)
                ip = addr[0] if addr is not None else "127.0.0.1"
                found = ctx.ip_cache.get(ip)
                ridx = ctx.locate_ip(ip) if found is None else found
            counters = self.counters
            if counters.prefix_cap:
                counters.add(regional.first + ridx, counted, addr)
            else:
                counters.counts[regional.first + ridx] += 1
            if layout is None:
                if regional.uniform:  # type: ignore[union-attr]
                    scope = 0
                tpl = regional.variants[ridx]  # type: ignore[union-attr]
            else:
                # compact: the region's records cut from the DI's blob, its header by shape
                if layout.uniform:
                    scope = 0
                spans = layout.spans
                records = blob[spans[2 * ridx] : spans[2 * ridx + 1]]
                row = layout.shaped[shape]
                if row is None:
                    row = self._shape_layout(layout, shape)
                tpl = row[ridx]
        self.stat_counts[tpl.stat] += 1  # type: ignore[union-attr]
        if ecs:
            # The OPT echoing a client subnet is the same bytes for every query from that
            # subnet with the same shape and scope: built once, then a dict hit.
            known = self._ecs_opts[shape].get(ecs)
            if known is not None and known[0] == scope:
                opt = known[1]
            else:
                built = self._ecs_opt(ecs, shape, scope)
                if built is None:
                    return render.error_response(data, dns.rcode.FORMERR, qend - 12)
                opt = built
                if len(self._ecs_opts[shape]) < MAX_ECS_OPTS:
                    self._ecs_opts[shape][ecs] = (scope, opt)
            resp = (data[:2] + tpl.hdr + data[12:qend] + records  # type: ignore[union-attr]
                    + tpl.body_noopt + opt)  # type: ignore[union-attr]
        else:
            resp = data[:2] + tpl.hdr + data[12:qend] + records + tpl.body  # type: ignore[union-attr]
        if len(resp) > limit:
            return self._slow(data, tcp, addr)
        return resp

    def _trusts(self, addr: tuple[str, int] | None) -> bool:
        """Whether the ECS option of a query from `addr` is believed (cached per source)."""
        ip = addr[0] if addr is not None else "127.0.0.1"
        known = self._trusted.get(ip)
        if known is None:
            try:
                parsed = ipaddress.ip_address(ip)
            except ValueError:
                return False
            known = any(parsed in net for net in self._ecs_trust or ())
            if len(self._trusted) < 200_000:
                self._trusted[ip] = known
        return known

    def _ecs_opt(self, ecs: bytes, shape: int, scope: int = 0) -> bytes | None:
        """OPT echoing the client's ECS option with our scope, or None if it is invalid."""
        if not _ecs_valid(ecs):
            return None
        option = render.ecs_option_wire(ecs[0] << 8 | ecs[1], ecs[2], scope, ecs[4:])
        opts = self._nsid_wire[shape] + option
        return self._opt_ecs_head[shape] + struct.pack("!H", len(opts)) + opts

    def _compile(self, key: bytes, shape: int) -> Template | Regional | Compact | None:
        """Resolve a question on a table miss and remember its template.

        The question is resolved and rendered once, without EDNS and RD (the *base*); the
        template of every other shape is derived from it by setting RD, counting the OPT
        and appending the shape's OPT bytes — nothing else in an answer depends on them.
        A name that does not exist gets the shared negative template of its zone and is
        not remembered (random names would fill the table).
        """
        signed = bool(shape & SHAPE_DO) and self.snapshot.signer is not None
        if not signed:
            if self.table.existing is not None:
                # a name that does not exist (a tenth of the queries in the benchmarks),
                # told by bytes before `_compact_for` parses it: the parse alone was 8 % of
                # the server's CPU
                nx = self._nxdomain(key, shape)
                if nx is not None:
                    return nx
            compact = self._compact_for(key)
            if compact is not None:
                return compact
        table = self.table
        base = (table.signed if signed else table.base).get(key)
        if base is None and signed:
            known = table.signed_missing.get(key + bytes([shape]))
            if known is not None:
                return known
        if base is None:
            if table.size >= self.max_cached:
                # Full (more distinct questions than the table holds): start a fresh one
                # rather than compile every miss from then on; busy questions come back.
                self.table = table = AnswerTable()
                self.rebuilds += 1
            if table.existing is not None and signed:
                nx = self._signed_nxdomain(key, shape)
                if nx is not None:
                    return nx
            found = self._compile_base(key, signed)
            if found is None:
                return None
            base, remember = found
            if not remember and signed:
                # A missing name's signed denial names it: kept in its own bounded dict,
                # never interned, so a flood of random names costs signing, not memory.
                missing = table.signed_missing
                if len(missing) >= MAX_SIGNED_MISSING:
                    missing.clear()
                made = missing[key + bytes([shape])] = self._derive(
                    base, shape, intern=False)  # type: ignore[arg-type]
                return made
            if not remember:
                return self._derive(base, shape)  # type: ignore[arg-type]
            (table.signed if signed else table.base)[key] = base
            table.qtcs.add(key[-4:])
        entry: Template | Regional
        if base.__class__ is Regional:
            regional: Regional = base
            variants = tuple(self._derive(v, shape) for v in regional.variants)
            entry = Regional(regional.ctx, table.intern_variants(variants), regional.first,
                             regional.uniform)
        else:
            entry = self._derive(base, shape)  # type: ignore[arg-type]
        table.tables[shape][key] = entry
        table.size += 1
        return entry

    def _nxdomain(self, key: bytes, shape: int) -> Template | None:
        """The NXDOMAIN template for a name that does not exist in a plain zone, found by
        byte lookups alone (no name parsing, no resolve); None when it is not that, or its
        shared template was not made yet (the full path makes it)."""
        missing = self._missing_in(key)
        if missing is None:
            return None
        origin, j = missing
        table = self.table
        end = len(key) - 4
        qtype = key[end] << 8 | key[end + 1]
        shaped = table.nxdomain.get((origin, j, qtype, shape))
        if shaped is None:
            base = table.negative.get((origin, j, dns.rcode.NXDOMAIN, qtype))
            if base is None:
                return None
            shaped = self._derive(base, shape)
            if len(table.nxdomain) < MAX_NEGATIVE:
                table.nxdomain[(origin, j, qtype, shape)] = shaped
        return shaped

    def _missing_in(self, key: bytes) -> tuple[dns.name.Name, int] | None:
        """(zone origin, apex offset in the question) when the question's name does not
        exist in a plain zone whose negative answer the apex offset alone decides, told
        by byte lookups; None when it is not that."""
        table = self.table
        end = len(key) - 4
        existing = table.existing
        assert existing is not None
        if key[:end] in existing:
            return None
        apexes = table.apexes
        above = 0
        j = 0
        while key[j]:
            nxt = j + key[j] + 1
            if nxt > end:
                return None
            above, j = j, nxt
            found = apexes.get(key[j:end])
            if found is None:
                continue
            origin, plain, special = found
            if not plain or key[above + 1 : j].lower() in special:
                return None
            return origin, j
        return None

    def _signed_nxdomain(self, key: bytes, shape: int) -> Template | None:
        """The signed denial of a name that does not exist in a plain zone, by byte
        lookups as `_nxdomain` and one signature (the NSEC's); remembered in the bounded
        `signed_missing`. None when it is not that, or the zone's signed SOA part for
        this apex offset was not made yet (the full path makes it)."""
        missing = self._missing_in(key)
        signer = self.snapshot.signer
        if missing is None or signer is None:
            return None
        origin, offset = missing
        zone = self.snapshot.zones.zones.get(origin)
        if zone is None:
            return None
        end = len(key) - 4
        base = self._denial(zone, negative_soa(zone), offset, key[:end], {signing.NXNAME},
                            key[end] << 8 | key[end + 1], "static", intern=False)
        if base is None:
            return None
        table = self.table
        if len(table.signed_missing) >= MAX_SIGNED_MISSING:
            table.signed_missing.clear()
        made = table.signed_missing[key + bytes([shape])] = self._derive(base, shape,
                                                                         intern=False)
        return made

    def prepare(self, key: bytes, shapes: Collection[int],
                told: ToldDI | None = None) -> bool:
        """Compile one question ahead of its queries: its base, and its template for each
        of `shapes` not yet in the table. False when it has no table entry (not ours,
        not cacheable, or a name that does not exist). `told`: the question is this DI's
        own A or AAAA (`prepare_di`), with its routing decisions already read."""
        if self._compact_for(key) is not None:
            if self.snapshot.signer is None:
                return True
            shapes = [shape for shape in shapes if shape & SHAPE_DO]  # the signed ones
        else:
            table = self.table
            if key not in table.base:
                found = self._compile_base(key)
                if found is None or not found[1]:
                    return False
                table.base[key] = found[0]
                table.qtcs.add(key[-4:])
        table = self.table
        if self.snapshot.signer is not None and key not in table.signed:
            # signed zones: the signed base too, so the first DO query of a cold server
            # derives its shape from it instead of signing on the spot
            signed = self._compile_base(key, signed=True, told=told)
            if signed is not None and signed[1]:
                table.signed[key] = signed[0]
                table.qtcs.add(key[-4:])
        for shape in shapes:
            if key not in self.table.tables[shape] and self._compile(key, shape) is None:
                return False
        return True

    def _derive(self, base: Template, shape: int, intern: bool = True) -> Template:
        flags = base.hdr[0] | (1 if shape & SHAPE_RD else 0)
        if not shape & SHAPE_EDNS:
            derived = Template(bytes([flags]) + base.hdr[1:], base.body, base.body, base.stat)
        else:
            arcount = (base.hdr[8] << 8 | base.hdr[9]) + 1
            hdr = bytes([flags]) + base.hdr[1:8] + arcount.to_bytes(2, "big")
            derived = Template(hdr, base.body + self._opt_plain[shape], base.body, base.stat)
        return self.table.intern(derived) if intern else derived

    def _compile_base(self, key: bytes, signed: bool = False, told: ToldDI | None = None
                      ) -> tuple[Template | Regional, bool] | None:
        """The base entry of a question (`key`: lowercase name, type, class as on the wire)
        and whether to remember it per question; None: answer it on the slow path.
        `signed`: the entry DO queries get from a signed zone (RRSIGs and denial).
        `told`: `key` is that DI's own A or AAAA (see `prepare`): not parsed again."""
        qtype, qclass = struct.unpack_from("!HH", key, len(key) - 4)
        if told is not None:
            qname = told[0]
        else:
            try:
                qname = dns.name.from_wire(key, 0)[0]
            except dns.exception.DNSException:
                return None
        if qclass != IN or qtype in _TRANSFER or qtype in _META:
            return None  # rare shapes take the slow path uncached
        snap = self.snapshot
        question_len = len(key)
        if qtype in _ADDRESS and signed:
            if told is not None:
                direct = self._compile_di_signed(key, told[1], told[2], qname, qtype,
                                                 told[3])
            else:
                dynamic = snap.dis.get(qname)
                direct = (None if dynamic is None else
                          self._compile_di_signed(key, dynamic[0], dynamic[1], qname, qtype))
            if direct is not None:
                return direct, True
        result = resolve(snap.zones, qname, qtype)
        if result.rcode == dns.rcode.REFUSED:
            return None  # do not let random out-of-zone names fill the table
        dynamic = snap.dis.get(result.final_name) if result.final_name is not None else None
        if dynamic is not None and qtype in _ADDRESS and not result.referral:
            regional = self._compile_regional(key, result, dynamic[0], dynamic[1], qname,
                                              qtype, signed)
            return None if regional is None else (regional, True)
        if signed:
            # Black-lie denials name the question, so none is shared; names that do not
            # exist are signed for each query and not remembered (random names would
            # fill the table).
            missing = result.rcode == dns.rcode.NXDOMAIN
            denial = self._signed_denial(result, qname, qtype, question_len, "static",
                                         intern=not missing)
            if denial is not None:
                return denial, not missing
            tpl = self._template(result, qname, qtype, 0, question_len, signed=True,
                                 intern=not missing)
            return None if tpl is None else (tpl, not missing)
        negative = self._negative(result, qname, qtype, question_len)
        if negative is not None:
            return negative, result.rcode != dns.rcode.NXDOMAIN
        tpl = self._template(result, qname, qtype, 0, question_len)
        return None if tpl is None else (tpl, True)

    def _negative(self, result: Result, qname: dns.name.Name, qtype: int,
                  question_len: int) -> Template | None:
        """The shared template of a plain NXDOMAIN/NODATA (only the zone's SOA in the
        authority section), or None for any other answer.

        Its bytes depend on the question only through the apex's offset in it (the SOA
        owner is a pointer there), unless a name in the SOA data shares the question's
        label above the apex (it would compress further): those are rendered alone.
        """
        zone = result.zone
        if (zone is None or result.answer or result.additional or result.ede is not None
                or result.referral or len(result.authority) != 1
                or result.authority[0] is not negative_soa(zone)):
            return None
        depth = len(zone.origin)
        if len(qname) > depth and qname.labels[-depth - 1].lower() in zone.soa_labels:
            return self._template(result, qname, qtype, 0, question_len)
        offset = question_len - 4 - sum(len(label) + 1 for label in zone.origin.labels)
        known_key = (zone.origin, offset, result.rcode, qtype)
        known = self.table.negative.get(known_key)
        if known is None:
            known = self._template(result, qname, qtype, 0, question_len)
            if known is None:
                return None
            if len(self.table.negative) < MAX_NEGATIVE:
                self.table.negative[known_key] = known
        return known

    def _template(self, result: Result, qname: dns.name.Name, qtype: int, shape: int,
                  question_len: int, kind: str = "static", region: str = "-",
                  signed: bool = False, intern: bool = True) -> Template | None:
        snap = self.snapshot
        if signed and snap.signer is not None:
            plain = self._signed_address(result, qname, qtype, kind, region, intern)
            if plain is not None:
                return plain
            result = snap.signer.sign(result, qname, qtype)
        msg = render.build_message(result, qname, qtype, IN, shape, snap.identity)
        wire = render.render(msg)
        if wire[2] & 0x02:  # truncated even at 64 KiB: never cache
            return None
        tpl = render.make_template(wire, question_len, render.opt_length(shape, snap.identity))
        stat = self.stat_slot(qtype, result.rcode, kind, region)
        made = Template(tpl.hdr, tpl.body, tpl.body_noopt, stat)
        return self.table.intern(made) if intern else made

    def _di_rows(self, di: DI, ctx: GeoContext) -> DIRows:
        """A DI's routing decisions as its own A and AAAA answers read them: (its name as
        text, per region (IPv4 addresses, IPv6 addresses, kind), per region TTL, kinds).

        Made once per DI and handed to both `_compile_di` and `_compile_di_signed`, so a
        signed zone does not decide (nor read the primaries) again for the DO variants;
        the decisions are `GeoContext`'s (`decide`), the ones the slow path and `explain`
        read. Without shadows the addresses are read through `addresses_of` (no
        `Resource` made per primary); with them, region by region from `decision`."""
        di_text = di.name.to_text()
        rows: list[tuple[tuple[str, ...], tuple[str, ...], str]] = []  # (v4, v6, kind)
        chosen = ctx.addresses_of(di, di_text)
        if chosen is None:  # the DI has shadows: decided region by region
            for ridx in range(len(ctx.regions)):
                decision = ctx.decision(di, ridx)
                rows.append((tuple(decision.addresses(4)), tuple(decision.addresses(6)),
                             decision.kind))
        else:
            addresses, picks = chosen
            for positions, picked in picks:
                if len(positions) == 1:
                    four, six = addresses[positions[0]]
                    rows.append(((four,) if four else (), (six,) if six else (), picked))
                else:
                    rows.append((
                        tuple(dict.fromkeys(a for a, _ in (addresses[i] for i in positions)
                                            if a)),
                        tuple(dict.fromkeys(a for _, a in (addresses[i] for i in positions)
                                            if a)),
                        picked))
        ttls = ctx.ttls
        row_ttls = [ttls.get((di_text, region), di.ttl) if ttls else di.ttl
                    for region in ctx.regions]
        kinds = tuple(row[2] for row in rows)
        return di_text, rows, row_ttls, self._kinds.setdefault(kinds, kinds)

    def _signed_address(self, result: Result, qname: dns.name.Name, qtype: int, kind: str,
                        region: str, intern: bool) -> Template | None:
        """The signed base template of an answer that is one A or AAAA RRset at the
        question's own name and nothing else (a static address name), made by hand as
        `_compile_di_signed` makes a DI's: the RRset and its RRSIG after it, owners a
        pointer to the question; None for any other answer (dnspython renders those).

        Hand-written on purpose: every static name of a signed zone is compiled this way
        at a cold start, and `Signer.sign` plus dnspython's rendering cost ~0.5 ms where
        this is one signature. The bytes are those dnspython renders for the signed
        result (address RDATA has no names to compress); the signed-vs-slow-path test
        checks them."""
        signer = self.snapshot.signer
        zone = result.zone
        if (signer is None or zone is None or qtype not in _ADDRESS or not result.aa
                or result.rcode != dns.rcode.NOERROR or len(result.answer) != 1
                or result.authority or result.additional or result.ede is not None
                or result.referral):
            return None
        rrset = result.answer[0]
        zone_key = signer.keys.get(zone.origin)
        if (zone_key is None or rrset.rdtype != qtype or rrset.covers != dns.rdatatype.NONE
                or rrset.rdclass != IN or rrset.name != qname
                or not rrset.name.is_subdomain(zone.origin)
                or zone_key.signers_for(qtype) != (zone_key,)):
            return None
        owner = rrset.name.canonicalize().to_wire()
        assert owner is not None
        rdatas = [rdata.to_digestable(zone.origin) for rdata in rrset]
        body = signing.signed_rrset_wire(signer, zone_key, owner, qtype, rrset.ttl, rdatas)
        hdr = b"\x84\x00\x00\x01" + struct.pack("!HHH", len(rdatas) + 1, 0, 0)
        made = Template(hdr, body, body, self.stat_slot(qtype, result.rcode, kind, region))
        return self.table.intern(made) if intern else made

    def _compile_di(self, name: bytes, di: DI, ctx: GeoContext, qname: dns.name.Name,
                    rows_of: DIRows | None = None) -> Compact | None:
        """A DI's own A and AAAA answers as a `Compact` entry, rendered by hand from each
        region's routing choice (a region without an address of the family gets the zone's
        shared NODATA); None (the full path) when a DNAME could redirect the name.

        Hand-written on purpose: it is what a cold table and every change of health or TTL
        compile, for every DI; dnspython costs ~30 µs per answer. The bytes are the ones
        dnspython renders for the same answer (owner = a pointer to the question), which
        the fast-vs-slow property tests check.
        """
        zone = self.snapshot.zones.zones.get(ctx.policy.origin)
        if zone is None or zone.dnames:
            return None
        if rows_of is None:
            rows_of = self._di_rows(di, ctx)
        di_text, rows, row_ttls, kinds = rows_of
        regions = ctx.regions
        built = []
        for v4 in (True, False):
            made = self._compact_family(zone, qname, len(name) + 4, regions, v4, rows,
                                        row_ttls, kinds)
            if made is None:
                return None
            built.append(made)
        (a, a_blob), (aaaa, aaaa_blob) = built
        first = self.counters.block(di_text, regions, kinds)
        return Compact(ctx, first, a, a_blob, aaaa, aaaa_blob)

    def _compact_family(self, zone: Zone, qname: dns.name.Name, question_len: int,
                        regions: tuple[str, ...], v4: bool,
                        rows: list[tuple[tuple[str, ...], tuple[str, ...], str]],
                        row_ttls: list[int], kinds: tuple[str, ...]
                        ) -> tuple[Layout, bytes] | None:
        """The shared layout and the DI's record blob of one address family.

        A million DIs go through here at load, so what DIs share is looked up, not made:
        each region's header (by type, kind, region, answer count), the record prefix (by
        type and TTL), and the whole result of a family no region has addresses of."""
        qtype = _A if v4 else _AAAA
        at_family = 0 if v4 else 1
        table = self.table
        if not any(row[at_family] for row in rows):
            # NODATA everywhere (the AAAA of an IPv4-only DI): shared by every DI with the
            # same kinds and TTLs whose NODATA is the zone's shared one
            nodata = self._nodata(zone, qname, qtype, question_len)
            if nodata is None:
                return None
            known_key = (nodata, kinds, tuple(row_ttls))
            known = table.no_family.get(known_key)
            if known is None:
                known = self._family(qtype, regions, at_family, rows, row_ttls, kinds, nodata)
                if len(table.no_family) < MAX_NEGATIVE:
                    table.no_family[known_key] = known
            return known
        nodata = None
        if not all(row[at_family] for row in rows):
            nodata = self._nodata(zone, qname, qtype, question_len)
            if nodata is None:
                return None
        return self._family(qtype, regions, at_family, rows, row_ttls, kinds, nodata)

    def _family(self, qtype: int, regions: tuple[str, ...], at_family: int,
                rows: list[tuple[tuple[str, ...], tuple[str, ...], str]],
                row_ttls: list[int], kinds: tuple[str, ...], nodata: Template | None
                ) -> tuple[Layout, bytes]:
        table = self.table
        heads_of = self._compact_heads
        prefix_of = self._rr_prefix
        af = socket.AF_INET if qtype == _A else socket.AF_INET6
        inet_pton = socket.inet_pton
        heads: list[Template] = []
        offsets: dict[bytes, int] = {}  # distinct records -> where they start in the blob
        pieces: list[bytes] = []
        spans: list[int] = []
        at = 0
        first_row = (rows[0][at_family], row_ttls[0])
        uniform = True
        for ridx, row in enumerate(rows):
            addresses = row[at_family]
            ttl = row_ttls[ridx]
            # as the slow path sets the ECS scope: by the region's addresses and TTL
            if uniform and (addresses, ttl) != first_row:
                uniform = False
            count = len(addresses)
            head_key = (qtype, kinds[ridx], regions[ridx], count)
            head = heads_of.get(head_key)
            if head is None:
                stat = self._region_stat.get(head_key[:3])
                if stat is None:
                    stat = self._region_stat[head_key[:3]] = self.stat_slot(
                        qtype, 0, kinds[ridx], regions[ridx])
                if count:
                    hdr = b"\x84\x00\x00\x01" + struct.pack("!HHH", count, 0, 0)
                else:
                    assert nodata is not None
                    hdr = nodata.hdr
                head = heads_of[head_key] = Template(hdr, b"", b"", stat)
            heads.append(head)
            if count:
                prefix = prefix_of.get((qtype, ttl))
                if prefix is None:
                    prefix = prefix_of[(qtype, ttl)] = b"\xc0\x0c" + struct.pack(
                        "!HHIH", qtype, IN, ttl, 4 if qtype == _A else 16)
                if count == 1:
                    records = prefix + inet_pton(af, addresses[0])
                else:
                    records = b"".join([prefix + inet_pton(af, a) for a in addresses])
            else:
                # NODATA here (no address of this family in this region): the zone's
                # shared negative body, counted like any region's answer
                assert nodata is not None
                records = nodata.body_noopt
            start = offsets.get(records)
            if start is None:
                start = offsets[records] = at
                pieces.append(records)
                at += len(records)
            spans += (start, start + len(records))
        blob = b"".join(pieces)
        shared = table.blobs.get(blob)
        if shared is not None:
            blob = shared
        elif len(table.blobs) < MAX_SHARED_BLOBS:
            table.blobs[blob] = blob
        layout_key = (tuple(heads), tuple(spans), uniform)
        layout = table.layouts.get(layout_key)
        if layout is None:
            layout = table.layouts[layout_key] = Layout(*layout_key)
        return layout, blob

    def _nodata(self, zone: Zone, qname: dns.name.Name, qtype: int, question_len: int
                ) -> Template | None:
        """The zone's NODATA for a DI name without addresses of a family: `_negative`'s
        shared template, kept per (zone, question length, type) so that a million DIs do
        not each look the SOA up; a name whose label above the apex is one the SOA's names
        have (they compress against it) gets its own, as `_negative` decides."""
        key = (zone.origin, question_len, qtype)
        known = self.table.nodata.get(key)
        depth = len(zone.origin)
        if known is not None and (len(qname) <= depth
                                  or qname.labels[-depth - 1].lower() not in known[1]):
            return known[0]
        made = self._negative(Result(authority=[negative_soa(zone)], zone=zone), qname,
                              qtype, question_len)
        if made is not None and known is None and len(self.table.nodata) < MAX_NEGATIVE:
            special = zone.soa_labels
            if len(qname) <= depth or qname.labels[-depth - 1].lower() not in special:
                self.table.nodata[key] = (made, special)
        return made

    def _shape_layout(self, layout: Layout, shape: int) -> tuple[Template, ...]:
        """A layout's headers for one shape (RD, OPT counted; the OPT after the records),
        derived once per layout and shape."""
        row = tuple(self._derive(head, shape) for head in layout.heads)
        layout.shaped[shape] = row
        return row

    def _compact_for(self, key: bytes) -> Compact | None:
        """The compact entry answering `key` if it is a DI's own unsigned A/AAAA question
        (compiled now if need be), else None."""
        end = len(key) - 4
        qtc = key[end:]
        if qtc not in (_A_IN, _AAAA_IN):
            return None
        name = key[:end]
        table = self.table
        known = table.compact.get(name)
        if known is not None:
            return known
        try:
            qname = dns.name.from_wire(key, 0)[0]
        except dns.exception.DNSException:
            return None
        dynamic = self.snapshot.dis.get(qname)
        if dynamic is None:
            return None
        return self._add_compact(name, dynamic[0], dynamic[1], qname)

    def _add_compact(self, name: bytes, di: DI, ctx: GeoContext, qname: dns.name.Name,
                     rows_of: DIRows | None = None) -> Compact | None:
        table = self.table
        if table.size >= self.max_cached:
            self.table = table = AnswerTable()  # full: as `_compile` does
        made = self._compile_di(name, di, ctx, qname, rows_of)
        if made is not None:
            table.compact[name] = made
            table.size += 1
        return made

    def prepare_di(self, name: bytes, qname: dns.name.Name, di: DI, ctx: GeoContext,
                   shapes: Collection[int]) -> bool:
        """`prepare` for a DI's own A and AAAA, told the DI (`name`: its lowercase wire
        name): what the prewarm does a million times at load, without parsing names."""
        signed = self.snapshot.signer is not None
        # the routing decisions read once for the unsigned and the signed answers
        rows_of = (self._di_rows(di, ctx)
                   if signed or name not in self.table.compact else None)
        if (name not in self.table.compact
                and self._add_compact(name, di, ctx, qname, rows_of) is None):
            return any([self.prepare(name + q, shapes) for q in (_A_IN, _AAAA_IN)])
        if signed:
            assert rows_of is not None
            told = (qname, di, ctx, rows_of)
            for q in (_A_IN, _AAAA_IN):
                self.prepare(name + q, shapes, told)  # the signed shapes
        return True

    def _compile_regional(self, key: bytes, static: Result, di: DI, ctx: GeoContext,
                          qname: dns.name.Name, qtype: int, signed: bool = False
                          ) -> Regional | None:
        family = 4 if qtype == _A else 6
        di_text = di.name.to_text()
        question_len = len(key)
        variants: list[Template] = []
        kinds: list[str] = []
        # Regions often share an answer: render each distinct one once.
        rendered: dict[tuple[tuple[str, ...], int], Template] = {}
        decisions = ctx.decisions_for(di, di_text)
        for ridx, region in enumerate(ctx.regions):
            decision = decisions[ridx]
            addresses = tuple(decision.addresses(family))
            ttl = ctx.ttl(di, ridx, di_text)
            same = rendered.get((addresses, ttl))
            if same is None:
                result = _with_addresses(static, di, qtype, list(addresses), ttl)
                same = self._template(result, qname, qtype, 0, question_len, signed=signed)
                if same is None:
                    return None
                rendered[(addresses, ttl)] = same
            stat = self.stat_slot(qtype, static.rcode, decision.kind, region)
            variants.append(self.table.intern(Template(same.hdr, same.body, same.body_noopt,
                                                       stat)))
            kinds.append(decision.kind)
        uniform = len(rendered) == 1
        first = self.counters.block(di_text, ctx.regions, tuple(kinds))
        self.table.deps.setdefault(di_text, []).append(key)
        return Regional(ctx, self.table.intern_variants(tuple(variants)), first, uniform)

    def _compile_di_signed(self, key: bytes, di: DI, ctx: GeoContext, qname: dns.name.Name,
                           qtype: int, rows_of: DIRows | None = None) -> Regional | None:
        """The signed base of a DI's own A/AAAA question: each region's address RRset and
        its RRSIG, rendered and signed by hand (one signature per distinct answer of the
        DI), a region without an address of the family its signed NODATA; None (the full
        path) when a DNAME could redirect the name or the zone has no key. `rows_of`: the
        DI's decisions as `_di_rows` reads them, when the caller has them already.

        Hand-written on purpose: a cold signed table and every change of health or TTL
        compile this for every DI, and the dnspython path (`Signer.sign`, rendering)
        costs 4-7 ms per DI. The bytes are those of the unsigned `_compile_di` plus the
        RRSIG; the signed-vs-slow-path test checks them against dnspython's.
        """
        snap = self.snapshot
        signer = snap.signer
        zone = snap.zones.zones.get(ctx.policy.origin)
        if signer is None or zone is None or zone.dnames:
            return None
        zone_key = signer.keys.get(zone.origin)
        if zone_key is None:
            return None
        owner = key[:-4]
        table = self.table
        v4 = qtype == _A
        af = socket.AF_INET if v4 else socket.AF_INET6
        if rows_of is None:
            rows_of = self._di_rows(di, ctx)
        di_text, rows, row_ttls, kinds = rows_of
        variants: list[Template] = []
        # Regions often share an answer: each distinct RRset (addresses, TTL; the owner
        # and type are the question's) is rendered and signed once, for all of them.
        rendered: dict[tuple[tuple[str, ...], int], Template] = {}
        for ridx, region in enumerate(ctx.regions):
            row = rows[ridx]
            addresses = row[0] if v4 else row[1]
            ttl = row_ttls[ridx]
            same = rendered.get((addresses, ttl))
            if same is None:
                if addresses:
                    body = signing.signed_rrset_wire(
                        signer, zone_key, owner, qtype, ttl,
                        [socket.inet_pton(af, a) for a in addresses])
                    hdr = b"\x84\x00\x00\x01" + struct.pack("!HHH", len(addresses) + 1, 0, 0)
                    same = Template(hdr, body, body, 0)
                else:
                    nodata = self._signed_denial(
                        Result(authority=[negative_soa(zone)], zone=zone, final_name=qname),
                        qname, qtype, len(key), "static", owner=owner)
                    if nodata is None:
                        return None
                    same = nodata
                rendered[(addresses, ttl)] = same
            stat = self.stat_slot(qtype, 0, kinds[ridx], region)
            variants.append(table.intern(Template(same.hdr, same.body, same.body_noopt, stat)))
        first = self.counters.block(di_text, ctx.regions, kinds)
        table.deps.setdefault(di_text, []).append(key)
        return Regional(ctx, table.intern_variants(tuple(variants)), first,
                        len(rendered) == 1)

    def _signed_denial(self, result: Result, qname: dns.name.Name, qtype: int,
                       question_len: int, kind: str, intern: bool = True,
                       owner: bytes | None = None) -> Template | None:
        """The signed form of a plain NXDOMAIN/NODATA (only the zone's SOA in the
        authority section): NOERROR with the SOA, its RRSIG, the compact-denial NSEC at
        the name and its RRSIG (RFC 9824), or None for any other answer.

        The SOA and its RRSIG are rendered once per zone, apex offset and validity window
        (`Signer.denial_heads`); only the NSEC is made and signed per name, by hand, as
        `_compile_di_signed` does (the same reasons).
        """
        signer = self.snapshot.signer
        zone = result.zone
        if (signer is None or zone is None or result.answer or result.additional
                or result.ede is not None or result.referral or len(result.authority) != 1
                or result.final_name not in (None, qname)):
            return None
        soa = negative_soa(zone)
        zone_key = signer.keys.get(zone.origin)
        if result.authority[0] is not soa or zone_key is None:
            return None
        depth = len(zone.origin)
        if len(qname) > depth and qname.labels[-depth - 1].lower() in zone.soa_labels:
            return None  # the SOA compresses against this question alone
        offset = question_len - 4 - sum(len(label) + 1 for label in zone.origin.labels)
        heads = signer.denial_heads
        known = heads.get((id(soa), offset))
        if known is None or known[0] is not soa:
            tpl = self._template(Result(authority=[soa, signer.rrsig(soa, zone_key)],
                                        zone=zone), qname, qtype, 0, question_len, intern=False)
            if tpl is None:
                return None
            if len(heads) >= MAX_NEGATIVE:
                heads.clear()
            heads[(id(soa), offset)] = (soa, tpl.body)
        types = ({signing.NXNAME} if result.rcode == dns.rcode.NXDOMAIN
                 else signing.types_at(zone, qname))
        if owner is None:
            owner = qname.canonicalize().to_wire()
            assert owner is not None
        return self._denial(zone, soa, offset, owner, types, qtype, kind, intern)

    def _denial(self, zone: Zone, soa: dns.rrset.RRset, offset: int, owner: bytes,
                types: set[int], qtype: int, kind: str, intern: bool) -> Template | None:
        """The signed denial template at `owner` (canonical wire) from the zone's signed
        SOA part (`soa`: its negative SOA) for the apex offset; None when that part was
        not made yet."""
        signer = self.snapshot.signer
        assert signer is not None
        known = signer.denial_heads.get((id(soa), offset))
        zone_key = signer.keys.get(zone.origin)
        if known is None or known[0] is not soa or zone_key is None:
            return None
        body = known[1] + signing.denial_nsec_wire(signer, zone_key, owner, types, soa.ttl)
        hdr = b"\x84\x00\x00\x01\x00\x00\x00\x04\x00\x00"
        made = Template(hdr, body, body, self.stat_slot(qtype, dns.rcode.NOERROR, kind, "-"))
        return self.table.intern(made) if intern else made

    # -- the slow path ---------------------------------------------------------------------

    def _slow(self, data: bytes, tcp: bool,
              addr: tuple[str, int] | None = None) -> bytes | None:
        """Full parse with dnspython; every failure becomes an rcode or a drop."""
        self.stats_slow += 1
        self.stat_counts[0] += 1
        if len(data) < 12 or data[2] & 0x80:
            return None  # short header, or a response: never answer those
        opcode = (data[2] >> 3) & 0xF
        if opcode != dns.opcode.QUERY:  # before parsing: UPDATE has its own section rules
            return render.error_response(data, dns.rcode.NOTIMP, _question_length(data))
        try:
            query = dns.message.from_wire(data, one_rr_per_rrset=True)
        except dns.message.ShortHeader:
            return None
        except dns.message.UnknownTSIGKey:  # signed: verified and answered by transfers
            replies = self.transfers.handle(data, addr, self.snapshot.zones.zones,
                                            self._answer_message, tcp)
            return replies[0] if replies else None
        except Exception:
            # Echo the question when it alone is sound, as Knot does.
            return render.error_response(data, dns.rcode.FORMERR, _question_length(data))
        qlen = _question_length(data) if len(query.question) == 1 else 0
        if not _ecs_options_valid(data):
            return render.error_response(data, dns.rcode.FORMERR, qlen)
        if len(query.question) != 1:
            return render.error_response(data, dns.rcode.FORMERR)
        if query.answer or query.authority:
            return render.error_response(data, dns.rcode.FORMERR, qlen)
        q = query.question[0]
        snap = self.snapshot
        edns = query.edns >= 0
        if edns and query.edns > 0:
            shape = render.shape_of(query.flags, edns, bool(query.ednsflags & dns.flags.DO),
                                    False)
            msg = render.build_message(
                Result(rcode=dns.rcode.BADVERS, aa=False), q.name, q.rdtype, q.rdclass,
                shape & ~SHAPE_NSID, snap.identity,
            )
            msg.question = [] if not qlen else msg.question
            return _finish(data, msg, 65535)
        msg = self._answer_message(query, addr, tcp)
        if msg.rcode() == dns.rcode.FORMERR:
            return render.error_response(data, dns.rcode.FORMERR, qlen)
        if tcp:
            limit = 65535
        elif edns:
            limit = max(512, min(query.payload, snap.identity.payload))
        else:
            limit = MAX_UDP_PLAIN
        return _finish(data, msg, limit)

    def _answer_message(self, query: dns.message.Message, addr: tuple[str, int] | None,
                        tcp: bool) -> dns.message.Message:
        """The full answer to a parsed, well-formed query (FORMERR for a bad ECS)."""
        q = query.question[0]
        snap = self.snapshot
        edns = query.edns >= 0
        ecs: dns.edns.ECSOption | None = None
        nsid = False
        if edns:
            for option in query.options:
                if isinstance(option, dns.edns.ECSOption):
                    ecs = option
                elif option.otype == dns.edns.OptionType.NSID:
                    nsid = True
        shape = render.shape_of(query.flags, edns, bool(query.ednsflags & dns.flags.DO), nsid)
        if q.rdclass == CH:
            result = render.chaos_result(q.name, q.rdtype, snap.identity)
        elif q.rdclass not in (IN, _CLASS_ANY):  # QCLASS * is answered from IN, as Knot
            result = Result(rcode=dns.rcode.REFUSED, aa=False)
        elif q.rdtype in _TRANSFER:
            result = Result(rcode=dns.rcode.REFUSED if tcp else dns.rcode.FORMERR, aa=False)
        elif q.rdtype in _META:
            result = Result(rcode=dns.rcode.NOTIMP, aa=False)
        else:
            result = resolve(snap.zones, q.name, q.rdtype)
        scope = 0
        dynamic = snap.dis.get(result.final_name) if result.final_name is not None else None
        if dynamic is not None and q.rdtype in _ADDRESS and not result.referral:
            trusted = ecs if self._ecs_trust is None or self._trusts(addr) else None
            located = self._locate(dynamic[1], trusted, addr)
            if located is None:
                return render.build_message(Result(rcode=dns.rcode.FORMERR, aa=False), q.name,
                                            q.rdtype, q.rdclass, shape, snap.identity)
            ridx, scope = located
            di, ctx = dynamic
            family = 4 if q.rdtype == _A else 6
            decisions = ctx.decisions_for(di)
            result = _with_addresses(result, di, q.rdtype, decisions[ridx].addresses(family),
                                     ctx.ttl(di, ridx))
            if len({(tuple(d.addresses(family)), ctx.ttl(di, r))
                    for r, d in enumerate(decisions)}) == 1:
                scope = 0  # every region gets this answer, as the fast path says (Regional)
        if shape & SHAPE_DO and snap.signer is not None:
            result = snap.signer.sign(result, q.name, q.rdtype)
        extra: list[dns.edns.Option] = []
        if ecs is not None:
            extra.append(dns.edns.ECSOption(ecs.address, ecs.srclen, scope))
        msg = render.build_message(result, q.name, q.rdtype, q.rdclass, shape, snap.identity,
                                   extra)
        msg.id = query.id
        return msg

    @staticmethod
    def _locate(ctx: GeoContext, ecs: dns.edns.ECSOption | None,
                addr: tuple[str, int] | None) -> tuple[int, int] | None:
        """(region index, scope) from the ECS option or else the source address."""
        if ecs is not None and ecs.srclen:
            raw = ecs.to_wire()
            assert raw is not None
            return ctx.locate_ecs(raw)
        return ctx.locate_ip(addr[0] if addr is not None else "127.0.0.1"), 0

    def _formerr(self, data: bytes) -> bytes:
        return render.error_response(data, dns.rcode.FORMERR)


_CLASS_ANY = int(dns.rdataclass.ANY)


def _question_length(data: bytes) -> int:
    """Length of the one question, or 0 if it cannot be echoed as is: QDCOUNT is not 1,
    or the name is compressed, has a bad label, is over 255 octets or lacks type/class."""
    if data[4:6] != b"\x00\x01":
        return 0
    i = 12
    n = len(data)
    while i < n:
        length = data[i]
        if length == 0:
            return i + 5 - 12 if i + 5 <= n and i - 12 < 255 else 0
        if length > 63:
            return 0
        i += length + 1
    return 0


def _skip_name(data: bytes, i: int) -> int:
    """Offset just past the (possibly compressed) name at i; the message is known valid."""
    while True:
        length = data[i]
        if length == 0:
            return i + 1
        if length >= 0xC0:
            return i + 2
        i += length + 1


def _ecs_options_valid(data: bytes) -> bool:
    """Whether every ECS option in a message dnspython has parsed passes `_ecs_valid`.

    dnspython masks an ECS address to its prefix and keeps any scope, so the checks of
    RFC 7871 §6 run on the raw option bytes, found by walking the records.
    """
    qd, an, ns, ar = struct.unpack_from("!HHHH", data, 4)
    i = 12
    for _ in range(qd):
        i = _skip_name(data, i) + 4
    for _ in range(an + ns + ar):
        i = _skip_name(data, i)
        rtype, _rclass, _ttl, rdlen = struct.unpack_from("!HHIH", data, i)
        i += 10
        if rtype == 41:
            j, end = i, i + rdlen
            while j + 4 <= end:
                code, olen = struct.unpack_from("!HH", data, j)
                if code == 8 and not _ecs_valid(data[j + 4 : j + 4 + olen]):
                    return False
                j += 4 + olen
        i += rdlen
    return True


def _finish(data: bytes, msg: dns.message.Message, limit: int) -> bytes:
    wire = render.render(msg, limit)
    qlen = _question_length(data)
    if qlen and msg.question and len(wire) >= 12 + qlen:
        # Echo the question exactly as sent (case included, RFC 1035 §7.3 / 0x20).
        wire = wire[:12] + data[12 : 12 + qlen] + wire[12 + qlen :]
    return data[:2] + wire[2:]


def _ecs_valid(ecs: bytes) -> bool:
    """RFC 7871 §7.1.2: known family, prefix within it, exact address length, zero padding,
    and SCOPE PREFIX-LENGTH 0 in queries."""
    if len(ecs) < 4 or ecs[3]:
        return False
    family = ecs[0] << 8 | ecs[1]
    source = ecs[2]
    if family == 1:
        maxbits = 32
    elif family == 2:
        maxbits = 128
    else:
        return False
    if source > maxbits or len(ecs) - 4 != (source + 7) // 8:
        return False
    return not (source % 8 and ecs[-1] & (0xFF >> (source % 8)))


def _with_addresses(static: Result, di: DI, qtype: int, addresses: list[str],
                    ttl: int | None = None) -> Result:
    """The static answer with the DI's address RRset replaced by the region's choice."""
    name = static.final_name
    assert name is not None and static.zone is not None
    answer = [rr for rr in static.answer if not (rr.name == name and rr.rdtype == qtype)]
    authority = [rr for rr in static.authority if rr.rdtype != dns.rdatatype.SOA]
    if addresses:
        answer.append(dns.rrset.from_text_list(
            name, di.ttl if ttl is None else ttl, dns.rdataclass.IN,
            dns.rdatatype.RdataType(qtype), addresses))
    else:
        authority.append(negative_soa(static.zone))
    return Result(rcode=static.rcode, aa=static.aa, answer=answer, authority=authority,
                  additional=list(static.additional), zone=static.zone, final_name=name)


def _is_transfer(data: bytes) -> bool:
    """Whether a query asks for AXFR or IXFR (cheap look at the first question)."""
    qlen = _question_length(data)
    if not qlen or len(data) < 12 + qlen:
        return False
    qtype = data[12 + qlen - 4] << 8 | data[12 + qlen - 3]
    return qtype in _TRANSFER
