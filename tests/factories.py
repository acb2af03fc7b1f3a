"""Plain factory functions for test data (no framework)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import asyncpg

from hub import calendar
from hub.quota import service as quota
from hub.signatures import service as signatures
from tenants import divisions, service
from tenants.divisions import Division
from tenants.repository import TenantRow
from tenants.schemas import CreateChild
from tenants.scopes import ALL_SCOPES, Scope

LEVEL_BY_DEPTH = {1: "province", 2: "prefecture", 3: "county"}


async def make_tenant(
    conn: asyncpg.Connection, code: str, name: str | None = None, parent: str | None = None
) -> TenantRow:
    """A tenant under `parent` (default: the root), its name its approved signature: a 6-digit
    code is a division, inserted and levelled by depth as an import would; a longer one a unit,
    created as the API would, its signature proposed by the operator (so approved at once)."""
    root = await service.ensure_root(conn)
    parent_row = await service.get_by_code(conn, parent) if parent else root
    assert parent_row is not None, f"no parent {parent}"
    name = name or code
    if len(code) == 6:
        depth = parent_row.depth + 1
        division = Division(
            code=code,
            name=name,
            level=LEVEL_BY_DEPTH[depth],
            parent_code=parent_row.code,
            depth=depth,
            signature=service.default_signature(name),
        )
        assert await divisions.insert_divisions(conn, [division]) == {code}
    else:
        data = CreateChild(code=code, name=name)
        row = await service.create_child(conn, parent_row, data, max_units=999_999)
        await signatures.propose(conn, None, row, service.child_signature(data))
    fresh = await service.get_by_code(conn, code)
    assert fresh is not None
    return fresh


async def make_key(
    conn: asyncpg.Connection, code: str, scopes: frozenset[Scope] = ALL_SCOPES
) -> str:
    tenant = await service.get_by_code(conn, code)
    assert tenant is not None
    return (await service.create_key(conn, tenant, scopes, name="test")).key


async def grant(
    conn: asyncpg.Connection,
    limits: dict[str, int],
    period: date | None = None,
    policy: str | None = None,
) -> None:
    """Set month limits root first: {code: limit} (the current month unless `period`)."""
    for code, limit in limits.items():
        tenant = await service.get_by_code(conn, code)
        assert tenant is not None, f"no tenant {code}"
        await quota.set_limit(
            conn, tenant, period or calendar.current_period(), "test", limit=limit, policy=policy
        )


async def grant_ahead(conn: asyncpg.Connection, limits: dict[str, int]) -> None:
    """`grant` for this month and for the month a day from now: a send scheduled hours ahead
    may fall in the next month (at 23:30 on the 31st, say)."""
    now = calendar.now()
    for month in sorted({calendar.period_of(now), calendar.period_of(now + timedelta(days=1))}):
        await grant(conn, limits, month)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def asgi_scope(
    method: str, path: str, key: str, headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    """The ASGI scope of an HTTP/1.1 request with `key`, for a test that plays the client's part
    in the app's receive and send itself (a client that stalls, trickles or goes away)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"hub.test"),
            (b"authorization", f"Bearer {key}".encode()),
            *(headers or []),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("hub.test", 80),
        "state": {},
    }


async def make_small_tree(conn: asyncpg.Connection) -> None:
    """root ─┬ 510000 四川省 ─┬ 510100 成都市 ─┬ 510104 锦江区 ── 510104001 春熙路街道
    │               │                └ 510105 青羊区
    │               └ 510300 自贡市
    └ 520000 贵州省
    """
    await make_tenant(conn, "510000", "四川省")
    await make_tenant(conn, "510100", "成都市", parent="510000")
    await make_tenant(conn, "510104", "锦江区", parent="510100")
    await make_tenant(conn, "510105", "青羊区", parent="510100")
    await make_tenant(conn, "510104001", "春熙路街道", parent="510104")
    await make_tenant(conn, "510300", "自贡市", parent="510000")
    await make_tenant(conn, "520000", "贵州省")


async def hold_references(conn: asyncpg.Connection, *ids: int) -> None:
    """What recording `sent` writes beside a message's reference (`message_references`, which
    receipts look it up in), for a test that sets `messages.reference` itself."""
    await conn.execute(
        "INSERT INTO message_references (message_id, gateway, reference)"
        " SELECT id, gateway, reference FROM messages"
        " WHERE id = ANY($1::bigint[]) AND reference IS NOT NULL"
        " ON CONFLICT (message_id) DO UPDATE"
        " SET gateway = EXCLUDED.gateway, reference = EXCLUDED.reference",
        list(ids),
    )
