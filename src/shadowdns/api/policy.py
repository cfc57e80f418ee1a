"""Routes for a zone's policy: DIs, resources (with health checks and overrides), locations.

Objects travel in the policy file's own shape. A change edits the policy as plain data,
validates the whole result with `policy_from_mapping` (422 naming every bad field: inside
the body as ``body.<field>``, elsewhere in the policy as ``policy.<path>``), refuses a new
command health check (403, ``body.check.type``; see `health.privilege`), rewrites
`<zone>.policy.yaml` atomically and reloads. A health override (up/down/obey) is the
resource's `override` key, so it survives restarts like any other setting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Any, Literal

import dns.exception
import dns.name
from fastapi import APIRouter, Body, Header, Response, status

from shadowdns.api.config_files import Change, ZoneFile, check_if_match, etag_of, parse_origin
from shadowdns.api.context import Admin, Ctx, Operator, Reader
from shadowdns.api.errors import RESPONSES_READ, RESPONSES_WRITE, ApiError, ProblemItem
from shadowdns.api.models import OverrideBody, PolicyDocument, PolicyObject
from shadowdns.offloop import off_loop
from shadowdns.zones.policy_file import entry_to_mapping, policy_to_mapping

router = APIRouter(prefix="/api/v1", tags=["policy"])
IfMatch = Annotated[str | None, Header(description="ETag the change is based on")]
Kind = Literal["dis", "resources", "locations"]
KINDS: tuple[Kind, ...] = ("dis", "resources", "locations")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_SINGULAR = {"dis": "di", "resources": "resource", "locations": "location"}


def policy_path(kind: str, key: str) -> str:
    """The path the policy validator uses for this object (see zones.policy_file)."""
    part = key if _ID.fullmatch(key) and "." not in key else json.dumps(key)
    return f"{kind}.{part}" if not part.startswith('"') else f"{kind}[{part}]"


def object_key(kind: Kind, name: str, origin: dns.name.Name) -> str:
    """The key of an object in its section: DIs relative to the origin, others as given."""
    if kind != "dis":
        if not _ID.fullmatch(name):
            raise ApiError(404, "not_found", f"{_SINGULAR[kind]} {name!r} does not exist")
        return name
    try:
        absolute = dns.name.from_text(name, origin)
    except dns.exception.DNSException as exc:
        raise ApiError(422, "invalid", f"{name!r} is not a DNS name",
                       [ProblemItem(path="path.name", message=str(exc))]) from None
    if not absolute.is_subdomain(origin):
        raise ApiError(422, "invalid", f"{absolute} is outside the zone {origin}",
                       [ProblemItem(path="path.name", message="outside the zone")])
    return str(absolute.relativize(origin).to_text())


def display_name(kind: Kind, key: str, origin: dns.name.Name) -> str:
    if kind == "dis":
        return str(dns.name.from_text(key, origin).to_text())
    return key


async def _objects(ctx: Ctx, zf: ZoneFile, kind: Kind) -> list[PolicyObject]:
    mapping = await off_loop(ctx.files.policy_mapping, zf) or {}
    section: dict[str, Any] = mapping.get(kind) or {}
    return [PolicyObject(zone=zf.origin.to_text(), name=display_name(kind, key, zf.origin),
                         config=value) for key, value in section.items()]


Audit = Callable[[dict[str, Any] | None, dict[str, Any] | None], Awaitable[None]]


async def _change_object(ctx: Ctx, zf: ZoneFile, kind: Kind, key: str,
                         value: dict[str, Any] | None, if_match: str | None, audit: Audit,
                         require_existing: bool = False,
                         ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Set (or with None delete) one object; returns (before, after). `audit(before, after)`
    records it before it is final (see `ConfigFiles.apply`). Caller holds the lock."""
    files = ctx.files
    mapping = await off_loop(files.policy_mapping, zf)
    data: dict[str, Any] = mapping if mapping is not None else {}
    section = data.get(kind) or {}
    had_section = bool(section)
    before = section.get(key)
    if before is None and require_existing:
        raise ApiError(404, "not_found", f"{_SINGULAR[kind]} {key} does not exist in {zf.origin}")
    check_if_match(if_match, None if before is None else etag_of(before))
    if value is None:
        section.pop(key, None)
    else:
        section[key] = value
    data[kind] = section
    if kind == "locations" and value is not None and "regions" not in data:
        data["regions"] = {"default": key}  # the first location of a new policy

    def validated() -> tuple[Change, dict[str, Any] | None]:
        after: dict[str, Any] | None = None
        if value is not None:
            strip: str | None = policy_path(kind, key)
            checked = files.validate_policy(zf.origin, data, strip=strip)
            change = files.policy_change(zf, checked, strip=strip)
            # what a read of the file will show for it
            after = entry_to_mapping(checked.policy, kind, key)
        else:
            checked = files.validate_policy(zf.origin, data, prefix="policy")
            change = files.policy_change(zf, checked, prefix="policy")
        # The other entries read back as they were (`policy_to_mapping` is a fixed point),
        # in the same order; a section made or emptied, or a location (which may add
        # regions), changes more than the entry, and is left to a whole read.
        if kind != "locations" and had_section and section:
            edited = dict(section)
            if after is not None:
                edited[key] = after
            files.foresee_mapping(zf, change, {**data, kind: edited})
        return change, after

    # a big policy's check and text: seconds of CPU
    change, after = await off_loop(validated)

    async def record() -> None:
        await audit(before, after)

    await files.apply([change], audit=record)
    return before, after


