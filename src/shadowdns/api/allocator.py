"""Routes for `allocator.yaml`: the control loop's settings, its calendar events and pins.

The document is the running settings in the file's shape (`AllocatorSettings.to_config`),
with an ETag and what the file on disk holds now. A change is validated by the file's own
validator (`AllocatorSettings.from_mapping`: 422 naming every field, `body.<key>`; a new pin
or event must name a served DI, a resource of its policy and one of its locations), refuses a
hook command it does not already have unless the server runs with `--allow-commands` (403,
``body.hooks.<name>.command``: hooks run programs), rewrites `allocator.yaml` atomically and
reloads through `ConfigFiles.apply`, so the running allocator takes it at once and the
audit-or-undo rule of every other write holds. Events and pins are sub-resources with ids
derived from their content (`DELETE /allocator/events/{id}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, Body, Header, Response, status

from shadowdns.allocator.settings import SETTINGS_FILE, AllocatorSettings, unknown_references
from shadowdns.api.config_files import Change, check_if_match, etag_of
from shadowdns.api.context import Ctx, Operator, Reader
from shadowdns.api.errors import (
    RESPONSES_READ,
    RESPONSES_WRITE,
    ApiError,
    ProblemItem,
    problem_item,
    problems_from_config,
)
from shadowdns.api.models import AllocatorDocument, AllocatorFile, AllocatorItem
from shadowdns.errors import ConfigError, Problem
from shadowdns.health.privilege import COMMANDS_REFUSED, new_hook_commands

router = APIRouter(prefix="/api/v1", tags=["allocator"])
IfMatch = Annotated[str | None, Header(description="ETag the change is based on")]
Section = Literal["events", "pins"]
SECTIONS: tuple[Section, ...] = ("events", "pins")
HEADER = "# managed by the shadowdns API: edits through the API rewrite this file\n"


def _path(ctx: Ctx) -> Path:
    return ctx.files.zones_dir / SETTINGS_FILE


def _running(ctx: Ctx) -> AllocatorSettings:
    return ctx.service.loaded.allocator


def _file_state(ctx: Ctx, running: AllocatorSettings) -> AllocatorFile:
    path = _path(ctx)
    if not path.exists():
        return AllocatorFile(path=SETTINGS_FILE,
                             state="applied" if running == AllocatorSettings() else "absent")
    try:
        on_disk = AllocatorSettings.load(path.parent)
    except ConfigError as exc:
        return AllocatorFile(path=SETTINGS_FILE, state="invalid",
                             problems=[str(p) for p in exc.problems])
    return AllocatorFile(path=SETTINGS_FILE,
                         state="applied" if on_disk == running else "changed")


def _document(ctx: Ctx, response: Response) -> AllocatorDocument:
    running = _running(ctx)
    config = running.to_config()
    response.headers["ETag"] = etag_of(config)
    return AllocatorDocument(allocator=config, file=_file_state(ctx, running))


def _item_id(config: Mapping[str, Any]) -> str:
    return etag_of(dict(config)).strip('"')[:12]


def _validate(data: Mapping[str, Any], strip: str = "allocator") -> AllocatorSettings:
    """The settings `data` says, or 422 with every problem (paths under `body.`)."""
    try:
        return AllocatorSettings.from_mapping(dict(data), "<api>")
    except ConfigError as exc:
        problems = problems_from_config(exc, prefix="body", strip=strip)
        raise ApiError(422, "invalid", f"{len(problems)} problem(s) in the allocator settings",
                       problems) from None


def _refuse_new_commands(ctx: Ctx, old: AllocatorSettings, new: AllocatorSettings) -> None:
    """403 for a hook command the running settings do not have (see the module docstring)."""
    if ctx.service.config.allow_commands:
        return
    added = new_hook_commands(old, new)
    if added:
        problems = [problem_item(Problem("<api>", None, f"hooks.{name}.command: "
                                         f"{COMMANDS_REFUSED}")) for name in added]
        raise ApiError(403, "commands_not_allowed",
                       f"{len(added)} hook command(s) refused: {COMMANDS_REFUSED}", problems)


async def _write(ctx: Ctx, who: Operator, action: str, obj: str,
                 settings: AllocatorSettings, strip: str = "allocator") -> AllocatorSettings:
    """Write `settings` to allocator.yaml, reload and audit (caller holds the lock)."""
    before = _running(ctx)
    unknown = unknown_references(settings, ctx.service.loaded.policies.values(), "<api>",
                                 known=before)
    if unknown:
        problems = [problem_item(p, "body", strip) for p in unknown]
        raise ApiError(422, "invalid", f"{len(problems)} pin(s) or event(s) name what no "
                       "served policy has", problems)
    _refuse_new_commands(ctx, before, settings)
    body = settings.to_config(defaults=False)
    text = HEADER + yaml.safe_dump({"allocator": body} if body else {"allocator": None},
                                   sort_keys=False, default_flow_style=False,
                                   allow_unicode=True)
    await ctx.files.apply([Change(_path(ctx), text)], audit=partial(
        ctx.audit, who, action, obj, before.to_config(defaults=False), body))
    return _running(ctx)


@router.get("/allocator", response_model=AllocatorDocument, responses=RESPONSES_READ,
            summary="The allocator's running settings (allocator.yaml), with their ETag")
async def get_allocator(ctx: Ctx, who: Reader, response: Response) -> AllocatorDocument:
    return _document(ctx, response)


@router.put("/allocator", response_model=AllocatorDocument, responses=RESPONSES_WRITE,
            summary="Replace allocator.yaml; the running allocator takes it at once")
async def put_allocator(body: Annotated[dict[str, Any], Body()], ctx: Ctx, who: Operator,
                        response: Response, if_match: IfMatch = None) -> AllocatorDocument:
    async with ctx.files.writing():
        check_if_match(if_match, etag_of(_running(ctx).to_config()))
        await _write(ctx, who, "allocator.replace", "allocator", _validate(body))
        return _document(ctx, response)


def _register(section: Section) -> None:
    one = section[:-1]

    def items(settings: AllocatorSettings) -> list[dict[str, Any]]:
        return [entry.to_config() for entry in getattr(settings, section)]

    async def list_all(ctx: Ctx, who: Reader) -> list[AllocatorItem]:
        return [AllocatorItem(id=_item_id(c), config=c) for c in items(_running(ctx))]

    async def add(body: Annotated[dict[str, Any], Body()], ctx: Ctx,
                  who: Operator) -> AllocatorItem:
        async with ctx.files.writing():
            data = _running(ctx).to_config(defaults=False)
            entries = items(_running(ctx))
            data[section] = [*entries, body]
            settings = _validate(data, strip=f"allocator.{section}[{len(entries)}]")
            config = getattr(settings, section)[-1].to_config()
            if config in entries:
                raise ApiError(409, "conflict", f"this {one} exists already",
                               [ProblemItem(path="body", message=f"{one} {_item_id(config)}")])
            await _write(ctx, who, f"allocator.{one}.create",
                         f"allocator.{one}:{_item_id(config)}", settings,
                         strip=f"allocator.{section}[{len(entries)}]")
        return AllocatorItem(id=_item_id(config), config=config)

    async def remove(item_id: str, ctx: Ctx, who: Operator) -> Response:
        async with ctx.files.writing():
            entries = items(_running(ctx))
            kept = [c for c in entries if _item_id(c) != item_id]
            if len(kept) == len(entries):
                raise ApiError(404, "not_found", f"no {one} {item_id!r} in allocator.yaml")
            data = _running(ctx).to_config(defaults=False)
            data[section] = kept
            await _write(ctx, who, f"allocator.{one}.delete", f"allocator.{one}:{item_id}",
                         _validate(data))
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    router.add_api_route(f"/allocator/{section}", list_all, methods=["GET"],
                         response_model=list[AllocatorItem], responses=RESPONSES_READ,
                         name=f"list_allocator_{section}",
                         summary=f"The allocator's {section} (allocator.yaml)")
    router.add_api_route(f"/allocator/{section}", add, methods=["POST"],
                         status_code=status.HTTP_201_CREATED, response_model=AllocatorItem,
                         responses=RESPONSES_WRITE, name=f"add_allocator_{one}",
                         summary=f"Add a {one}; the running allocator plans with it at once")
    router.add_api_route(f"/allocator/{section}/{{item_id}}", remove, methods=["DELETE"],
                         status_code=status.HTTP_204_NO_CONTENT, responses=RESPONSES_WRITE,
                         name=f"delete_allocator_{one}", summary=f"Remove a {one}")


for _section in SECTIONS:
    _register(_section)
