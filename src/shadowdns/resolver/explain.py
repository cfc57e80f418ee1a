"""`shadowdns explain`: the answer a client would get and why, without serving.

Like Route 53's TestDNSAnswer or gdnsd_geoip_test. It runs the real query engine on a
snapshot built exactly as `serve` builds it, so the answer it prints is the server's
answer, and adds the region rule and routing reason the engine does not put on the wire.
With `--api URL` the running server explains from the snapshot it answers from (its zones,
shadows and health right now); otherwise the files of `--zones` are read.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from shadowdns.errors import ConfigError, Problem
from shadowdns.resolver.engine import QueryEngine
from shadowdns.resolver.live import read_live_state
from shadowdns.resolver.snapshot import LiveState, Snapshot, build_snapshot, load_config
from shadowdns.store import Store


@dataclass(frozen=True, slots=True)
class Explanation:
    qname: str
    qtype: str
    region: str | None
    answers: list[str]
    scope_prefix: int | None
    reason: str
    rcode: str
    region_rule: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "qname": self.qname,
            "qtype": self.qtype,
            "region": self.region,
            "answers": self.answers,
            "scope_prefix": self.scope_prefix,
            "reason": self.reason,
            "rcode": self.rcode,
            "region_rule": self.region_rule,
        }

    def to_text(self) -> str:
        lines = [
            f"query:   {self.qname} {self.qtype}",
            f"region:  {self.region or '-'}" + (f" ({self.region_rule})" if self.region_rule
                                                 else ""),
            f"rcode:   {self.rcode}",
            f"answers: {', '.join(self.answers) if self.answers else '(none)'}",
            f"scope:   {'-' if self.scope_prefix is None else self.scope_prefix}",
            f"reason:  {self.reason}",
        ]
        return "\n".join(lines)


def _client(text: str) -> tuple[str, int | None]:
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            return str(net.network_address), net.prefixlen
        return str(ipaddress.ip_address(text)), None
    except ValueError as exc:
        raise ConfigError([Problem("--client", None, str(exc))]) from None


def explain(zones_dir: Path, name: str, client: str, qtype: str = "A",
            geoip: Path | None = None, store: Store | None = None) -> Explanation:
    """The answer to `name` from `client`, with shadows and health from `store` if given."""
    config = load_config(zones_dir, geoip)
    live = LiveState()
    if store is not None:
        live = read_live_state(store, config)
    return explain_snapshot(build_snapshot(config, live), name, client, qtype)


def explain_snapshot(snapshot: Snapshot, name: str, client: str,
                     qtype: str = "A") -> Explanation:
    """The answer `snapshot` gives `name` from `client`: the CLI builds one from files, the
    API passes the one the running server answers from (`GET /api/v1/explain`)."""
    engine = QueryEngine(snapshot)  # its own counters: explaining is not demand
    ip, prefix = _client(client)
    try:
        rdtype = dns.rdatatype.from_text(qtype)
    except dns.rdatatype.UnknownRdatatype:
        raise ConfigError([Problem("--qtype", None, f"unknown type {qtype!r}")]) from None
    try:
        qname = dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise ConfigError([Problem("name", None, f"{name!r} is not a DNS name: {exc}")]) \
            from None
    options: list[dns.edns.Option] = []
    if prefix is not None:
        options.append(dns.edns.ECSOption(ip, prefix))
    query = dns.message.make_query(qname, rdtype, use_edns=0, options=options)
    wire = engine.respond(query.to_wire(), (ip, 53))
    if wire is None:
        raise ConfigError([Problem(name, None, "the server would not answer this query")])
    response = dns.message.from_wire(wire)
    answers = [
        rdata.to_text() for rrset in response.answer if rrset.rdtype == rdtype
        for rdata in rrset
    ]
    scope: int | None = None
    for option in response.options:
        if isinstance(option, dns.edns.ECSOption):
            scope = option.scopelen
    region: str | None = None
    rule: str | None = None
    reason = "static records from the zone"
    if response.rcode() == dns.rcode.NXDOMAIN:
        reason = "no such name in the zone"
    elif response.rcode() == dns.rcode.REFUSED:
        reason = "outside every served zone"
    final = _final_name(qname, response)
    dynamic = snapshot.dis.get(final)
    if dynamic is not None and rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        di, ctx = dynamic
        located = (ctx.mapper.locate_ecs(1 if ":" not in ip else 2, prefix,
                                         ipaddress.ip_address(ip).packed[: (prefix + 7) // 8])
                   if prefix else ctx.mapper.locate(ip))
        region = ctx.regions[ctx.region_index(located)]
        rule = located.rule
        decision = ctx.decision(di, ctx.index[region])
        reason = f"DI {di.name}: {decision.reason}"
    return Explanation(
        qname=qname.to_text(), qtype=dns.rdatatype.to_text(rdtype), region=region,
        answers=answers, scope_prefix=scope, reason=reason,
        rcode=dns.rcode.to_text(response.rcode()), region_rule=rule,
    )


def _final_name(qname: dns.name.Name, response: dns.message.Message) -> dns.name.Name:
    name = qname
    for _ in range(16):
        for rrset in response.answer:
            if rrset.name == name and rrset.rdtype == dns.rdatatype.CNAME:
                name = rrset[0].target
                break
        else:
            return name
    return name