def _register(kind: Kind) -> None:
    one = _SINGULAR[kind]

    async def list_all(ctx: Ctx, who: Reader) -> list[PolicyObject]:
        out: list[PolicyObject] = []
        for zf in ctx.files.zone_files():
            out.extend(await _objects(ctx, zf, kind))
        return out

    async def list_zone(zone: str, ctx: Ctx, who: Reader) -> list[PolicyObject]:
        return await _objects(ctx, ctx.files.zone_file(parse_origin(zone)), kind)

    async def get_one(zone: str, name: str, ctx: Ctx, who: Reader,
                      response: Response) -> PolicyObject:
        zf = ctx.files.zone_file(parse_origin(zone))
        key = object_key(kind, name, zf.origin)
        section = (await off_loop(ctx.files.policy_mapping, zf) or {}).get(kind) or {}
        if key not in section:
            raise ApiError(404, "not_found", f"{one} {name} does not exist in {zf.origin}")
        response.headers["ETag"] = etag_of(section[key])
        return PolicyObject(zone=zf.origin.to_text(),
                            name=display_name(kind, key, zf.origin), config=section[key])

    async def put_one(zone: str, name: str, ctx: Ctx, who: Operator, response: Response,
                      body: Annotated[dict[str, Any], Body()],
                      if_match: IfMatch = None) -> PolicyObject:
        files = ctx.files
        async with files.writing():
            zf = files.zone_file(parse_origin(zone))
            key = object_key(kind, name, zf.origin)
            shown = display_name(kind, key, zf.origin)

            async def audit(before: dict[str, Any] | None,
                            after: dict[str, Any] | None) -> None:
                await ctx.audit(who, f"{one}.{'create' if before is None else 'replace'}",
                                f"{one}:{zf.origin}/{shown}", before, after)

            before, after = await _change_object(ctx, zf, kind, key, body, if_match, audit)
        assert after is not None
        response.headers["ETag"] = etag_of(after)
        if before is None:
            response.status_code = status.HTTP_201_CREATED
        return PolicyObject(zone=zf.origin.to_text(), name=shown, config=after)

    async def delete_one(zone: str, name: str, ctx: Ctx, who: Operator,
                         if_match: IfMatch = None) -> Response:
        files = ctx.files
        async with files.writing():
            zf = files.zone_file(parse_origin(zone))
            key = object_key(kind, name, zf.origin)
            audit = partial(ctx.audit, who, f"{one}.delete",
                            f"{one}:{zf.origin}/{display_name(kind, key, zf.origin)}")
            await _change_object(ctx, zf, kind, key, None, if_match, audit,
                                 require_existing=True)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    router.add_api_route(f"/{kind}", list_all, methods=["GET"],
                         response_model=list[PolicyObject], responses=RESPONSES_READ,
                         name=f"list_all_{kind}", summary=f"List the {kind} of every zone")
    router.add_api_route(f"/zones/{{zone}}/{kind}", list_zone, methods=["GET"],
                         response_model=list[PolicyObject], responses=RESPONSES_READ,
                         name=f"list_{kind}", summary=f"List a zone's {kind}")
    router.add_api_route(f"/zones/{{zone}}/{kind}/{{name}}", get_one, methods=["GET"],
                         response_model=PolicyObject, responses=RESPONSES_READ,
                         name=f"get_{one}", summary=f"One {one}, with its ETag")
    router.add_api_route(f"/zones/{{zone}}/{kind}/{{name}}", put_one, methods=["PUT"],
                         response_model=PolicyObject,
                         responses={**RESPONSES_WRITE,
                                    201: {"model": PolicyObject, "description": "created"}},
                         name=f"put_{one}",
                         summary=f"Create or replace a {one} (policy file shape)")
    router.add_api_route(f"/zones/{{zone}}/{kind}/{{name}}", delete_one, methods=["DELETE"],
                         status_code=status.HTTP_204_NO_CONTENT, responses=RESPONSES_WRITE,
                         name=f"delete_{one}", summary=f"Delete a {one}")


