"""Tenant tree and API key operations. Functions take the connection first and never commit."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from tenants import repository as sql
from tenants.errors import (
    Conflict,
    ExtensionsExhausted,
    Forbidden,
    Invalid,
    NotFound,
    Suspended,
    UnitsExhausted,
    tenant_not_found,
)
from tenants.keys import hash_secret, new_token, parse_token, secret_matches
from tenants.repository import ApiKeyRow, CredentialRow, TenantRow
from tenants.schemas import (
    ApiKeyInfo,
    CreateChild,
    NewApiKey,
    SignatureText,
    Tenant,
    TenantNode,
    TenantPage,
    UpdateTenant,
)
from tenants.scopes import Scope

ROOT_CODE = "000000"
ROOT_NAME = "组织工作短信平台"
ROOT_SIGNATURE = "组织工作短信平台"
# A key may hold a scope a later version retired; it is ignored, not an error.
_KNOWN_SCOPES = frozenset(s.value for s in Scope)
# A unit's code is its parent's followed by this many digits, and no code is longer than 12.
UNIT_DIGITS = 3
MAX_CODE_DIGITS = 12
# Codes of this many digits or fewer are GB/T 2260 divisions (and the root); longer ones units.
DIVISION_DIGITS = 6


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: an API key, or a signed-in person (hub.users), acting for its tenant
    over that tenant's subtree with `scopes` (a person's come from their roles:
    tenants.scopes.ROLE_SCOPES). Exactly one of key_id and user_id is set."""

    tenant_id: int
    tenant_code: str
    tenant_path: str
    scopes: frozenset[Scope]
    # The highest suspended tenant among the caller's own and those above it, if any: the
    # caller may then read but not act (see refuse_if_suspended).
    suspended_by: str | None = None
    key_id: int | None = None
    key_prefix: str | None = None
    user_id: int | None = None
    login: str | None = None
    # The dashboard session a person (or an operator key) is signed in with, if any.
    session_id: int | None = None
    # Where the request came from, as the server saw it (tenants.auth.client_address): the
    # operation log writes it beside `actor`.
    address: str | None = None

    @property
    def actor(self) -> str:
        """How logs and ledgers name who did something: `user:<login>` or `key:<prefix>`."""
        return f"user:{self.login}" if self.login is not None else f"key:{self.key_prefix}"


def refuse_if_suspended(who: Principal) -> None:
    """The one check every write makes (the `require` guard, the dashboard's forms): a tenant
    whose own status or an ancestor's is `suspended` may read but not send, create keys or
    units, or change quota — 403 naming the suspended tenant."""
    if who.suspended_by is not None:
        raise Suspended(
            f"tenant {who.suspended_by} is suspended: its subtree may read but not send, create "
            "keys or units, or change quota until a tenant above it resumes it",
            suspended=who.suspended_by,
        )


def ancestry_paths(path: str) -> list[str]:
    """The paths of a tenant and every ancestor, root first:
    '000000/510000/510100/' → ['000000/', '000000/510000/', '000000/510000/510100/']."""
    codes = path.rstrip("/").split("/")
    return ["/".join(codes[: i + 1]) + "/" for i in range(len(codes))]


def to_tenant(row: TenantRow) -> Tenant:
    return Tenant(
        code=row.code,
        name=row.name,
        level=row.level,
        parent_code=row.parent_code,
        depth=row.depth,
        status=row.status,
        signature=None if row.signature is None else f"【{row.signature}】",
        sms_extension=row.sms_extension,
        created_at=row.created_at,
    )


def change(before: TenantRow, after: TenantRow, field: str) -> dict[str, Any]:
    """What the operation log records of a change to one of a tenant's fields: the tenant, and
    the field as it was and as it became (`oplog.record(conn, who, action, **change(…))`)."""
    return {
        "tenant_id": after.id,
        "object": f"tenant:{after.code}",
        "before": {field: getattr(before, field)},
        "after": {field: getattr(after, field)},
    }


