"""Routes for credentials and accountability: tokens (admin), the audit log, whoami."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from shadowdns.api.auth import new_token
from shadowdns.api.context import Admin, Ctx, Operator, Reader
from shadowdns.api.errors import RESPONSES_READ, RESPONSES_WRITE, ApiError
from shadowdns.api.models import AuditOut, TokenCreate, TokenCreated, TokenOut, WhoAmI
from shadowdns.store import ApiToken

router = APIRouter(prefix="/api/v1")


def token_out(row: ApiToken) -> TokenOut:
    return TokenOut(id=row.id, name=row.name, role=row.role, created_at=row.created_at,
                    expires_at=row.expires_at)


def _json(text: str | None) -> object:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


@router.get("/whoami", response_model=WhoAmI, responses=RESPONSES_READ, tags=["tokens"],
            summary="The token this request was made with")
async def whoami(who: Reader) -> WhoAmI:
    return WhoAmI(token_id=who.token_id, name=who.name, role=who.role)


@router.get("/tokens", response_model=list[TokenOut], responses=RESPONSES_READ,
            tags=["tokens"], summary="List tokens (admin; secrets are never shown)")
async def list_tokens(ctx: Ctx, who: Admin) -> list[TokenOut]:
    return [token_out(t) for t in await ctx.io(ctx.service.store.list_tokens)]


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated,
             responses=RESPONSES_WRITE, tags=["tokens"],
             summary="Create a token (admin); the secret is in this answer only")
async def create_token(body: TokenCreate, ctx: Ctx, who: Admin) -> TokenCreated:
    secret, row = new_token(body.role, body.name, expires_in=body.expires_in)
    out = token_out(row)
    await ctx.audit(who, "token.create", f"token:{row.id}", None, out.model_dump())
    await ctx.io(ctx.service.store.add_token, row)
    return TokenCreated(**out.model_dump(), token=secret)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=RESPONSES_WRITE, tags=["tokens"], summary="Revoke a token (admin)")
async def delete_token(token_id: str, ctx: Ctx, who: Admin) -> Response:
    row = await ctx.io(ctx.service.store.get_token, token_id)
    if row is None:
        raise ApiError(404, "not_found", f"token {token_id} does not exist")
    await ctx.audit(who, "token.delete", f"token:{token_id}", token_out(row).model_dump(), None)
    await ctx.io(ctx.service.store.delete_token, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/audit", response_model=list[AuditOut], responses=RESPONSES_READ, tags=["audit"],
            summary="The audit log of changes made through the API, oldest first (operator)")
async def audit(ctx: Ctx, who: Operator, since: float | None = None,
                limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> list[AuditOut]:
    entries = await ctx.io(ctx.service.store.list_audit, since, limit)
    return [AuditOut(ts=e.ts, token_id=e.token_id, action=e.action, object=e.object,
                     before=_json(e.before_json), after=_json(e.after_json)) for e in entries]
