"""Zone transfers out (AXFR, IXFR as full transfers) and TSIG-signed exchanges (RFC 8945).

Standard secondaries (NSD, Knot, BIND) mirror the *static view* of each zone: its records
plus each DI's name answering with all its primaries. Transfers are refused unless the
client's address is in the ACL; when TSIG keys are configured, transfers and signed queries
must carry a valid signature. This path is rare and runs through dnspython entirely.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.serial
import dns.tsig

from shadowdns.errors import ConfigError, Problem
from shadowdns.zones.zone import Zone

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Budget per transfer message before compression; well under the 64 KiB TCP limit.
MESSAGE_BUDGET = 16_000
TSIG_ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,
}


@dataclass(frozen=True, slots=True)
class TransferConfig:
    """Who may transfer zones, with which keys, and whom to NOTIFY on serial changes."""

    acl: tuple[IPNetwork, ...] = ()
    keys: Mapping[dns.name.Name, dns.tsig.Key] = field(default_factory=dict)
    notify: tuple[tuple[str, int], ...] = ()

    @property
    def require_tsig(self) -> bool:
        return bool(self.keys)

    def allowed(self, address: str | None) -> bool:
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self.acl)

    @property
    def notify_key(self) -> dns.tsig.Key | None:
        return next(iter(self.keys.values()), None)


def parse_key(text: str, option: str = "--tsig-key") -> dns.tsig.Key:
    """`NAME:SECRET` or `ALGORITHM:NAME:SECRET` (base64 secret, default hmac-sha256)."""
    parts = text.split(":")
    if len(parts) == 2:
        algorithm, (name, secret) = "hmac-sha256", parts
    elif len(parts) == 3:
        algorithm, name, secret = parts
    else:
        raise ConfigError([Problem(option, None,
                                   "expected [ALGORITHM:]NAME:BASE64SECRET")])
    if algorithm.lower() not in TSIG_ALGORITHMS:
        raise ConfigError([Problem(option, None, f"unknown algorithm {algorithm!r}; "
                                   f"use one of {', '.join(TSIG_ALGORITHMS)}")])
    try:
        base64.b64decode(secret, validate=True)
    except ValueError:
        raise ConfigError([Problem(option, None, "the secret is not base64")]) from None
    return dns.tsig.Key(dns.name.from_text(name), secret,
                        TSIG_ALGORITHMS[algorithm.lower()])


_BIND_KEY = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', re.S)
_BIND_FIELD = re.compile(r'(algorithm|secret)\s+"?([^";\s]+)"?\s*;')


def parse_key_file(path: Path) -> list[dns.tsig.Key]:
    """The TSIG keys of a file: BIND/Knot `key "name" { algorithm ...; secret "..."; };`
    blocks (as `tsig-keygen` and `keymgr` write them), or `[ALGORITHM:]NAME:SECRET` lines
    (`#` starts a comment)."""
    option = "--tsig-key-file"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(option, None, f"cannot read {path}: {exc}")]) from None
    keys = []
    blocks = _BIND_KEY.findall(text)
    if blocks:
        for name, body in blocks:
            fields = dict(_BIND_FIELD.findall(body))
            if "secret" not in fields:
                raise ConfigError([Problem(str(path), None, f"key {name}: no secret")])
            algorithm = fields.get("algorithm", "hmac-sha256")
            keys.append(parse_key(f"{algorithm}:{name}:{fields['secret']}", str(path)))
    else:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.append(parse_key(line, str(path)))
    if not keys:
        raise ConfigError([Problem(option, None, f"{path} holds no key")])
    return keys


def parse_target(text: str) -> tuple[str, int]:
    """`HOST`, `HOST:PORT` or `[V6]:PORT` of a secondary to NOTIFY (port 53 by default)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, 53


# Builds the (unsigned) answer to an ordinary query; provided by the query engine.
Answerer = Callable[[dns.message.Message, tuple[str, int] | None, bool], dns.message.Message]


