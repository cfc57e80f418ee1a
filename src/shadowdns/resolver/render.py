"""Renders decisions into DNS wire format, and splits rendered answers into templates.

dnspython does the encoding (compression, truncation, OPT) once per answer shape; the
result is cut into a header part and a body that the query path joins around each query's
own question bytes. Because dnspython compresses every later name against the question at
offset 12, the template stays valid for any spelling of the same question (0x20 case).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
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
    if shape & SHAPE_CD:
        flags |= dns.flags.CD
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
        ednsflags = dns.flags.DO if shape & SHAPE_DO else 0
        msg.use_edns(0, ednsflags, identity.payload, options=options)
        msg.set_rcode(dns.rcode.Rcode(result.rcode))
    return msg


def render(msg: dns.message.Message, max_size: int = 65535) -> bytes:
    """Encode, truncating (TC) when the required sections do not fit in max_size."""
    return msg.to_wire(max_size=max_size, prefer_truncation=True)


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


def error_response(data: bytes, rcode: int, with_question: int = 0) -> bytes:
    """A bare error reply built from the query header (FORMERR/NOTIMP/REFUSED/SERVFAIL).

    `with_question` is the length of the question bytes to echo (0 for none). Opcode and
    RD are copied; no OPT is added because the query's OPT was not understood.
    """
    flags = 0x8000 | ((data[2] & 0x79) << 8) | (rcode & 0xF)
    qd = 1 if with_question else 0
    head = data[:2] + struct.pack("!HHHHH", flags, qd, 0, 0, 0)
    return head + data[12 : 12 + with_question] if with_question else head


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
    if value is None:
        return Result(rcode=dns.rcode.REFUSED, aa=False)
    if qtype not in (int(dns.rdatatype.TXT), int(dns.rdatatype.ANY)):
        return Result(rcode=dns.rcode.NOERROR, aa=True)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    rrset = dns.rrset.from_text(qname, 0, dns.rdataclass.CH, dns.rdatatype.TXT, f'"{escaped}"')
    return Result(rcode=dns.rcode.NOERROR, aa=True, answer=[rrset])
