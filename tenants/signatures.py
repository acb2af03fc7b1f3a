"""Signatures as tenancy sees them: the approved one a tenant sends under, who answers for what a
key proposes, and the desk that takes proposals.

`tenants.signature` holds a tenant's approved signature (NULL until one is). Reviewing proposals
is hub's work (hub/signatures); tenancy's own routes that are given a signature (a unit created
with one, PATCH /v1/tenants/{code}) hand it to the desk the app provides as the dependency
`signature_desk`, so `tenants` never imports `hub`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import asyncpg
import msgspec

from tenants import repository as sql
from tenants.repository import TenantRow
from tenants.service import Principal


@runtime_checkable  # Litestar checks what it injects against the annotation
class SignatureDesk(Protocol):
    async def propose(
        self, conn: asyncpg.Connection, who: Principal | None, tenant: TenantRow, text: str
    ) -> TenantRow:
        """Record `text` as proposed by `who` (None: the operator) for `tenant`, which is
        `who`'s own tenant or one below it; returns the tenant as it now stands."""
        ...


async def set_approved(conn: asyncpg.Connection, tenant_id: int, text: str) -> None:
    """The tenant sends under `text` from now on (its sends already accepted keep theirs)."""
    await conn.execute(sql.SET_SIGNATURE, tenant_id, text)


async def answerable(conn: asyncpg.Connection, who: Principal) -> TenantRow:
    """The highest tenant that could have made `who`'s request: of the key's own tenant and the
    tenants whose keys created it, one after another, the highest (the operator aside: it is
    trusted, and the one approver left when no tenant is above the rest). Whoever created a
    key saw its secret, so a county that creates a key for its unit and proposes with it
    answers for that proposal itself. A signed-in person answers for their own tenant (nobody
    else saw their password)."""
    if who.key_id is None:
        record = await conn.fetchrow(sql.TENANT_BY_ID, who.tenant_id)
        assert record is not None, "a signed-in person's tenant exists"
        return msgspec.convert(dict(record.items()), TenantRow)
    record = await conn.fetchrow(sql.KEY_LINEAGE_TOP, who.key_id)
    assert record is not None, "an authenticated key exists"
    return msgspec.convert(dict(record.items()), TenantRow)
