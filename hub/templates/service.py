"""Templates: `{variable}` placeholders, approval by an ancestor, rendering for a send.

A tenant's template is pending until a tenant above it approves or rejects it; the root has no
one above, so its templates are approved when created. A tenant may send its own approved
templates and its ancestors' (a province writes the notice, its counties send it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import asyncpg
import msgspec

from hub.errors import Conflict, Forbidden, NotFound
from hub.oplog import service as oplog
from hub.templates import repository as sql
from hub.templates.schemas import CreateTemplate, Review, Template
from tenants.repository import TenantRow
from tenants.service import Principal

PLACEHOLDER = re.compile(r"\{(\w{1,40})\}")

# The longest value a template's variable may carry and still be a variable: carriers cap a
# notice template's variable near this (Alibaba Cloud: 35 characters, no links), so that an
# approved template cannot carry a text of its own. A template send whose values say more is
# free text to the review rules (hub.reviews).
VARIABLE_MAX = 35
_LINK = re.compile(r"https?://|www\.", re.IGNORECASE)


def carries_free_text(values: Iterable[str]) -> bool:
    """Whether values filled into an approved template say more than a variable does: over
    VARIABLE_MAX characters, or a link."""
    return any(len(v) > VARIABLE_MAX or _LINK.search(v) for v in values)


def variables(body: str) -> list[str]:
    """The placeholders of a body, each once, in order of first appearance."""
    return list(dict.fromkeys(PLACEHOLDER.findall(body)))


def _template(record: asyncpg.Record | None) -> Template | None:
    return None if record is None else msgspec.convert(dict(record.items()), Template)


async def create(
    conn: asyncpg.Connection, who: Principal, tenant: TenantRow, data: CreateTemplate
) -> Template:
    """`who` proposes a template for `tenant` (its own); logged as `template.create`."""
    status = "approved" if tenant.parent_code is None else "pending"
    created = _template(
        await conn.fetchrow(
            sql.INSERT, tenant.id, data.name, data.body, variables(data.body), status
        )
    )
    if created is None:
        raise Conflict(f"{tenant.code} already has a template named {data.name!r}")
    await oplog.record(
        conn,
        who,
        "template.create",
        tenant_id=tenant.id,
        object=f"template:{created.id}",
        after={"name": created.name, "body": created.body, "status": created.status},
    )
    return created


async def get(conn: asyncpg.Connection, who: Principal, template_id: int) -> Template:
    found = _template(await conn.fetchrow(sql.IN_SUBTREE, template_id, who.tenant_path))
    if found is None:
        raise NotFound("template not found")
    return found


async def list_templates(
    conn: asyncpg.Connection, tenant: TenantRow, subtree: bool, status: str | None
) -> list[Template]:
    records = await conn.fetch(sql.LIST, tenant.path, subtree, status)
    return [msgspec.convert(dict(r.items()), Template) for r in records]


async def pending_for(conn: asyncpg.Connection, who: Principal) -> list[Template]:
    """The pending templates the caller may review (its subtree's, not its own), oldest first."""
    records = await conn.fetch(sql.PENDING_BELOW, who.tenant_path)
    return [msgspec.convert(dict(r.items()), Template) for r in records]


async def review(
    conn: asyncpg.Connection, who: Principal, template_id: int, data: Review
) -> Template:
    template = await get(conn, who, template_id)
    if template.tenant == who.tenant_code:
        raise Forbidden("a tenant cannot review its own template; a tenant above it does")
    status = "approved" if data.decision == "approve" else "rejected"
    tenant_id = await conn.fetchval(sql.REVIEW, template_id, status, who.tenant_id, data.note)
    if tenant_id is None:
        raise Conflict(f"template {template_id} was already {template.status}")
    await oplog.record(
        conn,
        who,
        f"template.{data.decision}",
        tenant_id=tenant_id,
        object=f"template:{template_id}",
        before={"status": template.status},
        after={"status": status},
        detail={"name": template.name, "note": data.note},
    )
    return await get(conn, who, template_id)


async def sendable(conn: asyncpg.Connection, chain_paths: list[str], template_id: int) -> Template:
    """An approved template of the tenant whose chain is `chain_paths`, or of an ancestor."""
    template = _template(await conn.fetchrow(sql.USABLE, template_id, chain_paths))
    if template is None:
        raise NotFound("template not found")
    if template.status != "approved":
        # The request is fine; the template's state is not (yet): a conflict, not bad input.
        raise Conflict(
            f"template {template_id} is {template.status}; only approved templates can be sent",
            template=template_id,
            status=template.status,
        )
    return template


async def usable(conn: asyncpg.Connection, chain_paths: list[str]) -> list[Template]:
    """Every template `sendable` would accept for the tenant of `chain_paths`."""
    return [
        msgspec.convert(dict(r.items()), Template)
        for r in await conn.fetch(sql.USABLE_LIST, chain_paths)
    ]


def fill(body: str, values: dict[str, str]) -> str:
    """`body` with each placeholder that `values` names replaced; the others left as they are."""
    return PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), body)


async def render(
    conn: asyncpg.Connection,
    chain_paths: list[str],
    template_id: int,
    values: dict[str, str],
) -> str:
    """The body of an approved template usable by the tenant of `chain_paths`, filled in with
    `values`. A variable they do not give stays a placeholder: each recipient's roster entry
    fills it (hub.messages.personal), or the send says which is missing."""
    return fill((await sendable(conn, chain_paths, template_id)).body, values)