class Transfers:
    """Answers transfers and TSIG-signed messages for the zones of the current snapshot."""

    def __init__(self, config: TransferConfig) -> None:
        self.config = config

    def _parse(self, data: bytes) -> dns.message.Message | bytes:
        """The verified query, or the bytes of an error reply."""
        keyring: dict[dns.name.Name, dns.tsig.Key] | None = dict(self.config.keys) or None
        try:
            return dns.message.from_wire(data, keyring=keyring)
        except dns.message.UnknownTSIGKey:
            return _tsig_error(data, dns.rcode.BADKEY)
        except dns.tsig.BadSignature:
            return _tsig_error(data, dns.rcode.BADSIG)
        except (dns.tsig.BadTime, dns.tsig.PeerBadTime):
            return _tsig_error(data, dns.rcode.BADTIME)
        except dns.exception.DNSException:
            return _header_error(data, dns.rcode.FORMERR)

    def handle(self, data: bytes, addr: tuple[str, int] | None, zones: Mapping[
            dns.name.Name, Zone], answer: Answerer, tcp: bool) -> list[bytes]:
        """Reply to a transfer request or a signed message: one or more wire messages."""
        parsed = self._parse(data)
        if isinstance(parsed, bytes):
            return [parsed]
        query = parsed
        if len(query.question) != 1:
            return [_header_error(data, dns.rcode.FORMERR)]
        q = query.question[0]
        if q.rdtype not in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            return [_sign_and_wire(answer(query, addr, tcp), query)]
        if not tcp:
            # RFC 5936 §4.2: AXFR is TCP only; an IXFR over UDP gets a TCP-forcing answer.
            return [_refused(query, dns.rcode.FORMERR if q.rdtype == dns.rdatatype.AXFR
                             else dns.rcode.REFUSED)]
        peer = addr[0] if addr else None
        zone = zones.get(q.name)
        if not self.config.allowed(peer) or (self.config.require_tsig and not query.had_tsig):
            log.info("transfer of %s refused to %s", q.name, peer)
            return [_refused(query, dns.rcode.REFUSED)]
        if zone is None:
            return [_refused(query, dns.rcode.NOTAUTH)]
        if q.rdtype == dns.rdatatype.IXFR and _up_to_date(query, zone):
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            response.answer.append(zone.soa)
            return [_sign_and_wire(response, query)]
        log.info("transfer of %s serial %d to %s", zone.origin, zone.serial, peer)
        return list(_axfr_messages(query, zone))


def _up_to_date(query: dns.message.Message, zone: Zone) -> bool:
    for rrset in query.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            theirs = dns.serial.Serial(rrset[0].serial)
            return not theirs < dns.serial.Serial(zone.serial)
    return False


def _ordered(zone: Zone) -> Iterable[dns.rrset.RRset]:
    soa = zone.soa
    others = [rr for rr in zone.rrsets() if rr.rdtype != dns.rdatatype.SOA]
    others.sort(key=lambda rr: (rr.name.canonicalize().labels[::-1], int(rr.rdtype)))
    return [soa, *others, soa]


def _axfr_messages(query: dns.message.Message, zone: Zone) -> Iterable[bytes]:
    """RFC 5936 response: SOA, every RRset, SOA, in as many messages as needed."""
    batch: list[dns.rrset.RRset] = []
    size = 0
    batches: list[list[dns.rrset.RRset]] = []
    for rrset in _ordered(zone):
        buf = io.BytesIO()
        rrset.to_wire(buf)
        wire_len = buf.tell()
        if batch and size + wire_len > MESSAGE_BUDGET:
            batches.append(batch)
            batch, size = [], 0
        batch.append(rrset)
        size += wire_len
    if batch:
        batches.append(batch)
    ctx = None
    for i, rrsets in enumerate(batches):
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if i:
            response.question = []
        response.answer.extend(rrsets)
        if query.had_tsig:
            yield response.to_wire(multi=True, tsig_ctx=ctx)
            ctx = response.tsig_ctx
        else:
            yield response.to_wire()


def _sign_and_wire(response: dns.message.Message, query: dns.message.Message) -> bytes:
    if query.had_tsig and query.keyring is not None and response.tsig is None:
        response.use_tsig(query.keyring, keyname=query.keyname,
                          algorithm=query.keyalgorithm or dns.tsig.default_algorithm,
                          original_id=query.id)
        response.request_mac = query.mac or b""
    return response.to_wire()


def _refused(query: dns.message.Message, rcode: int) -> bytes:
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode(rcode))
    return _sign_and_wire(response, query)


def _header_error(data: bytes, rcode: int) -> bytes:
    flags = 0x8000 | ((data[2] & 0x79) << 8) | (rcode & 0xF)
    return data[:2] + flags.to_bytes(2, "big") + bytes(8)


def _tsig_error(data: bytes, error: int) -> bytes:
    """NOTAUTH with the TSIG error (RFC 8945 §5.2), unsigned, question echoed when possible."""
    try:
        query = dns.message.from_wire(data, keyring=False)
    except dns.exception.DNSException:
        return _header_error(data, dns.rcode.NOTAUTH)
    response = dns.message.Message(id=query.id)
    response.flags = dns.flags.QR | (query.flags & dns.flags.RD)
    response.question = list(query.question)
    response.set_rcode(dns.rcode.NOTAUTH)
    if query.tsig is not None:
        rd = query.tsig[0]
        response.tsig = dns.rrset.from_rdata(
            query.tsig.name, 0, rd.replace(mac=b"", error=error, other=b""))
        response.want_tsig_sign = False  # an unknown or wrong key cannot sign the reply
    return response.to_wire()