def to_key_info(row: ApiKeyRow) -> ApiKeyInfo:
    return ApiKeyInfo(
        prefix=row.prefix,
        tenant_code=row.tenant_code,
        name=row.name,
        scopes=sorted(row.scopes),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def _tenant_row(record: asyncpg.Record) -> TenantRow:
    return msgspec.convert(dict(record.items()), TenantRow)


def _key_row(record: asyncpg.Record) -> ApiKeyRow:
    return msgspec.convert(dict(record.items()), ApiKeyRow)


async def get_visible(conn: asyncpg.Connection, who: Principal, code: str) -> TenantRow:
    """The tenant `code` if it is the caller's own or in its subtree; otherwise 404."""
    record = await conn.fetchrow(sql.TENANT_IN_SUBTREE, code, who.tenant_path)
    if record is None:
        raise tenant_not_found()
    return _tenant_row(record)


async def own(conn: asyncpg.Connection, who: Principal) -> TenantRow:
    """The caller's own tenant."""
    return await get_visible(conn, who, who.tenant_code)


async def get_by_code(conn: asyncpg.Connection, code: str) -> TenantRow | None:
    """Any tenant by code, for operator tools that act outside any key's subtree."""
    record = await conn.fetchrow(sql.TENANT_BY_CODE, code)
    return None if record is None else _tenant_row(record)


async def get_by_id(conn: asyncpg.Connection, tenant_id: int) -> TenantRow | None:
    record = await conn.fetchrow(sql.TENANT_BY_ID, tenant_id)
    return None if record is None else _tenant_row(record)


async def list_children(
    conn: asyncpg.Connection, parent: TenantRow, after: str, limit: int
) -> TenantPage:
    records = await conn.fetch(sql.CHILDREN_PAGE, parent.id, after, limit + 1)
    rows = [_tenant_row(r) for r in records]
    more = len(rows) > limit
    rows = rows[:limit]
    return TenantPage(
        items=[to_tenant(r) for r in rows], next_after=rows[-1].code if more and rows else None
    )


async def subtree(conn: asyncpg.Connection, top: TenantRow, depth: int) -> TenantNode:
    """`top` and its descendants down to `depth` levels below it, as nested nodes.

    One query one level deeper than asked tells which of the deepest nodes have children.
    """
    records = await conn.fetch(sql.SUBTREE, top.path, top.depth + depth + 1)
    children: dict[str, list[TenantRow]] = {}
    for row in map(_tenant_row, records):
        if row.parent_code is not None and row.code != top.code:
            children.setdefault(row.parent_code, []).append(row)

    def node(row: TenantRow, remaining: int) -> TenantNode:
        below = children.get(row.code, [])
        shown = [node(c, remaining - 1) for c in below] if remaining > 0 else []
        return TenantNode(
            code=row.code,
            name=row.name,
            level=row.level,
            status=row.status,
            children=shown,
            truncated=bool(below) and remaining == 0,
        )

    return node(top, depth)


def default_signature(name: str) -> str:
    """A tenant's name is its signature unless it chooses one; it must be usable as one."""
    try:
        return msgspec.convert(name, SignatureText)
    except msgspec.ValidationError:
        raise Invalid(
            "the name cannot serve as the SMS signature (2 to 30 characters, no 【】, no "
            "invisible characters): give `signature`",
            fields=[{"key": "signature", "message": "required for this name", "source": "body"}],
        ) from None


def child_signature(data: CreateChild) -> str:
    """The signature a new child asks for: the one given, else its name."""
    return data.signature or default_signature(data.name)


def check_unit_code(parent: TenantRow, code: str) -> None:
    """A unit's code is its parent's code followed by three digits.

    So a tenant can only create codes inside its own space: never a 6-digit code GB/T 2260
    could assign, never one of another region's, and two tenants' spaces overlap only where
    one is above the other — a code a caller finds taken is held in the caller's own subtree.
    """
    room = len(parent.code) + UNIT_DIGITS
    if room > MAX_CODE_DIGITS:
        raise Invalid(
            f"no room for units below {parent.code}: a unit's code is its parent's followed by "
            f"{UNIT_DIGITS} digits, and codes have at most {MAX_CODE_DIGITS} digits",
            fields=[{"key": "code", "message": "no codes below this tenant", "source": "body"}],
        )
    if len(code) != room or not code.startswith(parent.code):
        raise Invalid(
            f"code must be {parent.code} followed by {UNIT_DIGITS} digits (e.g. {parent.code}001): "
            "a unit's code lies inside its parent's",
            fields=[
                {"key": "code", "message": f"expected {parent.code}NNN", "source": "body"},
            ],
        )


def division_path(tenant: TenantRow) -> str:
    """The path of the division (province, prefecture or county) `tenant` is, or lies in."""
    return _division_path(tenant.path)


def division_code(path: str) -> str:
    """The code of the division a tenant of this path is, or lies in (the root's for a path
    with none, which no tenant has)."""
    codes = _division_path(path).split("/")[:-1]
    return codes[-1] if codes else ROOT_CODE


def _division_path(path: str) -> str:
    return "".join(f"{code}/" for code in path.split("/")[:-1] if len(code) <= DIVISION_DIGITS)


async def create_child(
    conn: asyncpg.Connection, parent: TenantRow, data: CreateChild, max_units: int
) -> TenantRow:
    """A unit under `parent`, its code inside the parent's space (check_unit_code), created
    without an approved signature: the one it asks for (`child_signature`) is proposed for
    review (tenants.signatures).

    A refused creation consumes nothing: the code, the name and the division's room
    (`max_units` units below one division) are checked, under a lock on the division, before
    the INSERT draws the unit's SMS extension from its sequence (sequences never give numbers
    back). Every unit of a division is created under this lock, so two requests for one code
    cannot both pass the check, nor two for the last place.
    """
    check_unit_code(parent, data.code)
    child_signature(data)  # a name unfit for a signature is refused before anything is written
    division = division_path(parent)
    await conn.execute(sql.LOCK_TENANT_AT, division)
    if await conn.fetchval(sql.UNITS_BELOW, division) >= max_units:
        raise UnitsExhausted(
            f"the division {division.split('/')[-2]} already holds {max_units} units, the most "
            "one division may hold; remove unused ones or ask the hub's operator",
            max_units=max_units,
        )
    if await conn.fetchval(sql.CODE_TAKEN, data.code):
        raise _code_taken(data.code)
    try:
        async with conn.transaction():  # a savepoint: the caller's transaction stays usable
            record = await conn.fetchrow(sql.INSERT_CHILD, data.code, data.name, parent.id)
    except asyncpg.SequenceGeneratorLimitExceededError:
        raise extensions_exhausted() from None
    if record is None:  # taken meanwhile by something that does not take the lock
        raise _code_taken(data.code)
    return _tenant_row(record)


def _code_taken(code: str) -> Conflict:
    """The same answer wherever the holder sits: it repeats the caller's own input, nothing of
    the holder (codes in the caller's space are the caller's subtree's, see check_unit_code)."""
    return Conflict(f"tenant code {code} is already taken", code_taken=code)


def extensions_exhausted() -> ExtensionsExhausted:
    return ExtensionsExhausted(
        "every SMS extension (100000 to 999999) is in use: no more tenants can be created; "
        "ask the hub's operator"
    )


async def update_tenant(
    conn: asyncpg.Connection, who: Principal, tenant: TenantRow, data: UpdateTenant
) -> TenantRow:
    """A tenant may rename itself; only an ancestor changes its status. A signature given is
    not set here: it is a proposal (tenants.signatures), reviewed by a tenant above."""
    if data.status is not None and tenant.id == who.tenant_id:
        raise Forbidden("a tenant cannot change its own status; its parent can")
    record = await conn.fetchrow(sql.UPDATE_TENANT, tenant.id, data.name, data.status)
    assert record is not None
    return _tenant_row(record)


async def ensure_root(conn: asyncpg.Connection) -> TenantRow:
    """The hub operator's root tenant, created on first use."""
    await conn.execute(sql.INSERT_ROOT, ROOT_CODE, ROOT_NAME, ROOT_SIGNATURE)
    root = await get_by_code(conn, ROOT_CODE)
    assert root is not None
    return root


def key_logged(tenant: TenantRow, new: NewApiKey, name: str | None) -> dict[str, Any]:
    """What the operation log records of a new key (`key.create`): its name and scopes, never
    its secret: `await log.record(conn, who, **key_logged(tenant, new, name))`."""
    return {
        "action": "key.create",
        "tenant_id": tenant.id,
        "object": f"key:{new.info.prefix}",
        "after": {"name": name, "scopes": new.info.scopes},
    }


async def create_key(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    scopes: frozenset[Scope],
    name: str = "",
    created_by: Principal | None = None,
) -> NewApiKey:
    """A new key for `tenant`. A key can grant only scopes it holds itself."""
    if created_by is not None and not scopes <= created_by.scopes:
        missing = sorted(scopes - created_by.scopes)
        raise Forbidden(
            f"a key cannot grant scopes it does not hold: {', '.join(missing)}", scopes=missing
        )
    token = new_token()
    record = await conn.fetchrow(
        sql.INSERT_KEY,
        token.prefix,
        hash_secret(token.secret),
        tenant.id,
        name,
        sorted(scopes),
        created_by.key_id if created_by else None,
    )
    assert record is not None
    return NewApiKey(key=str(token), info=to_key_info(_key_row(record)))


async def list_keys(conn: asyncpg.Connection, tenant: TenantRow) -> list[ApiKeyInfo]:
    return [to_key_info(_key_row(r)) for r in await conn.fetch(sql.KEYS_OF_TENANT, tenant.id)]


async def revoke_key(conn: asyncpg.Connection, who: Principal, prefix: str) -> int:
    """Revoke a key of the caller's subtree (its own included). Revoking twice is harmless.
    Returns the id of the key's tenant."""
    tenant_id: int | None = await conn.fetchval(sql.REVOKE_KEY_IN_SUBTREE, prefix, who.tenant_path)
    if tenant_id is None:
        raise NotFound("API key not found")
    return tenant_id


class KeyCredential(msgspec.Struct, frozen=True):
    """A live key found by its prefix: who it acts as, and the hash its secret must match."""

    principal: Principal
    secret_sha256: bytes


async def credential(conn: asyncpg.Connection, prefix: str) -> KeyCredential | None:
    """The live key with this prefix (None when unknown or revoked).

    For sessions a key started (the dashboard's cookie): they name the key by its prefix and
    are bound to its secret's hash, and end as soon as the key is revoked. A suspended
    subtree's key still reads (Principal.suspended_by).
    """
    record = await conn.fetchrow(sql.CREDENTIAL_BY_PREFIX, prefix)
    if record is None:
        return None
    cred = msgspec.convert(dict(record.items()), CredentialRow)
    if cred.revoked:
        return None
    return KeyCredential(_principal(cred, prefix), cred.secret_sha256)


def _principal(cred: CredentialRow, prefix: str) -> Principal:
    return Principal(
        key_id=cred.key_id,
        key_prefix=prefix,
        tenant_id=cred.tenant_id,
        tenant_code=cred.tenant_code,
        tenant_path=cred.tenant_path,
        scopes=frozenset(Scope(s) for s in cred.scopes if s in _KNOWN_SCOPES),
        suspended_by=cred.suspended_by,
    )


async def authenticate(conn: asyncpg.Connection, raw_token: str) -> Principal | None:
    """The principal for a presented key, or None for a garbled, unknown or revoked one.

    A key of a suspended subtree authenticates: it may read, and its writes answer 403
    (refuse_if_suspended)."""
    token = parse_token(raw_token)
    if token is None:
        return None
    record = await conn.fetchrow(sql.CREDENTIAL_BY_PREFIX, token.prefix)
    if record is None:
        return None
    cred = msgspec.convert(dict(record.items()), CredentialRow)
    if not secret_matches(token.secret, cred.secret_sha256) or cred.revoked:
        return None
    if cred.stale_last_used:
        await conn.execute(sql.TOUCH_KEY, cred.key_id)
    return _principal(cred, token.prefix)
