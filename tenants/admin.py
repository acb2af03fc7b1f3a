"""Tenancy's changes as the API and the console make them, each with its operation-log entry
in the same transaction: units (create, rename, suspend, resume) and API keys (create,
revoke). The routes (tenants.controllers) and the console's pages (hub.dashboard.admin) call
these, so both go one path under one set of rules. The log and the signature desk are ports
the app provides (`oplog`, `signature_desk`): `tenants` never imports `hub`.
"""

from __future__ import annotations

import asyncpg

from tenants import service
from tenants.oplog import OperationLog
from tenants.repository import TenantRow
from tenants.schemas import CreateChild, CreateKey, NewApiKey, UpdateTenant
from tenants.service import Principal
from tenants.signatures import SignatureDesk


async def create_unit(
    conn: asyncpg.Connection,
    who: Principal,
    code: str,
    data: CreateChild,
    max_units: int,
    desk: SignatureDesk,
    log: OperationLog,
) -> TenantRow:
    """A unit under `code` (the caller's subtree, else 404); its signature proposed."""
    parent = await service.get_visible(conn, who, code)
    child = await service.create_child(conn, parent, data, max_units)
    created = {"code": child.code, "name": child.name}
    await log.record(
        conn,
        who,
        "tenant.create",
        tenant_id=parent.id,
        object=f"tenant:{child.code}",
        after=created,
    )
    return await desk.propose(conn, who, child, service.child_signature(data))


async def update(
    conn: asyncpg.Connection,
    who: Principal,
    code: str,
    data: UpdateTenant,
    desk: SignatureDesk,
    log: OperationLog,
) -> TenantRow:
    """Rename `code`, suspend or resume it (a tenant above only), propose its signature."""
    before = await service.get_visible(conn, who, code)
    tenant = await service.update_tenant(conn, who, before, data)
    if data.status is not None and data.status != before.status:
        action = "tenant.suspend" if data.status == "suspended" else "tenant.resume"
        await log.record(conn, who, action, **service.change(before, tenant, "status"))
    if data.name is not None and data.name != before.name:
        await log.record(conn, who, "tenant.rename", **service.change(before, tenant, "name"))
    if data.signature is not None:
        tenant = await desk.propose(conn, who, tenant, data.signature)
    return tenant


async def create_key(
    conn: asyncpg.Connection, who: Principal, code: str, data: CreateKey, log: OperationLog
) -> NewApiKey:
    """A key for `code` (the caller's subtree), never with a scope the caller lacks; the
    secret is in the answer only (the log holds its name and scopes)."""
    tenant = await service.get_visible(conn, who, code)
    new = await service.create_key(conn, tenant, frozenset(data.scopes), data.name, created_by=who)
    await log.record(conn, who, **service.key_logged(tenant, new, data.name))
    return new


async def revoke_key(
    conn: asyncpg.Connection, who: Principal, prefix: str, log: OperationLog
) -> None:
    """Revoke a key of the caller's subtree (404 otherwise)."""
    tenant_id = await service.revoke_key(conn, who, prefix)
    await log.record(conn, who, "key.revoke", tenant_id=tenant_id, object=f"key:{prefix}")
