"""Bearer tokens: how they are made, stored (hashed) and checked, and what each role may do.

A token is ``sdns_<id>_<secret>``: the id names it in the audit log and in `token list`,
the secret is 32 random bytes. The store keeps only the SHA-256 of the whole token (the
secret is long and random, so a slow hash adds nothing). Roles are ordered: a reader may
read, an operator may also change zones, policies, allocations and overrides, an admin may
also manage tokens and delete or replace whole zones.

A missing, malformed or unknown token is 401 (with ``WWW-Authenticate: Bearer``); a valid
token whose role is too low is 403. Both say why.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal, get_args

from shadowdns.api.errors import ApiError
from shadowdns.store import ApiToken

Role = Literal["reader", "operator", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
_RANK = {role: rank for rank, role in enumerate(ROLES)}
_TOKEN_RE = re.compile(r"sdns_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the token's id, name and role."""

    token_id: str
    name: str
    role: Role

    def allows(self, needed: Role) -> bool:
        return _RANK[self.role] >= _RANK[needed]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(role: Role, name: str = "", now: float | None = None,
              expires_in: float | None = None) -> tuple[str, ApiToken]:
    """A fresh secret and the row to store (which holds only its hash); with
    `expires_in` (seconds) the token is refused from then on."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if expires_in is not None and not expires_in > 0:
        raise ValueError("expiry must be a positive duration")
    token_id = secrets.token_hex(6)
    secret = f"sdns_{token_id}_{secrets.token_urlsafe(32)}"
    created = time.time() if now is None else now
    row = ApiToken(id=token_id, name=name or token_id, role=role, hash=hash_token(secret),
                   created_at=created,
                   expires_at=None if expires_in is None else created + expires_in)
    return secret, row


def parse_bearer(header: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header; 401 saying what is wrong."""
    if not header:
        raise unauthorized("no credentials: send 'Authorization: Bearer TOKEN' "
                           "(create one with 'shadowdns token create')")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise unauthorized("the Authorization header must be 'Bearer TOKEN'")
    token = value.strip()
    if not _TOKEN_RE.fullmatch(token):
        raise unauthorized("malformed token: expected sdns_<id>_<secret>")
    return token


def check_token(token: str, row: ApiToken | None, now: float | None = None) -> Principal:
    """The principal of a stored token row, or 401 if it is unknown, revoked or expired."""
    match = _TOKEN_RE.fullmatch(token)
    if row is None or match is None or match.group(1) != row.id \
            or not hmac.compare_digest(row.hash, hash_token(token)):
        raise unauthorized("unknown or revoked token")
    if row.expires_at is not None and row.expires_at <= (time.time() if now is None else now):
        raise unauthorized(f"token {row.id} expired; create a new one with "
                           "'shadowdns token create'")
    role = row.role if row.role in ROLES else "reader"
    return Principal(token_id=row.id, name=row.name, role=role)


def require(principal: Principal, needed: Role) -> None:
    if not principal.allows(needed):
        raise ApiError(403, "forbidden",
                       f"token {principal.token_id} has role {principal.role}; "
                       f"this needs {needed}")


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message,
                    headers={"WWW-Authenticate": 'Bearer realm="shadowdns"'})