for _kind in KINDS:
    _register(_kind)


@router.put("/zones/{zone}/resources/{name}/override", response_model=PolicyObject,
            responses=RESPONSES_WRITE, summary="Pin a resource up or down, or obey the probes")
async def set_override(zone: str, name: str, body: OverrideBody, ctx: Ctx, who: Operator,
                       response: Response, if_match: IfMatch = None) -> PolicyObject:
    files = ctx.files
    async with files.writing():
        zf = files.zone_file(parse_origin(zone))
        key = object_key("resources", name, zf.origin)
        section = (await off_loop(files.policy_mapping, zf) or {}).get("resources") or {}
        current = section.get(key)
        if current is None:
            raise ApiError(404, "not_found", f"resource {name} does not exist in {zf.origin}")
        value = dict(current)
        if body.override == "obey":
            value.pop("override", None)
        else:
            value["override"] = body.override

        async def audit(before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
            await ctx.audit(who, "resource.override", f"resource:{zf.origin}/{key}",
                            {"override": (before or {}).get("override", "obey")},
                            {"override": body.override})

        _, after = await _change_object(ctx, zf, "resources", key, value, if_match, audit)
    assert after is not None
    monitor = ctx.service.health
    if monitor is not None:  # tell the probes' state machine now
        await monitor.set_override(key, body.override)
    response.headers["ETag"] = etag_of(after)
    return PolicyObject(zone=zf.origin.to_text(), name=key, config=after)


@router.get("/zones/{zone}/policy", response_model=PolicyDocument, responses=RESPONSES_READ,
            summary="A zone's whole policy (null when it has none), with its ETag")
async def get_policy(zone: str, ctx: Ctx, who: Reader, response: Response) -> PolicyDocument:
    zf = ctx.files.zone_file(parse_origin(zone))
    mapping = await off_loop(ctx.files.policy_mapping, zf)
    response.headers["ETag"] = etag_of(mapping)
    return PolicyDocument(zone=zf.origin.to_text(), policy=mapping)


@router.put("/zones/{zone}/policy", response_model=PolicyDocument, responses=RESPONSES_WRITE,
            summary="Replace a zone's whole policy")
async def put_policy(zone: str, body: Annotated[dict[str, Any], Body()], ctx: Ctx,
                     who: Operator, response: Response,
                     if_match: IfMatch = None) -> PolicyDocument:
    files = ctx.files
    async with files.writing():
        zf = files.zone_file(parse_origin(zone))
        before = await off_loop(files.policy_mapping, zf)
        check_if_match(if_match, etag_of(before))

        def validated() -> tuple[Change, dict[str, Any]]:
            checked = files.validate_policy(zf.origin, body, strip="")
            # what a read of the file will show
            return files.policy_change(zf, checked, strip=""), policy_to_mapping(checked.policy)

        change, after = await off_loop(validated)

        async def audit() -> None:
            await ctx.audit(who, "policy.replace", f"policy:{zf.origin}", before, after)

        await files.apply([change], audit=audit)
    response.headers["ETag"] = etag_of(after)
    return PolicyDocument(zone=zf.origin.to_text(), policy=after)


@router.delete("/zones/{zone}/policy", status_code=status.HTTP_204_NO_CONTENT,
               responses=RESPONSES_WRITE,
               summary="Delete a zone's policy: its DIs become plain names (admin)")
async def delete_policy(zone: str, ctx: Ctx, who: Admin, if_match: IfMatch = None) -> Response:
    files = ctx.files
    async with files.writing():
        zf = files.zone_file(parse_origin(zone))
        before = await off_loop(files.policy_mapping, zf)
        if before is None:
            raise ApiError(404, "not_found", f"zone {zf.origin} has no policy")
        check_if_match(if_match, etag_of(before))
        await files.apply([Change(zf.policy_path, None)], audit=partial(
            ctx.audit, who, "policy.delete", f"policy:{zf.origin}", before, None))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
