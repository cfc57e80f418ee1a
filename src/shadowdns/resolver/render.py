"""Renders decisions into DNS wire format, and splits rendered answers into templates.

dnspython does the encoding (compression, truncation, OPT) once per answer shape; the
result is cut into a header part and a body that the query path joins around each query's
own question bytes. Because dnspython compresses every later name against the question at
offset 12, the template stays valid for any spelling of the same question (0x20 case).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset

from shadowdns.resolver.authority import Result

# Shape bits: the parts of a query that change the bytes of its answer besides the question.
SHAPE_RD = 1
SHAPE_CD = 2
SHAPE_EDNS = 4
SHAPE_DO = 8
SHAPE_NSID = 16
SHAPE_COUNT = 32

EDNS_PAYLOAD = 1232
ECS_CODE = 8
NSID_CODE = 3


@dataclass(frozen=True, slots=True)
class Identity:
    """How the server names itself: NSID (RFC 5001) and CHAOS TXT answers."""

    nsid: bytes | None = None
    server_id: str | None = None  # id.server / hostname.bind; None hides it
    version: str | None = None  # version.server / version.bind; None hides it
    payload: int = EDNS_PAYLOAD


@dataclass(frozen=True, slots=True)
class Template:
    """An answer cut for reuse: hdr = flags + counts (10 bytes), then body after the question.

    `body` ends with the OPT record for the shape (no ECS); `body_noopt` lacks it, for
    queries whose OPT must carry a per-query ECS option.
    """

    hdr: bytes
    body: bytes
    body_noopt: bytes
    stat: int = 0  # index of this answer's query counter (see QueryEngine.query_stats)


def shape_of(flags: int, edns: bool, do: bool, nsid: bool) -> int:
    shape = 0
    if flags & dns.flags.RD:
        shape |= SHAPE_RD
    if flags & dns.flags.CD:
        shape |= SHAPE_CD
    if edns:
        shape |= SHAPE_EDNS
        if do:
            shape |= SHAPE_DO
        if nsid:
            shape |= SHAPE_NSID
    return shape


def opt_options(shape: int, identity: Identity) -> list[dns.edns.Option]:
    options: list[dns.edns.Option] = []
    if shape & SHAPE_NSID and identity.nsid is not None:
        options.append(dns.edns.GenericOption(dns.edns.OptionType.NSID, identity.nsid))
    return options


def opt_prefix(shape: int, identity: Identity, ext_rcode: int = 0) -> bytes:
    """OPT RR up to (not including) RDLENGTH: root owner, type, payload, TTL field."""
    flags = 0x8000 if shape & SHAPE_DO else 0
    return struct.pack("!BHHBBH", 0, 41, identity.payload, ext_rcode, 0, flags)


def options_wire(options: list[dns.edns.Option]) -> bytes:
    out = bytearray()
    for opt in options:
        data = opt.to_wire()
        assert data is not None
        out += struct.pack("!HH", int(opt.otype), len(data)) + data
    return bytes(out)


def ecs_option_wire(family: int, source: int, scope: int, address: bytes) -> bytes:
    return struct.pack("!HHHBB", ECS_CODE, 4 + len(address), family, source, scope) + address


def build_message(
    result: Result,
    qname: dns.name.Name,
    qtype: int,
    qclass: int,
    shape: int,
    identity: Identity,
    extra_options: list[dns.edns.Option] | None = None,
) -> dns.message.Message:
    msg = dns.message.Message(id=0)
    flags = dns.flags.QR
    if shape & SHAPE_RD:
        flags |= dns.flags.RD
    # CD is not copied: "A security-aware name server SHOULD clear the CD bit when
    # composing an authoritative response" (RFC 4035 §3.1.6), as Knot does.
    if result.aa:
        flags |= dns.flags.AA
    msg.flags = flags
    msg.set_rcode(dns.rcode.Rcode(result.rcode))
    msg.question.append(
        dns.rrset.RRset(qname, dns.rdataclass.RdataClass(qclass), dns.rdatatype.RdataType(qtype))
    )
    msg.answer.extend(result.answer)
    msg.authority.extend(result.authority)
    msg.additional.extend(result.additional)
    if shape & SHAPE_EDNS:
        options = opt_options(shape, identity) + list(extra_options or [])
        if result.ede is not None:
            options.append(dns.edns.EDEOption(dns.edns.EDECode(result.ede)))
        ednsflags = dns.flags.DO if shape & SHAPE_DO else 0
        msg.use_edns(0, ednsflags, identity.payload, options=options)
        msg.set_rcode(dns.rcode.Rcode(result.rcode))
    return msg


# dnspython's Renderer is untyped; one typed handle keeps mypy --strict quiet about it.
_new_renderer: Callable[..., Any] = dns.renderer.Renderer


def render(msg: dns.message.Message, max_size: int = 65535) -> bytes:
    """Encode within max_size bytes, truncating the way RFC 2181 §9 and RFC 9471 ask.

    An answer or authority RRset that does not fit ends the message with TC set. In the
    additional section, a glue RRset for a name at or below the delegation of a referral
    ("in-domain glue") must fit or TC is set (RFC 9471 §3.1); any other additional RRset
    that does not fit is left out without TC and the next one is tried ("The TC bit should
    not be set merely because some extra information could have been included, but there
    was insufficient room", RFC 2181 §9), as Knot does.

    RRs keep their zone order (dnspython would shuffle them on every call): a template
    cached by the fast path and a reply rendered by the slow path must be the same bytes.
    """
    max_size = max(512, min(max_size, 65535))
    renderer = _new_renderer(msg.id, msg.flags, max_size, msg.origin)
    opt_size = 0
    if msg.opt is not None:
        opt_size = 11 + sum(4 + len(o.to_wire() or b"") for o in msg.options)
        renderer.reserve(opt_size)
    for question in msg.question:
        renderer.add_question(question.name, question.rdtype, question.rdclass)
    truncated = False
    try:
        for rrset in msg.answer:
            renderer.add_rrset(dns.renderer.ANSWER, rrset, want_shuffle=False)
        for rrset in msg.authority:
            renderer.add_rrset(dns.renderer.AUTHORITY, rrset, want_shuffle=False)
    except dns.exception.TooBig:
        truncated = True
    if not truncated:
        cuts = [rr.name for rr in msg.authority if rr.rdtype == dns.rdatatype.NS]
        for rrset in msg.additional:
            try:
                renderer.add_rrset(dns.renderer.ADDITIONAL, rrset, want_shuffle=False)
            except dns.exception.TooBig:
                if any(rrset.name.is_subdomain(cut) for cut in cuts):
                    truncated = True
                    break
    if truncated:
        renderer.flags |= dns.flags.TC
    renderer.release_reserved()
    if msg.opt is not None:
        renderer.add_opt(msg.opt, 0, opt_size, 0)
    renderer.write_header()
    wire: bytes = renderer.get_wire()
    return wire


def make_template(wire: bytes, question_len: int, opt_len: int) -> Template:
    """Cut a rendered answer (ID 0, one question) into a reusable template."""
    qend = 12 + question_len
    body = wire[qend:]
    body_noopt = body[: len(body) - opt_len] if opt_len else body
    return Template(hdr=wire[2:12], body=body, body_noopt=body_noopt)


def opt_length(shape: int, identity: Identity) -> int:
    if not shape & SHAPE_EDNS:
        return 0
    return 11 + len(options_wire(opt_options(shape, identity)))


def error_response(data: bytes, rcode: int, with_question: int = 0,
                   payload: int = EDNS_PAYLOAD) -> bytes:
    """A bare error reply built from the query header (FORMERR/NOTIMP/REFUSED/SERVFAIL).

    `with_question` is the length of the question bytes to echo (0 for none). Opcode and
    RD are copied. When the query is one question plus one well-formed OPT and nothing
    else (the error lies elsewhere, e.g. in an ECS option's content), the reply carries an
    OPT too: "If an OPT record is present in a received request, compliant responders MUST
    include an OPT record in their respective responses" (RFC 6891 §6.1.1). An OPT that
    could not be parsed gets none.
    """
    flags = 0x8000 | ((data[2] & 0x79) << 8) | (rcode & 0xF)
    do = _well_formed_opt(data, 12 + with_question) if with_question else None
    counts = struct.pack("!HHHH", 1 if with_question else 0, 0, 0, 0 if do is None else 1)
    head = data[:2] + struct.pack("!H", flags) + counts
    if not with_question:
        return head
    reply = head + data[12 : 12 + with_question]
    if do is not None:
        reply += struct.pack("!BHHBBHH", 0, 41, payload, 0, 0, 0x8000 if do else 0, 0)
    return reply


def _well_formed_opt(data: bytes, qend: int) -> bool | None:
    """The DO bit of the query's OPT if the message is exactly header, one question and one
    structurally valid root OPT (options inside it included); None otherwise."""
    n = len(data)
    if data[4:12] != b"\x00\x01\x00\x00\x00\x00\x00\x01" or qend + 11 > n:
        return None
    if data[qend : qend + 3] != b"\x00\x00\x29":
        return None
    end = qend + 11 + (data[qend + 9] << 8 | data[qend + 10])
    if end != n:
        return None
    j = qend + 11
    while j < end:
        if j + 4 > end:
            return None
        j += 4 + (data[j + 2] << 8 | data[j + 3])
    if j != end:
        return None
    return bool(data[qend + 7] & 0x80)


def rcode_result(rcode: int, aa: bool = False) -> Result:
    return Result(rcode=rcode, aa=aa)


def chaos_result(qname: dns.name.Name, qtype: int, identity: Identity) -> Result:
    """CHAOS TXT answers for id.server/hostname.bind and version.server/version.bind."""
    text = qname.to_text().lower()
    value: str | None
    if text in ("id.server.", "hostname.bind."):
        value = identity.server_id
    elif text in ("version.server.", "version.bind."):
        value = identity.version
    else:
        return Result(rcode=dns.rcode.REFUSED, aa=False)
    if value is None or qtype != int(dns.rdatatype.TXT):
        return Result(rcode=dns.rcode.REFUSED, aa=False)  # only TXT is answered, as Knot
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    rrset = dns.rrset.from_text(qname, 0, dns.rdataclass.CH, dns.rdatatype.TXT, f'"{escaped}"')
    return Result(rcode=dns.rcode.NOERROR, aa=False, answer=[rrset])  # not zone data: no AA
