"""Routes for zones and their RRsets: list, create, import, export, delete, edit records.

Every change goes through `ConfigFiles`: the new master file is checked by the same loader
`serve` uses, its SOA serial is bumped, it replaces the old file atomically and the service
reloads before the answer is sent, so the next DNS query already sees it. Parsing and
writing master files takes seconds for a zone of 10,000 RRsets, so it runs on a worker
thread while the event loop keeps answering. Deleting or replacing a whole zone needs the
admin role; record edits need operator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.zone
from fastapi import APIRouter, Header, Query, Response, status
from fastapi.responses import PlainTextResponse

from shadowdns.api.config_files import (
    Change,
    ConfigFiles,
    ZoneFile,
    check_if_match,
    default_zone_text,
    etag_of,
    new_zone_path,
    next_serial,
    parse_origin,
    set_serial,
    soa_serial,
)
from shadowdns.api.context import Admin, Ctx, Operator, Reader
from shadowdns.api.errors import RESPONSES_READ, RESPONSES_WRITE, ApiError, ProblemItem
from shadowdns.api.models import RRset, RRsetBody, RRsetCreate, ZoneCreate, ZoneImport, ZoneSummary
from shadowdns.offloop import off_loop
from shadowdns.zones.rules import node_conflicts, type_text

router = APIRouter(prefix="/api/v1", tags=["zones"])
IfMatch = Annotated[str | None, Header(description="ETag the change is based on")]
IN = dns.rdataclass.IN


def serial_gt(a: int, b: int) -> bool:
    """RFC 1982: whether serial a is newer than b."""
    return a != b and ((a > b and a - b < 2**31) or (a < b and b - a > 2**31))


def summary(ctx: Ctx, zf: ZoneFile) -> ZoneSummary:
    zone = ctx.service.loaded.zones[zf.origin]
    policy = ctx.service.loaded.policies.get(zf.origin)
    return ZoneSummary(origin=zf.origin.to_text(), file=str(zf.path), serial=zone.serial,
                       rrsets=sum(1 for _ in zone.rrsets()),
                       dis=0 if policy is None else len(policy.dis),
                       policy=zf.policy_path.exists())


def owner_name(text: str, origin: dns.name.Name, path: str = "path.name") -> dns.name.Name:
    try:
        name = dns.name.from_text(text, origin)
    except dns.exception.DNSException as exc:
        raise ApiError(422, "invalid", f"{text!r} is not a DNS name",
                       [ProblemItem(path=path, message=str(exc))]) from None
    if not name.is_subdomain(origin):
        raise ApiError(422, "invalid", f"{name} is outside the zone {origin}",
                       [ProblemItem(path=path, message=f"{name} is outside the zone {origin}")])
    return name


def record_type(text: str, path: str = "path.type") -> dns.rdatatype.RdataType:
    try:
        rdtype = dns.rdatatype.from_text(text)
    except (dns.exception.DNSException, ValueError) as exc:
        raise ApiError(422, "invalid", f"{text!r} is not a record type",
                       [ProblemItem(path=path, message=str(exc) or "unknown type")]) from None
    if dns.rdatatype.is_metatype(rdtype) or rdtype in (dns.rdatatype.NONE, dns.rdatatype.OPT):
        raise ApiError(422, "invalid", f"{text} cannot be stored in a zone",
                       [ProblemItem(path=path, message=f"{text} is a meta type")])
    return rdtype


def to_model(name: dns.name.Name, rds: dns.rdataset.Rdataset) -> RRset:
    return RRset(name=name.to_text(), type=dns.rdatatype.to_text(rds.rdtype), ttl=rds.ttl,
                 rdata=sorted(rd.to_text() for rd in rds))


def build_rdataset(rdtype: dns.rdatatype.RdataType, body: RRsetBody,
                   origin: dns.name.Name) -> dns.rdataset.Rdataset:
    """Parse every rdata with dnspython; 422 naming each bad item."""
    rdatas: list[dns.rdata.Rdata] = []
    problems: list[ProblemItem] = []
    what = dns.rdatatype.to_text(rdtype)
    for i, text in enumerate(body.rdata):
        cut = _cut_at(text)
        if cut is not None:
            # the master-file tokenizer would stop there and silently drop the rest
            problems.append(ProblemItem(path=f"body.rdata.{i}", message=cut))
            continue
        try:
            rd = dns.rdata.from_text(IN, rdtype, text, origin=origin, relativize=False)
        except (dns.exception.DNSException, ValueError, TypeError) as exc:
            problems.append(ProblemItem(path=f"body.rdata.{i}",
                                        message=f"not valid {what} data: {exc}"))
            continue
        size = len(rd.to_wire() or b"")
        if size > MAX_RDATA:
            problems.append(ProblemItem(path=f"body.rdata.{i}", message=(
                f"{what} data of {size} bytes: at most {MAX_RDATA}")))
            continue
        rdatas.append(rd)
    if not problems and sum(len(rd.to_wire() or b"") for rd in rdatas) > MAX_RRSET:
        problems.append(ProblemItem(path="body.rdata", message=(
            f"the RRset's data is over {MAX_RRSET} bytes: no DNS message could carry it")))
    if problems:
        raise ApiError(422, "invalid", f"{len(problems)} invalid rdata item(s)", problems)
    rds = dns.rdataset.Rdataset(IN, rdtype)
    for rd in rdatas:
        rds.add(rd, body.ttl)
    return rds


MAX_RDATA = 65_535  # bytes of one rdata on the wire (RDLENGTH is 16 bits)
MAX_RRSET = 60_000  # bytes of an RRset's rdatas: a 64 KiB message must still hold it


def _cut_at(text: str) -> str | None:
    """Why `text` would be cut short as master-file data, or None: a line break anywhere,
    or a `;` outside quotes (a comment)."""
    if "\n" in text or "\r" in text:
        return "a line break in record data: write one record per item, or escape it"
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            return "a ';' outside quotes starts a comment: quote the text or escape it (\\;)"
    return None


def find_rrset(zone: dns.zone.Zone, name: dns.name.Name,
               rdtype: dns.rdatatype.RdataType) -> dns.rdataset.Rdataset | None:
    return zone.get_rdataset(name, rdtype)


def refuse_clashes(ctx: Ctx, zone: dns.zone.Zone, name: dns.name.Name,
                   rdtype: dns.rdatatype.RdataType, path: str) -> None:
    """409 naming the records in the way when an RRset of `rdtype` at `name` would break a
    rule of `zones.rules`; dnspython would otherwise delete what it clashes with."""
    assert zone.origin is not None
    node = zone.get_node(name)
    present = [] if node is None else [int(r.rdtype) for r in node.rdatasets
                                       if r.rdtype != rdtype]
    policy = ctx.service.loaded.policies.get(zone.origin)
    di = policy is not None and name in policy.dis
    clashes = [c for c in node_conflicts(zone.origin, name, [*present, int(rdtype)], di=di)
               if c.involves(int(rdtype))]
    if not clashes:
        return
    in_the_way = [f"{name} {type_text(t)}" for t in sorted(
        {t for c in clashes for t in (c.rdtype, *c.others)} - {int(rdtype)})]
    if policy is not None and any(c.di for c in clashes):
        in_the_way.append(f"the DI {name} of {policy.source}")
    what = f"{name} {dns.rdatatype.to_text(rdtype)}"
    raise ApiError(409, "conflict",
                   f"{what} refused, nothing was changed: "
                   f"{'; '.join(c.reason for c in clashes)}. In the way: "
                   f"{', '.join(in_the_way) or 'the zone apex'}",
                   [ProblemItem(path=path, message=c.reason) for c in clashes])


async def _write_zone(ctx: Ctx, zf: ZoneFile, zone: dns.zone.Zone,
                      audit: Callable[[], Awaitable[None]], bump: bool = True) -> None:
    files: ConfigFiles = ctx.files

    def render() -> str:  # seconds for a big zone: off the event loop
        text = files.zone_text(zone, bump=bump)
        files.check_rendered_zone(zf.origin, zone, text)
        return text

    text = await off_loop(render)
    await files.apply([Change(zf.path, text)], audit=audit)


# -- zones -------------------------------------------------------------------------------


@router.get("/zones", response_model=list[ZoneSummary], responses=RESPONSES_READ,
            summary="List the served zones")
async def list_zones(ctx: Ctx, who: Reader) -> list[ZoneSummary]:
    return [summary(ctx, zf) for zf in ctx.files.zone_files()]


@router.post("/zones", status_code=status.HTTP_201_CREATED, response_model=ZoneSummary,
             responses=RESPONSES_WRITE, summary="Create a zone (empty, or from a master file)")
async def create_zone(body: ZoneCreate, ctx: Ctx, who: Operator,
                      response: Response) -> ZoneSummary:
    origin = parse_origin(body.origin)
    if origin == dns.name.root:
        raise ApiError(422, "invalid", "the root zone cannot be created here",
                       [ProblemItem(path="body.origin", message="must not be the root")])
    files = ctx.files
    async with files.writing():
        if origin in ctx.service.loaded.zones:
            raise ApiError(409, "exists", f"zone {origin} is already served")
        path = new_zone_path(files.zones_dir, origin)
        if path.exists():
            raise ApiError(409, "exists", f"{path.name} already exists in the zones directory")
        if body.text is None:
            problems = []
            for i, ns in enumerate(body.nameservers):
                try:
                    dns.name.from_text(ns, origin)
                except dns.exception.DNSException as exc:
                    problems.append(ProblemItem(path=f"body.nameservers.{i}", message=str(exc)))
            if problems:
                raise ApiError(422, "invalid", "bad name server names", problems)
            text = default_zone_text(origin, body.nameservers, body.ttl)
        else:
            text = body.text
        await off_loop(files.validate_zone_text, origin, text)
        await files.apply([Change(path, text)], audit=partial(
            ctx.audit, who, "zone.create", f"zone:{origin}", None, {"file": str(path)}))
        zf = files.zone_file(origin)
        response.headers["ETag"] = files.zone_etag(zf)
        response.headers["Location"] = f"/api/v1/zones/{origin}"
    return summary(ctx, zf)


@router.get("/zones/{zone}", response_model=ZoneSummary, responses=RESPONSES_READ,
            summary="One zone, with its ETag")
async def get_zone(zone: str, ctx: Ctx, who: Reader, response: Response) -> ZoneSummary:
    zf = ctx.files.zone_file(parse_origin(zone))
    response.headers["ETag"] = ctx.files.zone_etag(zf)
    return summary(ctx, zf)


@router.put("/zones/{zone}", response_model=ZoneSummary, responses=RESPONSES_WRITE,
            summary="Replace a zone's records by a master file (admin)")
async def import_zone(zone: str, body: ZoneImport, ctx: Ctx, who: Admin, response: Response,
                      if_match: IfMatch = None) -> ZoneSummary:
    origin = parse_origin(zone)
    files = ctx.files
    async with files.writing():
        zf = files.zone_file(origin)
        check_if_match(if_match, files.zone_etag(zf))
        before = files.read_text(zf.path)
        old_serial = ctx.service.loaded.zones[origin].serial
        parsed = await off_loop(files.validate_zone_text, origin, body.text)
        text = body.text
        if not serial_gt(soa_serial(parsed), old_serial):
            set_serial(parsed, next_serial(old_serial))
            text = await off_loop(files.zone_text, parsed, False)
            await off_loop(files.check_rendered_zone, origin, parsed, text)
        await files.apply([Change(zf.path, text)], audit=partial(
            ctx.audit, who, "zone.import", f"zone:{origin}", before, text))
        response.headers["ETag"] = files.zone_etag(zf)
    return summary(ctx, zf)


@router.delete("/zones/{zone}", status_code=status.HTTP_204_NO_CONTENT,
               responses=RESPONSES_WRITE, summary="Stop serving a zone, deleting its files (admin)")
async def delete_zone(zone: str, ctx: Ctx, who: Admin, if_match: IfMatch = None) -> Response:
    origin = parse_origin(zone)
    files = ctx.files
    async with files.writing():
        zf = files.zone_file(origin)
        check_if_match(if_match, files.zone_etag(zf))
        before = {"zone": files.read_text(zf.path), "policy": files.read_text(zf.policy_path)}
        await files.apply([Change(zf.path, None), Change(zf.policy_path, None)],
                          audit=partial(ctx.audit, who, "zone.delete", f"zone:{origin}",
                                        before, None))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/zones/{zone}/export", response_model=None,
            responses={**RESPONSES_READ, 200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "the zone's RFC 1035 master file"}},
            summary="Export a zone as an RFC 1035 master file")
async def export_zone(zone: str, ctx: Ctx, who: Reader) -> PlainTextResponse:
    zf = ctx.files.zone_file(parse_origin(zone))
    text = ctx.files.read_text(zf.path)
    if text is None:
        raise ApiError(404, "not_found", f"{zf.path} is gone")
    return PlainTextResponse(text, headers={"ETag": ctx.files.zone_etag(zf)})


# -- RRsets ------------------------------------------------------------------------------


@router.get("/zones/{zone}/rrsets", response_model=list[RRset], responses=RESPONSES_READ,
            summary="List a zone's RRsets as its master file has them")
async def list_rrsets(zone: str, ctx: Ctx, who: Reader,
                      name: Annotated[str | None, Query(max_length=255)] = None,
                      type: Annotated[str | None, Query(max_length=16)] = None) -> list[RRset]:
    origin = parse_origin(zone)
    zf = ctx.files.zone_file(origin)
    want_name = None if name is None else owner_name(name, origin, "query.name")
    want_type = None if type is None else record_type(type, "query.type")
    out: list[RRset] = []
    zdata = await off_loop(ctx.files.read_zone, zf)
    for owner, node in sorted(zdata.nodes.items()):
        if want_name is not None and owner != want_name:
            continue
        for rds in node.rdatasets:
            if want_type is None or rds.rdtype == want_type:
                out.append(to_model(owner, rds))
    return out


@router.post("/zones/{zone}/rrsets", status_code=status.HTTP_201_CREATED, response_model=RRset,
             responses=RESPONSES_WRITE, summary="Add an RRset (409 if it exists)")
async def create_rrset(zone: str, body: RRsetCreate, ctx: Ctx, who: Operator,
                       response: Response) -> RRset:
    origin = parse_origin(zone)
    name = owner_name(body.name, origin, "body.name")
    rdtype = record_type(body.type, "body.type")
    rds = build_rdataset(rdtype, body, origin)
    files = ctx.files
    async with files.writing():
        zf = files.zone_file(origin)
        zdata = await off_loop(files.read_zone, zf)
        if find_rrset(zdata, name, rdtype) is not None:
            raise ApiError(409, "exists", f"{name} {body.type.upper()} exists; use PUT to replace")
        if rdtype == dns.rdatatype.SOA:
            raise ApiError(409, "exists", "a zone has exactly one SOA; use PUT to change it")
        refuse_clashes(ctx, zdata, name, rdtype, "body.type")
        zdata.replace_rdataset(name, rds)
        result = to_model(name, rds)
        await _write_zone(ctx, zf, zdata, partial(
            ctx.audit, who, "rrset.create", f"rrset:{name}/{result.type}", None,
            result.model_dump()))
    response.headers["ETag"] = etag_of(result.model_dump())
    return result


@router.get("/zones/{zone}/rrsets/{name}/{type}", response_model=RRset,
            responses=RESPONSES_READ, summary="One RRset, with its ETag")
async def get_rrset(zone: str, name: str, type: str, ctx: Ctx, who: Reader,
                    response: Response) -> RRset:
    origin = parse_origin(zone)
    owner = owner_name(name, origin)
    rdtype = record_type(type)
    zdata = await off_loop(ctx.files.read_zone, ctx.files.zone_file(origin))
    rds = find_rrset(zdata, owner, rdtype)
    if rds is None:
        raise ApiError(404, "not_found", f"{owner} {dns.rdatatype.to_text(rdtype)} does not exist")
    result = to_model(owner, rds)
    response.headers["ETag"] = etag_of(result.model_dump())
    return result


@router.put("/zones/{zone}/rrsets/{name}/{type}", response_model=RRset,
            responses={**RESPONSES_WRITE, 201: {"model": RRset, "description": "created"}},
            summary="Create or replace an RRset")
async def put_rrset(zone: str, name: str, type: str, body: RRsetBody, ctx: Ctx,
                    who: Operator, response: Response, if_match: IfMatch = None) -> RRset:
    origin = parse_origin(zone)
    owner = owner_name(name, origin)
    rdtype = record_type(type)
    rds = build_rdataset(rdtype, body, origin)
    files = ctx.files
    async with files.writing():
        zf = files.zone_file(origin)
        zdata = await off_loop(files.read_zone, zf)
        old = find_rrset(zdata, owner, rdtype)
        before = None if old is None else to_model(owner, old).model_dump()
        check_if_match(if_match, None if before is None else etag_of(before))
        bump = True
        if rdtype == dns.rdatatype.SOA:
            if owner != origin or len(rds) != 1:
                raise ApiError(422, "invalid", "one SOA record at the apex only",
                               [ProblemItem(path="body.rdata", message="exactly one SOA")])
            soa = rds[0]
            old_serial = soa_serial(zdata)
            if not serial_gt(int(soa.serial), old_serial):
                rds = dns.rdataset.Rdataset(IN, rdtype)
                rds.add(soa.replace(serial=next_serial(old_serial)), body.ttl)
            bump = False
        refuse_clashes(ctx, zdata, owner, rdtype, "path.type")
        zdata.replace_rdataset(owner, rds)
        result = to_model(owner, rds)
        action = "rrset.create" if before is None else "rrset.replace"
        await _write_zone(ctx, zf, zdata, partial(
            ctx.audit, who, action, f"rrset:{owner}/{result.type}", before,
            result.model_dump()), bump=bump)
    response.headers["ETag"] = etag_of(result.model_dump())
    if before is None:
        response.status_code = status.HTTP_201_CREATED
    return result


@router.delete("/zones/{zone}/rrsets/{name}/{type}", status_code=status.HTTP_204_NO_CONTENT,
               responses=RESPONSES_WRITE, summary="Delete an RRset")
async def delete_rrset(zone: str, name: str, type: str, ctx: Ctx, who: Operator,
                       if_match: IfMatch = None) -> Response:
    origin = parse_origin(zone)
    owner = owner_name(name, origin)
    rdtype = record_type(type)
    if rdtype == dns.rdatatype.SOA:
        raise ApiError(409, "conflict", "the SOA cannot be deleted; delete the zone instead")
    files = ctx.files
    async with files.writing():
        zf = files.zone_file(origin)
        zdata = await off_loop(files.read_zone, zf)
        old = find_rrset(zdata, owner, rdtype)
        if old is None:
            raise ApiError(404, "not_found",
                           f"{owner} {dns.rdatatype.to_text(rdtype)} does not exist")
        before = to_model(owner, old).model_dump()
        check_if_match(if_match, etag_of(before))
        zdata.delete_rdataset(owner, rdtype)
        await _write_zone(ctx, zf, zdata, partial(
            ctx.audit, who, "rrset.delete", f"rrset:{owner}/{before['type']}", before, None))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
